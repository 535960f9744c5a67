"""The job runner: claim queued jobs, run the pipeline step, store its objects and queue their delivery.

The unit of work is one job id (:meth:`JobRunner.run_one`), so the same code
serves the worker threads here and a separate worker process later. Results
are committed only while the job is still ``RUNNING``: a job cancelled or
requeued in the meantime keeps its new state and its results are discarded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import DestinationSettings, Settings
from db.models import Delivery, Instance, Job, Output, Series, utcnow
from db.session import session_scope
from db.states import DeliveryState, JobState, OutputKind
from dicom_node import jobs, metrics
from dicom_node.outbox import complete_job
from dicom_node.output_files import remove_stale_files, write_output_file
from dicom_node.pipeline_step import JobContext, OutputObject, PipelineStep, PriorOutput, RoleSeries, StepOutcome
from inference.errors import InputError
from inference.result import SequenceRole

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10.0
FAILURE_REPORT_CHECKED = "failure_report_checked"


def _destination_kinds(destination: DestinationSettings, kinds: set[OutputKind], *, failure_only: bool) -> list[str]:
    # Which of the produced kinds a destination receives, by its options.
    if failure_only and not destination.send_failure_report:
        return []
    wanted = []
    for kind in sorted(kinds, key=lambda k: k.value):
        if kind is OutputKind.SECONDARY_CAPTURE and not destination.secondary_capture:
            continue
        if kind is OutputKind.FAILURE_SR and not destination.send_failure_report:
            continue
        wanted.append(kind.value)
    return wanted


class JobRunner:
    """Runs queued jobs through a pipeline step in worker threads.

    Parameters
    ----------
    settings : Settings
        Storage folders, destinations and the number of workers.
    session_factory : sessionmaker
        Sessions on the job database.
    step : PipelineStep
        The pipeline that turns a study into DICOM objects.
    workers : int, optional
        Number of worker threads; ``settings.inference.workers`` by default.
    poll_interval_s : float
        How long an idle worker waits before looking for queued jobs again.
    heartbeat_interval_s : float
        How often a running job's ``heartbeat_at`` is refreshed.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        step: PipelineStep,
        *,
        workers: int | None = None,
        poll_interval_s: float = 1.0,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._step = step
        self._workers = workers if workers is not None else settings.inference.workers
        if self._workers < 1:
            raise ValueError(f"workers must be at least 1, got {self._workers}; set inference.workers >= 1")
        self._poll_interval_s = poll_interval_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stop = threading.Event()
        self._report_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._name = f"{socket.gethostname()}:{os.getpid()}"

    # Threads

    def start(self) -> None:
        """Queue again the jobs a crash left running, then start the worker threads.

        Deliveries left in progress are the outbox's to reopen, at its own
        start, so starting the runner never disturbs a send in progress.
        """
        with session_scope(self._session_factory) as session:
            recovered = jobs.requeue_running_jobs(session)
        if recovered:
            logger.warning("queued %d interrupted job(s) again: %s", len(recovered), recovered)

        self._stop.clear()
        for index in range(self._workers):
            worker = f"{self._name}:{index}"
            thread = threading.Thread(target=self._loop, args=(worker,), name=f"otscc-runner-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("job runner started with %d worker(s)", self._workers)

    def stop(self, timeout_s: float | None = 60.0) -> None:
        """Stop taking jobs and wait up to ``timeout_s`` (None: no limit) for the running ones.

        A job still running after the timeout stays ``RUNNING`` in the
        database, and the next :meth:`start` queues it again. Its worker is a
        daemon thread, so it does not keep the process alive.
        """
        self._stop.set()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            thread.join(remaining)
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            logger.warning("job runner stopped with jobs still running in %s; they are recovered at next start", alive)
        self._threads = []
        logger.info("job runner stopped")

    def _loop(self, worker: str) -> None:
        while not self._stop.is_set():
            try:
                job_id = self.run_next(worker=worker)
            except Exception:  # noqa: BLE001 - the thread must survive a database outage
                logger.exception("worker %s could not claim a job; trying again in %s s", worker, self._poll_interval_s)
                job_id = None
            if job_id is None:
                self._report_assembly_failures()
                self._stop.wait(self._poll_interval_s)

    # Units of work

    def run_next(self, *, worker: str | None = None) -> int | None:
        """Claim the oldest queued job and run it; return its id, or None if none was queued."""
        worker = worker or f"{self._name}:direct"
        with session_scope(self._session_factory) as session:
            job = jobs.claim_next_queued(session, worker)
            job_id = None if job is None else job.id
        if job_id is not None:
            self._execute(job_id)
        return job_id

    def run_one(self, job_id: int, *, worker: str | None = None) -> JobState:
        """Claim the queued job ``job_id``, run it and return the state it ended in.

        Raises
        ------
        ValueError
            If the job does not exist or is not ``QUEUED``.
        """
        worker = worker or f"{self._name}:direct"
        with session_scope(self._session_factory) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise ValueError(f"job {job_id} not found; list jobs with 'otscc-node jobs'")
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(worker=worker)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not claimed:
                session.refresh(job)
                raise ValueError(f"job {job_id} is {job.state.value}, not queued; retry it first to run it again")
            session.refresh(job)
            jobs.transition(session, job, JobState.RUNNING, reason="picked up by worker", details={"worker": worker})

        self._execute(job_id)
        with session_scope(self._session_factory) as session:
            return session.get(Job, job_id).state

    def _execute(self, job_id: int) -> None:
        try:
            with session_scope(self._session_factory) as session:
                context = build_context(session, session.get(Job, job_id), self._settings)
            with self._heartbeat(job_id):
                outcome = self._step.run(context)
        except InputError as exc:
            outcome = StepOutcome(input_error=exc)
        except Exception as exc:  # noqa: BLE001 - any other error is the node's fault and ends the job FAILED
            if self._stop.is_set():
                # The node is stopping and may have ended the pipeline's
                # worker, so the job stays running and the next start queues it again.
                logger.warning("job %s: interrupted as the node stopped (%s); it is queued again at the next start", job_id, exc)
                return
            self._fail(job_id, exc)
            return

        try:
            self._finish(job_id, outcome)
        except Exception as exc:  # noqa: BLE001 - for example a full disk while writing outputs
            self._fail(job_id, exc)

    @contextmanager
    def _heartbeat(self, job_id: int) -> Iterator[None]:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._heartbeat_interval_s):
                try:
                    with session_scope(self._session_factory) as session:
                        session.execute(
                            update(Job)
                            .where(Job.id == job_id, Job.state == JobState.RUNNING)
                            .values(heartbeat_at=utcnow())
                            .execution_options(synchronize_session=False)
                        )
                except Exception:  # noqa: BLE001 - a missed heartbeat must not stop the job
                    logger.warning("job %s: heartbeat update failed", job_id, exc_info=True)

        thread = threading.Thread(target=beat, name=f"otscc-heartbeat-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _report_assembly_failures(self) -> None:
        try:
            self.report_assembly_failures()
        except Exception:  # noqa: BLE001 - the worker thread must survive; the next pass tries again
            logger.exception("failure reports for failed studies could not be made")

    def report_assembly_failures(self) -> list[int]:
        """Make and queue the failure SR of jobs that the study assembly failed before they ran.

        A study that misses a role or has a gap in a series fails in the
        completion scheduler, which runs no pipeline. This gives such a job
        the same short SR that a job failing inside the pipeline gets, for
        the destinations that want failure reports. Returns the job ids handled.
        """
        report = getattr(self._step, "report_failure", None)
        if report is None:
            return []
        with self._report_lock:
            with session_scope(self._session_factory) as session:
                pending = _unreported_assembly_failures(session)
            return [job_id for job_id in pending if self._report_one_failure(job_id, report)]

    def _report_one_failure(self, job_id: int, report: Callable[..., StepOutcome]) -> bool:
        with session_scope(self._session_factory) as session:
            job = session.get(Job, job_id)
            if job is None or job.state is not JobState.FAILED_INPUT:
                return False
            context = build_context(session, job, self._settings)
            reference = _first_instance_path(session, job, self._settings.storage.resolved_spool_dir)
            error = InputError(job.error_message or job.reason_code or "input failure", code=job.reason_code or "input_failure", hint=job.hint or "")

        try:
            outcome = report(context, error, reference_path=reference)
        except Exception as exc:  # noqa: BLE001 - recorded on the job; retrying the same input would fail again
            logger.error("job %s: failure report could not be made", job_id, exc_info=exc)
            outcome = StepOutcome(result_summary={"failure_report_error": f"{type(exc).__name__}: {exc}"})

        with session_scope(self._session_factory) as session:
            job = session.get(Job, job_id, populate_existing=True)
            if job.state is not JobState.FAILED_INPUT:
                return False
            kept = self._store_outputs(session, job, outcome.outputs)
            kinds = {output.kind for output in outcome.outputs}
            destinations = self._queue_deliveries(session, job, kinds, failure_only=True) if kinds else []
            job.result_summary = {**(job.result_summary or {}), **outcome.result_summary, FAILURE_REPORT_CHECKED: True}
            if destinations:
                jobs.add_event(session, job, reason=f"failure report queued for {', '.join(destinations)}")
        remove_stale_files(self._job_folder(job_id), keep=kept)
        return True

    # Results

    def _lock_running(self, session: Session, job_id: int) -> Job | None:
        # Compare-and-set on the state: on SQLite the UPDATE takes the write
        # lock and on PostgreSQL the row lock, both held until commit, so a
        # cancel cannot slip in between this check and the results.
        still_running = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        job = session.get(Job, job_id, populate_existing=True)
        if still_running:
            return job
        reason = f"results discarded because the job became {job.state.value} while it ran"
        jobs.add_event(session, job, reason=reason)
        logger.warning("job %s: %s", job_id, reason)
        return None

    def _fail(self, job_id: int, exc: Exception) -> None:
        logger.error("job %s failed", job_id, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}"
        with session_scope(self._session_factory) as session:
            job = self._lock_running(session, job_id)
            if job is None:
                return
            jobs.transition(
                session,
                job,
                JobState.FAILED,
                reason=f"pipeline failed: {message}",
                reason_code="internal_error",
                error_message=message,
                hint="see the node log for the traceback; retry the job once the cause is fixed",
            )

    def _finish(self, job_id: int, outcome: StepOutcome) -> None:
        with session_scope(self._session_factory) as session:
            job = self._lock_running(session, job_id)
            if job is None:
                return
            kept = self._store_outputs(session, job, outcome.outputs)
            job.result_summary = {**outcome.result_summary, "stage_seconds": dict(outcome.stage_seconds)}
            metrics.observe_stages(outcome.stage_seconds)
            error = outcome.input_error
            destinations = self._queue_deliveries(session, job, {output.kind for output in outcome.outputs}, failure_only=error is not None)

            if error is not None:
                logger.warning("job %s: input cannot be processed (%s)", job_id, error.code)
                jobs.transition(
                    session,
                    job,
                    JobState.FAILED_INPUT,
                    reason=f"input cannot be processed: {error}",
                    reason_code=error.code,
                    error_message=str(error),
                    hint=error.hint or None,
                    details={"series_instance_uid": error.series_instance_uid, "report_to": destinations},
                )
            elif destinations:
                reason = f"{len(outcome.outputs)} object(s) written; sending to {', '.join(destinations)}"
                jobs.transition(session, job, JobState.DELIVERING, reason=reason)
            else:
                complete_job(session, job, reason=f"{len(outcome.outputs)} object(s) written; no destinations configured")
        remove_stale_files(self._job_folder(job_id), keep=kept)

    def _job_folder(self, job_id: int) -> Path:
        return self._settings.storage.outputs_dir / str(job_id)

    def _store_outputs(self, session: Session, job: Job, outputs: list[OutputObject]) -> set[Path]:
        # A rerun replaces the outputs of the job's earlier attempt.
        for old in session.scalars(select(Output).where(Output.job_id == job.id)).all():
            session.delete(old)
        session.flush()

        folder = self._job_folder(job.id)
        written = set()
        for output in outputs:
            path = write_output_file(output, folder, fsync=self._settings.storage.fsync)
            written.add(path)
            session.add(
                Output(
                    job_id=job.id,
                    kind=output.kind,
                    sop_class_uid=str(output.dataset.SOPClassUID),
                    sop_instance_uid=str(output.dataset.SOPInstanceUID),
                    series_instance_uid=str(output.dataset.SeriesInstanceUID),
                    path=str(path),
                )
            )
        session.flush()
        return written

    def _queue_deliveries(self, session: Session, job: Job, kinds: set[OutputKind], *, failure_only: bool) -> list[str]:
        existing = {
            delivery.destination: delivery
            for delivery in session.scalars(select(Delivery).where(Delivery.job_id == job.id))
        }
        queued = []
        for destination in self._settings.destinations:
            wanted = _destination_kinds(destination, kinds, failure_only=failure_only)
            if not wanted:
                continue
            delivery = existing.pop(destination.name, None)
            if delivery is None:
                delivery = Delivery(job_id=job.id, destination=destination.name)
                session.add(delivery)
            delivery.ae_title = destination.ae_title
            delivery.host = destination.host
            delivery.port = destination.port
            delivery.output_kinds = wanted
            delivery.state = DeliveryState.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = utcnow()
            delivery.last_error = None
            delivery.delivered_at = None
            queued.append(destination.name)

        # Rows left from an earlier attempt for destinations that get nothing now.
        for delivery in existing.values():
            delivery.state = DeliveryState.CANCELLED
        session.flush()
        return queued


def _unreported_assembly_failures(session: Session) -> list[int]:
    # Jobs the assembly failed never ran, so they have no outputs and no
    # worker; the summary flag marks the ones already looked at.
    rows = session.execute(
        select(Job.id, Job.result_summary)
        .where(Job.state == JobState.FAILED_INPUT, Job.started_at.is_(None))
        .order_by(Job.id)
        .limit(50)
    ).all()
    return [job_id for job_id, summary in rows if not (summary or {}).get(FAILURE_REPORT_CHECKED)]


def _first_instance_path(session: Session, job: Job, spool_dir: Path) -> Path | None:
    instance = session.scalars(
        select(Instance)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == job.study_id, Instance.is_conflict.is_(False))
        .order_by(Instance.id)
        .limit(1)
    ).first()
    if instance is None:
        return None
    path = Path(instance.path)
    return path if path.is_absolute() else spool_dir / path


def _choose_series(session: Session, job: Job) -> dict[str, Series]:
    if job.input_series:
        rows = session.scalars(
            select(Series).where(Series.series_instance_uid.in_(list(job.input_series.values())))
        ).all()
        by_uid = {row.series_instance_uid: row for row in rows}
        return {role: by_uid[uid] for role, uid in job.input_series.items() if uid in by_uid}

    # NOTE: when the assembly gave one role to several series, the one with
    # the most instances wins, then the newest.
    chosen: dict[str, Series] = {}
    rows = session.scalars(
        select(Series)
        .where(Series.study_id == job.study_id, Series.role.is_not(None))
        .order_by(Series.instance_count, Series.id)
    ).all()
    for row in rows:
        chosen[row.role] = row
    return chosen


def _instance_paths(session: Session, series: Series, spool_dir: Path) -> tuple[Path, ...]:
    instances = session.scalars(
        select(Instance)
        .where(Instance.series_id == series.id, Instance.is_conflict.is_(False))
        .order_by(Instance.instance_number.is_(None), Instance.instance_number, Instance.id)
    ).all()
    # Instance.path is relative to the spool folder; an absolute path is kept as it is.
    return tuple(spool_dir / instance.path for instance in instances)


def _prior_outputs(session: Session, job: Job) -> tuple[PriorOutput, ...]:
    seen = {job.id}
    earlier_id = job.supersedes_job_id
    while earlier_id is not None and earlier_id not in seen:
        seen.add(earlier_id)
        outputs = session.scalars(select(Output).where(Output.job_id == earlier_id).order_by(Output.id)).all()
        if outputs:
            return tuple(
                PriorOutput(
                    job_id=output.job_id,
                    kind=output.kind,
                    sop_class_uid=output.sop_class_uid,
                    sop_instance_uid=output.sop_instance_uid,
                    series_instance_uid=output.series_instance_uid,
                    path=Path(output.path),
                )
                for output in outputs
            )
        earlier = session.get(Job, earlier_id)
        earlier_id = None if earlier is None else earlier.supersedes_job_id
    return ()


def build_context(session: Session, job: Job, settings: Settings) -> JobContext:
    """Return the :class:`JobContext` of ``job``: its study, chosen series and superseded outputs.

    Also records the chosen series on ``job.input_series``.
    """
    spool_dir = settings.storage.resolved_spool_dir
    chosen = _choose_series(session, job)
    series = {
        role: RoleSeries(role, row.series_instance_uid, _instance_paths(session, row, spool_dir))
        for role, row in chosen.items()
    }
    job.input_series = {role: item.series_instance_uid for role, item in series.items()}
    return JobContext(
        job_id=job.id,
        run_number=job.run_number,
        study_instance_uid=job.study.study_instance_uid,
        series=series,
        settings=settings,
        superseded_outputs=_prior_outputs(session, job),
        role_evidence=_role_evidence(chosen),
    )


def _role_evidence(chosen: dict[str, Series]) -> dict[str, str]:
    # The assembly stores a dict per series; its "summary" is the one line meant for people.
    labels = {role.value: role.label for role in SequenceRole}
    evidence = {}
    for role, row in chosen.items():
        summary = (row.role_evidence or {}).get("summary")
        if summary:
            evidence[labels.get(role, role)] = str(summary)
    return evidence

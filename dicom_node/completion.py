"""Decide when a study is complete, and queue or fail its waiting job.

A study is complete when every required role (``assembly.required_roles``)
has a series, each chosen series is one contiguous slice stack, and no
instance has arrived for ``assembly.quiet_period_s``. The job then goes from
``WAITING`` to ``QUEUED`` with ``Job.input_series = {role: SeriesInstanceUID}``.

A study that is not complete keeps waiting until ``assembly.force_complete_s``
have passed since its LAST instance, then its job fails with reason code
``missing_role``, ``slice_gap`` or ``stack_invalid`` (``assembly_error`` where
the stored headers could not be evaluated at all). The clock runs from the
last instance, not the first, so a slow but steady transfer of a large study
is never cut off while instances still arrive.

:class:`CompletionScheduler` polls in an APScheduler background thread, so
role assignment and the image check never run in the C-STORE handler.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Job, Series, Study, utcnow
from db.states import JobState, StudyState
from dicom_node import jobs
from dicom_node.enhancement_check import SpoolImageComparator
from dicom_node.roles import RoleAssignment, assign_roles, candidates_for_study, instance_paths, write_roles
from dicom_node.stacks import StackProblem, StackReport, check_stack
from inference.result import SequenceRole

logger = logging.getLogger(__name__)

MISSING_ROLE = "missing_role"
ASSEMBLY_ERROR = "assembly_error"
SCHEDULER_JOB_ID = "otscc-completion-check"

# Settings of the scheduler running in this process, for force_complete()
# calls that pass none (the dashboard action takes only the session, the
# study id and the actor).
_running_settings: Settings | None = None


@dataclass(frozen=True)
class StudyEvaluation:
    """Roles and stack checks of one study, and what they mean for its job."""

    study_id: int
    fingerprint: tuple[Any, ...]
    assignment: RoleAssignment
    stacks: dict[str, StackReport]
    labels: dict[str, str]
    required: tuple[SequenceRole, ...]

    @property
    def missing_roles(self) -> list[SequenceRole]:
        """Required roles that no series was given."""
        return [role for role in self.required if role not in self.assignment.chosen]

    @property
    def broken_stacks(self) -> list[StackReport]:
        """Stack reports of chosen series for required roles that are not contiguous."""
        reports = [self.stacks[self.assignment.chosen[role]] for role in self.required if role in self.assignment.chosen]
        return [report for report in reports if not report.complete]

    @property
    def complete(self) -> bool:
        """Whether every required role has a series with a contiguous stack."""
        return not self.missing_roles and not self.broken_stacks

    @property
    def input_series(self) -> dict[str, str]:
        """The chosen SeriesInstanceUID per role, as ``Job.input_series`` stores it."""
        return {role.value: uid for role, uid in self.assignment.chosen.items()}

    def chosen_text(self) -> str:
        """Name the chosen series of each required role, for job events."""
        return ", ".join(
            f"{role.label} {self.labels[self.assignment.chosen[role]]}"
            for role in self.required
            if role in self.assignment.chosen
        )

    def waiting_text(self) -> str:
        """Say what the study still lacks."""
        parts = [f"{role.label} missing" for role in self.missing_roles]
        parts += [f"{self.labels[report.series_instance_uid]}: {report.message}" for report in self.broken_stacks]
        return "; ".join(parts)

    def failure(self, waited_s: float) -> tuple[str, str]:
        """Return the reason code and message of a job that cannot run on this study."""
        messages = []
        missing = self.missing_roles
        if missing:
            names = ", ".join(role.label for role in missing)
            reasons = "; ".join(self.assignment.missing[role] for role in missing)
            messages.append(f"Required series {names} not received within {waited_s:.0f} s of the last instance: {reasons}")
        for report in self.broken_stacks:
            messages.append(f"Series {self.labels[report.series_instance_uid]}: {report.message}")
        if missing:
            code = MISSING_ROLE
        elif any(report.problem is StackProblem.SLICE_GAP for report in self.broken_stacks):
            code = StackProblem.SLICE_GAP.value
        else:
            code = StackProblem.STACK_INVALID.value
        return code, ". ".join(messages)


class CheckAction(enum.Enum):
    """Action of one scheduler pass on a due study."""

    QUEUED = "queued"
    FAILED = "failed"
    WAITING = "waiting"
    CHANGED = "changed"
    ERROR = "error"


@dataclass
class CheckOutcome:
    """Outcome of one scheduler pass for one study."""

    study_id: int
    job_id: int
    action: CheckAction
    detail: str = ""


@dataclass
class _Cached:
    fingerprint: tuple[Any, ...]
    waiting_text: str


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime; SQLite gives back naive UTC values."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def study_fingerprint(study: Study) -> tuple[Any, ...]:
    """Return the values that change whenever an instance of the study arrives."""
    return (as_utc(study.last_received_at), study.instance_count)


def series_label(series: Series) -> str:
    """Name a series in messages: number, description and UID."""
    number = "" if series.series_number is None else f"{series.series_number} "
    description = series.series_description or (series.header or {}).get("SeriesDescription") or "(no description)"
    return f"{number}'{description}' ({series.series_instance_uid})"


def evaluate_study(session: Session, study: Study, settings: Settings) -> StudyEvaluation:
    """Assign roles and check the chosen stacks of ``study``, without writing anything."""
    rules = settings.roles
    stacks = {series.series_instance_uid: check_stack(series, rules.stack) for series in study.series}
    comparator = None
    if rules.enhancement.enabled:
        comparator = SpoolImageComparator(
            settings.storage.resolved_spool_dir, instance_paths(study), rules.enhancement
        )
    candidates = candidates_for_study(study, {uid: report.complete for uid, report in stacks.items()})
    assignment = assign_roles(candidates, rules, compare_images=comparator)
    return StudyEvaluation(
        study_id=study.id,
        fingerprint=study_fingerprint(study),
        assignment=assignment,
        stacks=stacks,
        labels={series.series_instance_uid: series_label(series) for series in study.series},
        required=tuple(SequenceRole(role) for role in settings.assembly.required_roles),
    )


def lock_study(session: Session, study_id: int) -> Study | None:
    """Take the study's row lock and return it freshly read.

    A no-op UPDATE takes the row lock on PostgreSQL and the database write
    lock on SQLite, so no instance of the study can be recorded between this
    read and the commit.
    """
    session.execute(
        update(Study)
        .where(Study.id == study_id)
        .values(instance_count=Study.instance_count)
        .execution_options(synchronize_session=False)
    )
    return session.get(Study, study_id, populate_existing=True)


def waiting_job(session: Session, study: Study) -> Job | None:
    """Return the study's newest job if it is ``WAITING``."""
    job = jobs.latest_job(session, study)
    return job if job is not None and job.state is JobState.WAITING else None


def queue_study(
    session: Session, study: Study, job: Job, evaluation: StudyEvaluation, *, reason: str, actor: str = "node"
) -> None:
    """Store the roles, mark the study complete and queue its job."""
    write_roles(session, study, evaluation.assignment)
    study.state = StudyState.COMPLETE
    job.input_series = evaluation.input_series
    jobs.transition(
        session,
        job,
        JobState.QUEUED,
        reason=reason,
        actor=actor,
        details={"input_series": evaluation.input_series, "chosen": evaluation.chosen_text()},
    )
    logger.info("study %s complete; job %s queued", study.study_instance_uid, job.id)


def fail_study(
    session: Session, study: Study, job: Job, evaluation: StudyEvaluation, *, waited_s: float, actor: str = "node", prefix: str = ""
) -> None:
    """Store the roles, mark the study incomplete and fail its job with the reasons."""
    write_roles(session, study, evaluation.assignment)
    code, message = evaluation.failure(waited_s)
    study.state = StudyState.INCOMPLETE
    job.input_series = evaluation.input_series
    jobs.transition(
        session,
        job,
        JobState.FAILED_INPUT,
        reason=f"{prefix}{message}",
        actor=actor,
        reason_code=code,
        error_message=message,
        hint="Send the missing or complete series again, then retry the job from the dashboard.",
        details={"input_series": evaluation.input_series, "waiting_for": evaluation.waiting_text()},
    )
    logger.warning("study %s incomplete; job %s failed: %s", study.study_instance_uid, job.id, code)


def force_complete(
    session: Session,
    study_id: int,
    actor: str,
    *,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> Job:
    """Evaluate a study now as if its force-complete timeout had expired.

    The waiting job is queued if the study is complete and failed with the
    reasons otherwise; the job event names ``actor``. The session is flushed,
    not committed. Without ``settings``, the settings of the scheduler
    running in this process are used, else the defaults.

    Raises
    ------
    ValueError
        If the study does not exist or has no waiting job.
    """
    settings = settings or _running_settings or Settings()
    study = lock_study(session, study_id)
    if study is None:
        raise ValueError(f"study id {study_id} not found; pick a study from the dashboard's list")
    job = waiting_job(session, study)
    if job is None:
        raise ValueError(f"study id {study_id} has no waiting job to complete; retry its last job instead")

    evaluation = evaluate_study(session, study, settings)
    waited = ((now or utcnow()) - as_utc(study.last_received_at)).total_seconds()
    if evaluation.complete:
        queue_study(
            session, study, job, evaluation,
            reason=f"force-complete requested by {actor}: {evaluation.chosen_text()}", actor=actor,
        )
    else:
        fail_study(
            session, study, job, evaluation, waited_s=max(waited, 0.0), actor=actor,
            prefix=f"force-complete requested by {actor}: ",
        )
    return job


class CompletionScheduler:
    """Poll receiving studies with a waiting job, and queue or fail the job when its time comes.

    Parameters
    ----------
    settings : Settings
        ``assembly`` gives the timing, ``roles`` the rules and ``storage`` the spool.
    session_factory : sessionmaker
        Sessions on the job database.
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._scheduler: BackgroundScheduler | None = None
        self._cache: dict[int, _Cached] = {}

    def start(self) -> None:
        """Start polling every ``assembly.check_interval_s`` in a background thread."""
        if self._scheduler is not None:
            return
        scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        scheduler.add_job(
            self._tick,
            "interval",
            seconds=self._settings.assembly.check_interval_s,
            id=SCHEDULER_JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        scheduler.start()
        self._scheduler = scheduler
        global _running_settings
        _running_settings = self._settings
        logger.info("completion scheduler started, checking every %s s", self._settings.assembly.check_interval_s)

    def stop(self) -> None:
        """Stop polling and wait for a running check to finish."""
        if self._scheduler is None:
            return
        self._scheduler.shutdown(wait=True)
        self._scheduler = None
        global _running_settings
        if _running_settings is self._settings:
            _running_settings = None
        logger.info("completion scheduler stopped")

    def _tick(self) -> None:
        self.check_studies(utcnow())

    def check_studies(self, now: dt.datetime | None = None) -> list[CheckOutcome]:
        """Check every receiving study with a waiting job that has been quiet long enough.

        Returns what was done to each study looked at. A database error on
        one study is logged and rolled back, and the others are still checked.
        """
        now = as_utc(now or utcnow())
        outcomes = []
        for study_id in self._due_studies(now):
            try:
                outcome = self._check_study(study_id, now)
            except SQLAlchemyError as exc:
                logger.error("completion check of study id %s failed: %s", study_id, exc)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _due_studies(self, now: dt.datetime) -> list[int]:
        assembly = self._settings.assembly
        cutoff = now - dt.timedelta(seconds=min(assembly.quiet_period_s, assembly.force_complete_s))
        query = (
            select(Study.id)
            .join(Job, Job.study_id == Study.id)
            .where(Study.state == StudyState.RECEIVING, Job.state == JobState.WAITING, Study.last_received_at <= cutoff)
            .group_by(Study.id)
            .order_by(func.min(Study.last_received_at))
        )
        with self._session_factory() as session:
            due = list(session.scalars(query))
        for study_id in set(self._cache) - set(due):
            del self._cache[study_id]
        return due

    def _check_study(self, study_id: int, now: dt.datetime) -> CheckOutcome | None:
        assembly = self._settings.assembly
        with self._session_factory() as session:
            study = session.get(Study, study_id)
            if study is None:
                return None
            waited = (now - as_utc(study.last_received_at)).total_seconds()
            expired = waited >= assembly.force_complete_s
            cached = self._cache.get(study_id)
            if cached is not None and cached.fingerprint == study_fingerprint(study) and not expired:
                return None
            try:
                evaluation = evaluate_study(session, study, self._settings)
            except Exception as exc:  # noqa: BLE001 - one malformed study must not stop the checks of the others
                session.rollback()
                return self._evaluation_failed(session, study_id, exc, expired=expired)
            session.rollback()

            study = lock_study(session, study_id)
            job = None if study is None else waiting_job(session, study)
            if study is None or job is None or study.state is not StudyState.RECEIVING:
                session.rollback()
                return None
            if study_fingerprint(study) != evaluation.fingerprint:
                # An instance arrived while the study was evaluated; the next pass looks again.
                session.rollback()
                return CheckOutcome(study_id, job.id, CheckAction.CHANGED)

            outcome = self._act(session, study, job, evaluation, waited=waited, expired=expired, cached=cached)
            session.commit()
            return outcome

    def _evaluation_failed(self, session: Session, study_id: int, error: Exception, *, expired: bool) -> CheckOutcome | None:
        study = lock_study(session, study_id)
        job = None if study is None else waiting_job(session, study)
        if study is None or job is None:
            session.rollback()
            return None

        message = f"series roles of the study could not be evaluated: {type(error).__name__}: {error}"
        if not expired:
            # Logged once per state of the study; new instances or the timeout bring another try.
            if self._cache.get(study_id, _Cached((), "")).waiting_text != message:
                logger.error("study %s: %s", study.study_instance_uid, message, exc_info=error)
            self._cache[study_id] = _Cached(study_fingerprint(study), message)
            session.rollback()
            return CheckOutcome(study_id, job.id, CheckAction.ERROR, message)

        study.state = StudyState.INCOMPLETE
        jobs.transition(
            session, job, JobState.FAILED_INPUT, reason=message, reason_code=ASSEMBLY_ERROR, error_message=message,
            hint="Check the stored headers of the study's series; send the study again or report the error.",
        )
        session.commit()
        self._cache.pop(study_id, None)
        logger.error("study %s: job %s failed: %s", study.study_instance_uid, job.id, message)
        return CheckOutcome(study_id, job.id, CheckAction.FAILED, message)

    def _act(
        self,
        session: Session,
        study: Study,
        job: Job,
        evaluation: StudyEvaluation,
        *,
        waited: float,
        expired: bool,
        cached: _Cached | None,
    ) -> CheckOutcome:
        if evaluation.complete:
            queue_study(
                session, study, job, evaluation,
                reason=f"study complete after {waited:.1f} s without new instances: {evaluation.chosen_text()}",
            )
            self._cache.pop(study.id, None)
            return CheckOutcome(study.id, job.id, CheckAction.QUEUED, evaluation.chosen_text())
        if expired:
            fail_study(session, study, job, evaluation, waited_s=self._settings.assembly.force_complete_s)
            self._cache.pop(study.id, None)
            return CheckOutcome(study.id, job.id, CheckAction.FAILED, job.error_message or "")

        waiting_text = evaluation.waiting_text()
        write_roles(session, study, evaluation.assignment)
        if cached is None or cached.waiting_text != waiting_text:
            jobs.add_event(
                session, job,
                reason=f"study not complete yet: {waiting_text}; waiting up to "
                f"{self._settings.assembly.force_complete_s:.0f} s after the last instance",
                details={"waiting_for": waiting_text},
            )
        self._cache[study.id] = _Cached(evaluation.fingerprint, waiting_text)
        return CheckOutcome(study.id, job.id, CheckAction.WAITING, waiting_text)


"""The outbox: send each job's outputs to each destination, with retries.

A :class:`~db.models.Delivery` row is one job's outputs for one destination.
The worker picks due rows, sends every output file of the job (the same SOP
Instance UIDs on every attempt, so a peer that stored part of an earlier
attempt receives duplicates, not new objects), records a
:class:`~db.models.DeliveryAttempt` and moves the row to ``DELIVERED``,
``RETRY_WAIT`` (exponential backoff) or ``FAILED``. When a job's deliveries
are all settled, the job becomes ``DONE`` or ``DELIVERY_FAILED``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import DeliverySettings, DestinationSettings, Settings
from db.models import Delivery, DeliveryAttempt, Job, Output, utcnow
from db.session import session_scope
from db.states import DeliveryState, JobState
from dicom_node import jobs, metrics
from dicom_node.sender import SendOutcome, SendReport, SendTimeouts, send_datasets

logger = logging.getLogger(__name__)

DUE_STATES = (DeliveryState.PENDING, DeliveryState.RETRY_WAIT)
OPEN_STATES = frozenset({DeliveryState.PENDING, DeliveryState.IN_PROGRESS, DeliveryState.RETRY_WAIT})


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime; SQLite returns stored times without a zone."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def backoff_seconds(delivery: DeliverySettings, attempts: int) -> float:
    """Return the wait before attempt ``attempts + 1``: initial * 2^(attempts - 1), capped."""
    exponent = max(attempts - 1, 0)
    # Cap the exponent too, so a large attempt count cannot overflow the float.
    return min(delivery.backoff_initial_s * 2.0 ** min(exponent, 60), delivery.backoff_max_s)


def cancel_open_deliveries(session: Session, job: Job, *, reason: str, actor: str = "node") -> int:
    """Cancel the job's deliveries that are not settled yet; return how many."""
    cancelled = 0
    for delivery in session.scalars(select(Delivery).where(Delivery.job_id == job.id)):
        if delivery.state in OPEN_STATES:
            delivery.state = DeliveryState.CANCELLED
            cancelled += 1
    if cancelled:
        jobs.add_event(session, job, reason=f"{cancelled} pending deliveries cancelled: {reason}", actor=actor)
    return cancelled


def supersede_earlier_runs(session: Session, job: Job) -> list[int]:
    """Mark the earlier runs that ``job`` replaces as ``SUPERSEDED``; return their ids.

    Walks the whole ``supersedes_job_id`` chain, because an earlier run may
    have failed and left the run before it ``DONE``. A run still ``RUNNING``
    cannot be superseded yet and keeps its state, with an event saying so.
    """
    superseded = []
    seen = {job.id}
    earlier_id = job.supersedes_job_id
    while earlier_id is not None and earlier_id not in seen:
        seen.add(earlier_id)
        earlier = session.get(Job, earlier_id)
        if earlier is None:
            break
        if JobState.SUPERSEDED in jobs.ALLOWED_TRANSITIONS[earlier.state]:
            reason = f"superseded by job {job.id} (run {job.run_number})"
            jobs.transition(session, earlier, JobState.SUPERSEDED, reason=reason, details={"superseded_by": job.id})
            cancel_open_deliveries(session, earlier, reason=reason)
            superseded.append(earlier.id)
        elif earlier.state is JobState.RUNNING:
            jobs.add_event(session, earlier, reason=f"job {job.id} finished a newer run while this one was still running")
        earlier_id = earlier.supersedes_job_id
    return superseded


def complete_job(session: Session, job: Job, *, reason: str) -> None:
    """Move ``job`` to ``DONE`` and supersede the earlier runs of its study."""
    jobs.transition(session, job, JobState.DONE, reason=reason)
    supersede_earlier_runs(session, job)


def settle_job(session: Session, job: Job) -> None:
    """Move a ``DELIVERING`` job to ``DONE`` or ``DELIVERY_FAILED`` once no delivery is open.

    Jobs in other states keep their state: a ``FAILED_INPUT`` job that sent
    a failure report stays ``FAILED_INPUT``.
    """
    if job.state is not JobState.DELIVERING:
        return
    deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job.id)).all()
    live = [delivery for delivery in deliveries if delivery.state is not DeliveryState.CANCELLED]
    if any(delivery.state in OPEN_STATES for delivery in live):
        return

    failed = sorted(delivery.destination for delivery in live if delivery.state is DeliveryState.FAILED)
    if failed:
        jobs.transition(
            session, job, JobState.DELIVERY_FAILED, reason=f"delivery failed for {', '.join(failed)}"
        )
    else:
        complete_job(session, job, reason="results delivered to every destination")


def destination_of(settings: Settings, delivery: Delivery) -> DestinationSettings:
    """Return the destination a delivery row was made for, with its address from the row.

    The row keeps the AE title, host and port the delivery was created with.
    The other options come from the settings while the destination is still
    configured there.
    """
    configured = {destination.name: destination for destination in settings.destinations}
    base = configured.get(delivery.destination)
    options = base.model_dump() if base is not None else {}
    options.update(name=delivery.destination, ae_title=delivery.ae_title, host=delivery.host, port=delivery.port)
    return DestinationSettings.model_validate(options)


def output_paths(session: Session, delivery: Delivery) -> list[Path]:
    """Return the files a delivery sends: the job's outputs of the kinds the row names."""
    outputs = session.scalars(select(Output).where(Output.job_id == delivery.job_id).order_by(Output.id)).all()
    kinds = set(delivery.output_kinds or [])
    return [Path(output.path) for output in outputs if not kinds or output.kind.value in kinds]


class OutboxWorker:
    """Sends due deliveries, in a background thread or one batch at a time.

    Parameters
    ----------
    settings : Settings
        Destinations, retry policy and the node's AE title.
    session_factory : sessionmaker
        Sessions on the job database.
    batch_size : int
        Maximum number of deliveries one :meth:`process_due` call sends.
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *, batch_size: int = 20) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Reopen the deliveries a crash left in progress, then start polling for due ones."""
        if self._thread is not None and self._thread.is_alive():
            return
        with session_scope(self._session_factory) as session:
            reopened = jobs.reopen_deliveries_in_flight(session)
        if reopened:
            logger.warning("reopened %d delivery(ies) interrupted by a restart: %s", len(reopened), reopened)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="otscc-outbox", daemon=True)
        self._thread.start()
        logger.info("outbox started, polling every %s s", self._settings.delivery.poll_interval_s)

    def stop(self, timeout_s: float | None = 60.0) -> None:
        """Stop polling and wait up to ``timeout_s`` for the send in progress to finish.

        A send that is still running after the timeout stays ``IN_PROGRESS``
        and is sent again after the next start.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("outbox did not stop within %s s; its delivery is resumed at next start", timeout_s)
            self._thread = None
        logger.info("outbox stopped")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.process_due()
            except Exception:  # noqa: BLE001 - the thread must survive a database outage
                logger.exception("outbox pass failed; trying again in %s s", self._settings.delivery.poll_interval_s)
                sent = 0
            if not sent:
                self._stop.wait(self._settings.delivery.poll_interval_s)

    def process_due(self, now: dt.datetime | None = None) -> int:
        """Send every delivery due at ``now`` (default: the current time); return how many were tried."""
        now = now or utcnow()
        with session_scope(self._session_factory) as session:
            due = session.execute(
                select(Delivery.id, Delivery.ae_title, Delivery.host, Delivery.port)
                .where(Delivery.state.in_(DUE_STATES), Delivery.next_attempt_at <= now)
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(self._batch_size)
            ).all()

        # When a peer cannot be reached, its other due deliveries wait for the
        # same retry time without using one of their attempts. An unreachable
        # peer then costs one connection timeout per pass, not one per
        # delivery, and the other destinations are not held up.
        unreachable: dict[tuple[str, str, int], dt.datetime] = {}
        tried = 0
        for row in due:
            if self._stop.is_set() and self._thread is not None:
                break
            peer = (row.ae_title, row.host, row.port)
            if peer in unreachable:
                self._postpone(row.id, unreachable[peer])
                continue
            if not self._claim(row.id):
                continue
            retry_at = self._attempt(row.id, now)
            tried += 1
            if retry_at is not None:
                unreachable[peer] = retry_at
        return tried

    def _postpone(self, delivery_id: int, until: dt.datetime) -> None:
        with session_scope(self._session_factory) as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.state.in_(DUE_STATES), Delivery.next_attempt_at < until)
                .values(next_attempt_at=until)
                .execution_options(synchronize_session=False)
            )
        logger.info("delivery %s postponed to %s: its peer was unreachable in this pass", delivery_id, until.isoformat())

    def _claim(self, delivery_id: int) -> bool:
        # Compare-and-set, so two outbox workers never send the same delivery at once.
        with session_scope(self._session_factory) as session:
            claimed = session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.state.in_(DUE_STATES))
                .values(state=DeliveryState.IN_PROGRESS)
                .execution_options(synchronize_session=False)
            ).rowcount
        return claimed == 1

    def _attempt(self, delivery_id: int, now: dt.datetime) -> dt.datetime | None:
        # Returns the retry time when the peer could not be reached at all.
        with session_scope(self._session_factory) as session:
            delivery = session.get(Delivery, delivery_id)
            job = delivery.job
            if job.state in (JobState.CANCELLED, JobState.SUPERSEDED):
                delivery.state = DeliveryState.CANCELLED
                jobs.add_event(session, job, reason=f"delivery to {delivery.destination} cancelled: job is {job.state.value}")
                return None
            destination = destination_of(self._settings, delivery)
            paths = output_paths(session, delivery)
        calling_ae = destination.calling_ae_title or self._settings.node.ae_title

        timeouts = SendTimeouts.from_settings(self._settings.delivery)
        try:
            report = send_datasets(destination, paths, calling_ae=calling_ae, timeouts=timeouts)
        except ValueError as exc:
            report = SendReport(destination.name, SendOutcome.PERMANENT, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt and retried
            logger.exception("delivery %s to %s raised an unexpected error", delivery_id, destination.name)
            report = SendReport(destination.name, SendOutcome.TRANSIENT, f"unexpected error: {type(exc).__name__}: {exc}")

        with session_scope(self._session_factory) as session:
            delivery = self._record(session, delivery_id, report, now)
            unreachable = report.outcome is SendOutcome.TRANSIENT and not report.delivered
            if unreachable and delivery.state is DeliveryState.RETRY_WAIT:
                return as_utc(delivery.next_attempt_at)
        return None

    def _record(self, session: Session, delivery_id: int, report: SendReport, now: dt.datetime) -> Delivery:
        delivery = session.get(Delivery, delivery_id)
        job = delivery.job
        delivery.attempts += 1
        metrics.observe_stage("deliver", report.duration_s)
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                at=utcnow(),
                outcome=report.outcome.value,
                status=report.status,
                message=report.message,
                duration_s=report.duration_s,
            )
        )
        details = {"delivery_id": delivery.id, "destination": delivery.destination, "attempt": delivery.attempts}
        if report.status is not None:
            details["status"] = report.status

        if report.outcome is SendOutcome.DELIVERED:
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = utcnow()
            delivery.last_error = None
            reason = f"delivered to {delivery.destination}: {report.message}"
            logger.info("job %s: %s", job.id, reason)
        elif report.outcome is SendOutcome.PERMANENT:
            metrics.record_delivery_failure(delivery.destination, permanent=True)
            delivery.state = DeliveryState.FAILED
            delivery.last_error = report.message
            reason = f"delivery to {delivery.destination} failed: {report.message}; permanent, not retried"
            logger.error("job %s: %s", job.id, reason)
        elif delivery.attempts >= self._settings.delivery.max_attempts:
            metrics.record_delivery_failure(delivery.destination, permanent=True)
            delivery.state = DeliveryState.FAILED
            delivery.last_error = report.message
            reason = (
                f"delivery to {delivery.destination} failed: {report.message}; "
                f"gave up after {delivery.attempts} attempts"
            )
            logger.error("job %s: %s", job.id, reason)
        else:
            metrics.record_delivery_failure(delivery.destination, permanent=False)
            wait_s = backoff_seconds(self._settings.delivery, delivery.attempts)
            delivery.state = DeliveryState.RETRY_WAIT
            delivery.last_error = report.message
            delivery.next_attempt_at = as_utc(now) + dt.timedelta(seconds=wait_s)
            reason = f"delivery to {delivery.destination} failed: {report.message}; retrying in {wait_s:g} s"
            details["retry_in_s"] = wait_s
            logger.warning("job %s: %s", job.id, reason)

        jobs.add_event(session, job, reason=reason, details=details)
        session.flush()
        settle_job(session, job)
        return delivery

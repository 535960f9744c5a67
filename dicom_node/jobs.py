"""The job store: every job state change goes through here and leaves a job event.

Functions take an open SQLAlchemy session and never commit it, so the
caller decides the transaction: the C-STORE handler records an instance and
its job activity in one commit.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Delivery, Job, JobEvent, Study, utcnow
from db.states import DeliveryState, JobState, StudyState

logger = logging.getLogger(__name__)

# Transitions an administrator or the node may make. A final state leaves
# only through an explicit retry, which makes a new attempt of the same job.
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset({JobState.QUEUED, JobState.FAILED_INPUT, JobState.CANCELLED, JobState.SUPERSEDED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.SUPERSEDED}),
    JobState.RUNNING: frozenset(
        {JobState.DELIVERING, JobState.DONE, JobState.FAILED, JobState.FAILED_INPUT, JobState.QUEUED, JobState.CANCELLED}
    ),
    JobState.DELIVERING: frozenset({JobState.DONE, JobState.DELIVERY_FAILED, JobState.CANCELLED, JobState.SUPERSEDED}),
    JobState.DONE: frozenset({JobState.SUPERSEDED, JobState.QUEUED}),
    JobState.FAILED_INPUT: frozenset({JobState.QUEUED, JobState.SUPERSEDED}),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.SUPERSEDED}),
    JobState.DELIVERY_FAILED: frozenset({JobState.DELIVERING, JobState.SUPERSEDED, JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.SUPERSEDED: frozenset(),
}


class TransitionError(ValueError):
    """A job state change that the life cycle does not allow."""


def add_event(
    session: Session,
    job: Job,
    *,
    reason: str,
    actor: str = "node",
    from_state: JobState | None = None,
    to_state: JobState | None = None,
    details: dict[str, Any] | None = None,
) -> JobEvent:
    """Record an event on ``job`` without changing its state."""
    event = JobEvent(
        job_id=job.id,
        at=utcnow(),
        from_state=None if from_state is None else from_state.value,
        to_state=None if to_state is None else to_state.value,
        reason=reason,
        actor=actor,
        details=details or {},
    )
    session.add(event)
    return event


def transition(
    session: Session,
    job: Job,
    to_state: JobState,
    *,
    reason: str,
    actor: str = "node",
    details: dict[str, Any] | None = None,
    reason_code: str | None = None,
    error_message: str | None = None,
    hint: str | None = None,
) -> Job:
    """Move ``job`` to ``to_state`` and record the event.

    Raises
    ------
    TransitionError
        If the life cycle does not allow the change; the message names both states.
    """
    from_state = job.state
    if to_state not in ALLOWED_TRANSITIONS[from_state]:
        raise TransitionError(
            f"job {job.id} cannot go from {from_state.value} to {to_state.value}; "
            f"allowed: {sorted(s.value for s in ALLOWED_TRANSITIONS[from_state]) or 'none'}"
        )

    now = utcnow()
    job.state = to_state
    if to_state is JobState.QUEUED:
        job.queued_at = now
        job.finished_at = None
        job.reason_code = job.error_message = job.hint = None
    elif to_state is JobState.RUNNING:
        job.started_at = now
        job.heartbeat_at = now
        job.attempts += 1
    elif to_state.is_final:
        job.finished_at = now
    if reason_code is not None:
        job.reason_code = reason_code
    if error_message is not None:
        job.error_message = error_message
    if hint is not None:
        job.hint = hint

    session.flush()
    add_event(session, job, reason=reason, actor=actor, from_state=from_state, to_state=to_state, details=details)
    logger.info("job %s: %s -> %s (%s)", job.id, from_state.value, to_state.value, reason)
    return job


def latest_job(session: Session, study: Study) -> Job | None:
    """Return the study's newest job, if any."""
    return session.scalars(
        select(Job).where(Job.study_id == study.id).order_by(Job.id.desc()).limit(1)
    ).first()


def note_study_activity(session: Session, study: Study, *, new_instance: bool) -> Job:
    """Keep a study's job in step with an instance that just arrived.

    A study receiving its first instance gets a ``WAITING`` job. A new
    instance for a study whose job already left ``WAITING`` (a late series, a
    re-scan) opens a new ``WAITING`` job that supersedes it once it finishes.
    A duplicate of a stored instance changes nothing.
    """
    job = latest_job(session, study)
    if job is not None and (job.state is JobState.WAITING or not new_instance):
        return job

    if job is not None and study.state is not StudyState.RECEIVING:
        study.state = StudyState.RECEIVING

    new_job = Job(
        study_id=study.id,
        run_number=1 if job is None else job.run_number + 1,
        supersedes_job_id=None if job is None else job.id,
        state=JobState.WAITING,
        input_series={},
        result_summary={},
    )
    session.add(new_job)
    session.flush()
    reason = "first instance received" if job is None else f"new instances after job {job.id}; a new run will supersede it"
    add_event(session, new_job, reason=reason, to_state=JobState.WAITING)
    return new_job


def claim_next_queued(session: Session, worker: str) -> Job | None:
    """Claim the oldest queued job for ``worker``, or return None.

    The claim is a compare-and-set on the state, so two workers, in one
    process or several, never run the same job.
    """
    # Ids another worker took between the query and the compare-and-set are
    # excluded from the next query, so a lost race on a whole batch moves on
    # to the next batch instead of reporting an empty queue.
    lost: set[int] = set()
    while True:
        query = select(Job.id).where(Job.state == JobState.QUEUED)
        if lost:
            query = query.where(Job.id.not_in(lost))
        candidates = session.scalars(query.order_by(Job.queued_at, Job.id).limit(5)).all()
        if not candidates:
            return None
        for job_id in candidates:
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(worker=worker)
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed:
                job = session.get(Job, job_id, populate_existing=True)
                transition(session, job, JobState.RUNNING, reason="picked up by worker", details={"worker": worker})
                return job
            lost.add(job_id)


def requeue_running_jobs(session: Session) -> list[int]:
    """Queue again the jobs a crash left running; return their ids."""
    recovered = []
    for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING)).all():
        transition(session, job, JobState.QUEUED, reason="node restarted while the job was running; queued again")
        recovered.append(job.id)
    return recovered


def reopen_deliveries_in_flight(session: Session) -> list[int]:
    """Make the deliveries a crash left in progress due again; return their ids.

    Call it only while no outbox worker runs, because it also reopens a
    delivery that a running worker is sending.
    """
    reopened = []
    for delivery in session.scalars(select(Delivery).where(Delivery.state == DeliveryState.IN_PROGRESS)).all():
        delivery.state = DeliveryState.PENDING
        delivery.next_attempt_at = utcnow()
        add_event(
            session,
            delivery.job,
            reason=f"node restarted during delivery to {delivery.destination}; sending again",
        )
        reopened.append(delivery.id)
    return reopened


def recover_interrupted(session: Session) -> list[int]:
    """Queue again the jobs a crash left running, and reopen deliveries left in flight.

    Returns the ids of the jobs taken up again. The job runner and the
    outbox each call their half at their own start, so that starting one
    never disturbs the other while it runs.
    """
    recovered = requeue_running_jobs(session)
    reopen_deliveries_in_flight(session)
    return recovered


def heartbeat(session: Session, job: Job, at: dt.datetime | None = None) -> None:
    """Mark ``job`` as alive, for the dashboard and for stale-job detection."""
    job.heartbeat_at = at or utcnow()

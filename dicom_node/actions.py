"""Administrator actions on jobs and deliveries, shared by the dashboard and the CLI.

Each action takes an open session and the actor (a user name or
``"cli"``), records a job event naming the actor, and leaves the commit to
the caller.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from db.models import Delivery, Job, utcnow
from db.states import DeliveryState, JobState
from dicom_node import jobs
from dicom_node.outbox import cancel_open_deliveries

logger = logging.getLogger(__name__)

RETRYABLE_JOB_STATES = frozenset(
    {JobState.FAILED, JobState.FAILED_INPUT, JobState.CANCELLED, JobState.DELIVERY_FAILED}
)
RETRYABLE_DELIVERY_STATES = frozenset({DeliveryState.FAILED, DeliveryState.RETRY_WAIT, DeliveryState.CANCELLED})
CANCELLABLE_JOB_STATES = frozenset({JobState.WAITING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING})


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ValueError(f"job {job_id} not found; list jobs with 'otscc-node jobs'")
    return job


def retry_job(session: Session, job_id: int, actor: str) -> Job:
    """Queue a failed, cancelled or undelivered job to run the pipeline again.

    Raises
    ------
    ValueError
        If the job does not exist or its state cannot be retried.
    """
    job = _get_job(session, job_id)
    if job.state not in RETRYABLE_JOB_STATES:
        allowed = ", ".join(sorted(state.value for state in RETRYABLE_JOB_STATES))
        raise ValueError(f"job {job_id} is {job.state.value} and cannot be retried; only {allowed} jobs can")
    reason = f"retry requested by {actor}"
    # A failure report still waiting to be sent belongs to the attempt being replaced.
    cancel_open_deliveries(session, job, reason=reason, actor=actor)
    jobs.transition(session, job, JobState.QUEUED, reason=reason, actor=actor)
    logger.info("job %s queued again by %s", job_id, actor)
    return job


def retry_delivery(session: Session, delivery_id: int, actor: str) -> Delivery:
    """Send a failed or waiting delivery again now, with a fresh attempt budget.

    A ``DELIVERY_FAILED`` job goes back to ``DELIVERING``.

    Raises
    ------
    ValueError
        If the delivery does not exist, cannot be retried, or its job was
        cancelled or superseded.
    """
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise ValueError(f"delivery {delivery_id} not found; see the job's deliveries in 'otscc-node jobs'")
    if delivery.state not in RETRYABLE_DELIVERY_STATES:
        raise ValueError(
            f"delivery {delivery_id} is {delivery.state.value}; only failed, waiting or cancelled deliveries can be retried"
        )
    job = delivery.job
    if job.state in (JobState.CANCELLED, JobState.SUPERSEDED):
        raise ValueError(f"job {job.id} is {job.state.value}; retry the job instead of its delivery")

    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.last_error = None
    reason = f"delivery to {delivery.destination} retried by {actor}"
    details = {"delivery_id": delivery.id, "destination": delivery.destination}
    if job.state is JobState.DELIVERY_FAILED:
        jobs.transition(session, job, JobState.DELIVERING, reason=reason, actor=actor, details=details)
    else:
        jobs.add_event(session, job, reason=reason, actor=actor, details=details)
    logger.info("job %s: %s", job.id, reason)
    return delivery


def cancel_job(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a job that has not finished, and its pending deliveries.

    A running job is marked at once; the runner then discards its results.

    Raises
    ------
    ValueError
        If the job does not exist or has already finished.
    """
    job = _get_job(session, job_id)
    if job.state not in CANCELLABLE_JOB_STATES:
        raise ValueError(f"job {job_id} is {job.state.value} and has finished; there is nothing to cancel")
    reason = f"cancelled by {actor}"
    jobs.transition(session, job, JobState.CANCELLED, reason=reason, actor=actor)
    cancel_open_deliveries(session, job, reason=reason, actor=actor)
    logger.info("job %s cancelled by %s", job_id, actor)
    return job


def force_complete(session: Session, study_id: int, actor: str) -> object:
    """Treat a study as complete now, as the assembly's force-complete timeout would."""
    # Imported here because the completion logic belongs to the assembly
    # modules, which import the job store in turn.
    from dicom_node.completion import force_complete as complete_study

    return complete_study(session, study_id, actor)

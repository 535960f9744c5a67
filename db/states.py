"""Defined terms stored in the job database."""

from __future__ import annotations

import enum


class StudyState(enum.Enum):
    """Assembly state of a study."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"


class JobState(enum.Enum):
    """Life cycle of one pipeline run for a study.

    ``WAITING`` jobs wait for their study to complete. ``FAILED_INPUT`` means
    the study cannot be processed as sent (a missing role, a slice gap);
    ``FAILED`` means the node itself failed. ``DELIVERY_FAILED`` means the
    results were made but at least one destination did not take them.
    """

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED_INPUT = "failed_input"
    FAILED = "failed"
    DELIVERY_FAILED = "delivery_failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"

    @property
    def is_final(self) -> bool:
        """Whether the job will not change state without an administrator's action."""
        return self in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset(
    {
        JobState.DONE,
        JobState.FAILED_INPUT,
        JobState.FAILED,
        JobState.DELIVERY_FAILED,
        JobState.CANCELLED,
        JobState.SUPERSEDED,
    }
)


class DeliveryState(enum.Enum):
    """State of one result set for one destination in the outbox."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    RETRY_WAIT = "retry_wait"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutputKind(enum.Enum):
    """Kind of DICOM object the node produced."""

    SEG = "seg"
    SR = "sr"
    FAILURE_SR = "failure_sr"
    SECONDARY_CAPTURE = "secondary_capture"

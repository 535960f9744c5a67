"""DIMSE status codes the node returns, named after their meaning.

The Storage Service Class statuses are listed in PS3.4 Annex B and the
general status types in PS3.7 Annex C. For C-STORE, the 0xA700-0xA7FF,
0xA900-0xA9FF and 0xC000-0xCFFF ranges are failure statuses.
"""

from __future__ import annotations

SUCCESS = 0x0000
"""The instance is stored durably and recorded (PS3.7 Annex C)."""

OUT_OF_RESOURCES = 0xA700
"""Refused: out of resources, here free disk space below the configured floor (PS3.4 Annex B)."""

DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
"""Error: the dataset's SOP Class UID differs from the request's Affected SOP Class UID (PS3.4 Annex B)."""

CANNOT_UNDERSTAND = 0xC000
"""Error: cannot understand, here a missing or invalid UID in the dataset (PS3.4 Annex B)."""

PROCESSING_FAILURE = 0x0110
"""Failure: the node could not write or record the instance, for example a database error (PS3.7 Annex C)."""

STATUS_NAMES: dict[int, str] = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: Out of Resources",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: Data Set does not match SOP Class",
    CANNOT_UNDERSTAND: "Error: Cannot understand",
    PROCESSING_FAILURE: "Failure: Processing failure",
}


def describe_status(status: int) -> str:
    """Return ``0xNNNN (meaning)`` for a status code, for log lines and messages."""
    return f"0x{status:04X} ({STATUS_NAMES.get(status, 'unnamed status')})"

"""The interface between the job runner and the study pipeline.

The runner builds a :class:`JobContext` from the job database, calls
:meth:`PipelineStep.run` and stores what the :class:`StepOutcome` holds: the
DICOM objects to send, a summary for the job record and stage timings. The
step never touches the database or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydicom import Dataset

from config.settings import Settings
from db.states import OutputKind
from inference.errors import InputError


@dataclass(frozen=True)
class RoleSeries:
    """The series chosen for one role, with its instance files in the spool.

    ``paths`` are absolute and sorted by InstanceNumber, then by arrival.
    """

    role: str
    series_instance_uid: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class PriorOutput:
    """An object an earlier run of the same study produced, which this run replaces."""

    job_id: int
    kind: OutputKind
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    path: Path


@dataclass(frozen=True)
class JobContext:
    """Everything a pipeline step may read about the job it runs.

    ``series`` maps a role value (``"ce_t1"``, ``"t2"``, ``"t1"``) to the
    series chosen for it. ``superseded_outputs`` are the objects of the
    nearest earlier run of the study that produced any, so a step can
    reference or replace them. ``role_evidence`` maps a role label
    (``"CE-T1"``) to the assembly's one-line summary of why its series got
    that role, for the SR.
    """

    job_id: int
    run_number: int
    study_instance_uid: str
    series: Mapping[str, RoleSeries]
    settings: Settings
    superseded_outputs: tuple[PriorOutput, ...] = ()
    role_evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputObject:
    """A DICOM object a step produced, with the kind the outbox filters on."""

    kind: OutputKind
    dataset: Dataset


@dataclass
class StepOutcome:
    """Objects, summary and timings of one pipeline run.

    A step that finds the study cannot be processed may return an outcome
    with ``input_error`` set and a failure report in ``outputs``. The runner
    then ends the job in ``FAILED_INPUT`` and sends the report only to the
    destinations that accept failure reports. A step may also raise
    :class:`~inference.errors.InputError`, which means the same without a report.
    """

    outputs: list[OutputObject] = field(default_factory=list)
    result_summary: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    input_error: InputError | None = None


@runtime_checkable
class PipelineStep(Protocol):
    """A callable unit that turns one study's chosen series into DICOM objects."""

    def run(self, context: JobContext) -> StepOutcome:
        """Process the study described by ``context``.

        Raises
        ------
        InputError
            If the study cannot be processed as sent.
        """
        ...

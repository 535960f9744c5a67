"""Studies in a spool and a small real pipeline step, for the runner and delivery tests.

The step reads every instance of the chosen series with pydicom and writes
a Basic Text SR that lists what it read, so the runner is tested end to end
without TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, load_settings
from db.models import Instance, Job, Series, Study
from db.session import session_scope
from db.states import JobState, OutputKind, StudyState
from dicom_node import jobs
from dicom_node.pipeline_step import JobContext, OutputObject, StepOutcome
from inference.errors import InputError
from tests.delivery_peers import basic_text_sr

ROLES = ("ce_t1", "t2", "t1")


def make_settings(data_dir: Path, *, destinations: list[dict[str, Any]] | None = None, **delivery: Any) -> Settings:
    """Settings with all storage in ``data_dir``, the given destinations and retry policy."""
    overrides: dict[str, Any] = {
        "storage": {"data_dir": str(data_dir), "fsync": True},
        "destinations": destinations or [],
        "delivery": {"backoff_initial_s": 1.0, "backoff_max_s": 8.0, "max_attempts": 3, "association_timeout_s": 5.0}
        | delivery,
    }
    return load_settings(environ={}, overrides=overrides)


def mr_slice(study_uid: str, series_uid: str, number: int) -> Dataset:
    """Return a 4x4 MR image whose pixels all equal ``number``, its InstanceNumber."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientName = "Runner^Test"
    ds.PatientID = "RUNNER-TEST"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((4, 4), number, dtype=np.uint16).tobytes()
    return ds


def add_study(
    session: Session, spool_dir: Path, *, roles: tuple[str, ...] = ROLES, slices: int = 3, study_uid: str | None = None
) -> Study:
    """Write a study with one series per role into the spool and record it, as the receiver would."""
    study_uid = study_uid or generate_uid()
    study = session.query(Study).filter_by(study_instance_uid=study_uid).one_or_none()
    if study is None:
        study = Study(study_instance_uid=study_uid, notes={}, calling_ae_title="MODALITY", state=StudyState.COMPLETE)
        session.add(study)
        session.flush()
    for role in roles:
        series = Series(
            study_id=study.id,
            series_instance_uid=generate_uid(),
            modality="MR",
            role=role,
            instance_count=slices,
            role_evidence={"role": role, "summary": f"{role} by test rule", "matched": []},
        )
        session.add(series)
        session.flush()
        # Write the slices in reverse so the context's InstanceNumber order is checked.
        for number in range(slices, 0, -1):
            ds = mr_slice(study_uid, series.series_instance_uid, number)
            relative = Path(study_uid) / series.series_instance_uid / f"{ds.SOPInstanceUID}.dcm"
            (spool_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(spool_dir / relative, enforce_file_format=True)
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=ds.SOPInstanceUID,
                    sop_class_uid=MRImageStorage,
                    transfer_syntax_uid=ExplicitVRLittleEndian,
                    instance_number=number,
                    path=str(relative),
                    size_bytes=(spool_dir / relative).stat().st_size,
                    sha256=ds.SOPInstanceUID[-40:],
                )
            )
    session.flush()
    return study


def queue_study(session_factory: sessionmaker[Session], settings: Settings, **study_options: Any) -> int:
    """Record a complete study with a queued job and return the job id."""
    with session_scope(session_factory) as session:
        study = add_study(session, settings.storage.resolved_spool_dir, **study_options)
        job = jobs.note_study_activity(session, study, new_instance=True)
        jobs.transition(session, job, JobState.QUEUED, reason="study complete")
        return job.id


class ReportStep:
    """Reads the chosen series and writes one Basic Text SR listing them.

    Raises :class:`InputError` when the CE-T1 role is missing; with
    ``failure_report`` it returns the error with a failure SR instead.
    ``during_run`` is called inside :meth:`run`, for tests that act on the
    job while it runs.
    """

    def __init__(self, *, failure_report: bool = False, during_run: Callable[[JobContext], None] | None = None) -> None:
        self.failure_report = failure_report
        self.during_run = during_run
        self.contexts: list[JobContext] = []

    def run(self, context: JobContext) -> StepOutcome:
        """Read every chosen instance and report their InstanceNumbers per role."""
        started = time.perf_counter()
        self.contexts.append(context)
        if self.during_run is not None:
            self.during_run(context)

        numbers = {
            role: [int(dcmread(path).InstanceNumber) for path in series.paths] for role, series in context.series.items()
        }
        read_s = time.perf_counter() - started
        if "ce_t1" not in numbers:
            error = InputError("no CE-T1 series in the study", code="missing_role", hint="send the contrast-enhanced T1 series")
            if not self.failure_report:
                raise error
            report = basic_text_sr(context.study_instance_uid, text=f"not processed: {error}")
            return StepOutcome(outputs=[OutputObject(OutputKind.FAILURE_SR, report)], input_error=error)

        report = basic_text_sr(context.study_instance_uid, text=f"instance numbers per role: {numbers}")
        return StepOutcome(
            outputs=[OutputObject(OutputKind.SR, report)],
            result_summary={"instance_numbers": numbers},
            stage_seconds={"read": read_s},
        )


class BrokenStep:
    """A pipeline step with a fault: it raises ``RuntimeError``."""

    def run(self, context: JobContext) -> StepOutcome:
        """Raise ``RuntimeError`` naming the job."""
        raise RuntimeError(f"model file unreadable in job {context.job_id}")


def job_state(session_factory: sessionmaker[Session], job_id: int) -> JobState:
    """Return the job's current state."""
    with session_scope(session_factory) as session:
        return session.get(Job, job_id).state

"""Seed data for the dashboard tests: job rows, small CE-T1 files and a real SEG."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryAttempt, Instance, Job, JobEvent, Output, Series, Study
from db.session import session_scope
from db.states import DeliveryState, JobState, OutputKind, StudyState

SLICES = 5
SIZE = 64
TUMOUR_SLICE = 3
BASE_TIME = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
CHINESE_NAME = "Zhang^San=张^三"
FILLER_AES = ("CT_ROOM", "MR_ROOM")


@dataclass(frozen=True)
class SeededIds:
    """Ids of the seeded rows the tests look at."""

    done_study: int
    done_job: int
    failed_study: int
    failed_job: int
    failed_delivery: int
    waiting_study: int
    waiting_job: int
    filler_jobs: int


def make_ce_t1_slices(study_uid: str, series_uid: str) -> list[Dataset]:
    """Build axial 64x64 CE-T1 MR slices with a bright blob on slice ``TUMOUR_SLICE``."""
    frame_uid = generate_uid()
    slices = []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for index in range(SLICES):
        pixels = (200 + 50 * np.sin(xx / 6.0) + 40 * np.cos(yy / 7.0)).astype(np.uint16)
        if index == TUMOUR_SLICE:
            pixels[(yy - 30) ** 2 + (xx - 34) ** 2 < 64] = 900
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = MRImageStorage
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Patient"
        ds.PatientID = "DASH001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "F"
        ds.StudyDate = "20260302"
        ds.StudyTime = "080000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.Manufacturer = "test"
        ds.SeriesNumber = 3
        ds.InstanceNumber = index + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(index * 4)]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = 4.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
        slices.append(ds)
    return slices


def make_seg(slices: list[Dataset]) -> Dataset:
    """Build a binary tumour SEG on ``slices`` whose mask is the blob of ``TUMOUR_SLICE``."""
    mask = np.zeros((len(slices), SIZE, SIZE), dtype=bool)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    mask[TUMOUR_SLICE] = (yy - 30) ** 2 + (xx - 34) ** 2 < 64
    mask[TUMOUR_SLICE - 1] = (yy - 30) ** 2 + (xx - 34) ** 2 < 9
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        source_images=slices,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="dashboard test",
        software_versions="0",
        device_serial_number="0",
    )


def _event(job: Job, minutes: float, from_state: JobState | None, to_state: JobState | None, reason: str, actor: str = "node") -> JobEvent:
    return JobEvent(
        job_id=job.id,
        at=BASE_TIME + dt.timedelta(minutes=minutes),
        from_state=None if from_state is None else from_state.value,
        to_state=None if to_state is None else to_state.value,
        reason=reason,
        actor=actor,
        details={},
    )


def _study(uid: str, ae: str, minutes: float, **values: object) -> Study:
    at = BASE_TIME + dt.timedelta(minutes=minutes)
    return Study(
        study_instance_uid=uid,
        calling_ae_title=ae,
        first_received_at=at,
        last_received_at=at,
        notes={},
        **values,
    )


def _series(study: Study, uid: str, role: str | None, number: int, description: str, count: int) -> Series:
    evidence = {
        "role": role,
        "summary": f"taken as {role}" if role else "no role: no rule matched",
        "matched": [f"SeriesDescription {description!r} names the sequence"],
        "rejected": [],
        "findings": {"orientation": "axial", "contrast": "post" if role == "ce_t1" else "none", "fat_suppressed": False},
    }
    return Series(
        study_id=study.id,
        series_instance_uid=uid,
        modality="MR",
        series_number=number,
        series_description=description,
        header={},
        instance_count=count,
        role=role,
        role_evidence=evidence,
    )


def _seed_done_study(session: Session, spool_dir: Path, outputs_dir: Path) -> tuple[int, int]:
    study_uid = generate_uid()
    study = _study(
        study_uid, "PACS_A", 0, patient_name=CHINESE_NAME, patient_id="P12345", accession_number="ACC1",
        study_date="20260302", study_description="Tongue MRI", state=StudyState.COMPLETE, instance_count=SLICES + 2,
    )
    session.add(study)
    session.flush()

    ce_uid = generate_uid()
    ce_series = _series(study, ce_uid, "ce_t1", 3, "T1 FS POST GD", SLICES)
    session.add_all([ce_series, _series(study, generate_uid(), "t2", 2, "T2 TSE", 1), _series(study, generate_uid(), "t1", 1, "T1 TSE", 1)])
    session.flush()

    slices = make_ce_t1_slices(study_uid, ce_uid)
    folder = spool_dir / study_uid / ce_uid
    folder.mkdir(parents=True, exist_ok=True)
    for ds in slices:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        session.add(
            Instance(
                series_id=ce_series.id, sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=MRImageStorage,
                transfer_syntax_uid=ExplicitVRLittleEndian, instance_number=ds.InstanceNumber,
                path=str(path.relative_to(spool_dir)), size_bytes=path.stat().st_size, sha256="0" * 64,
                calling_ae_title="PACS_A", received_at=BASE_TIME,
            )
        )

    job = Job(
        study_id=study.id, state=JobState.DONE, created_at=BASE_TIME, queued_at=BASE_TIME + dt.timedelta(minutes=1),
        started_at=BASE_TIME + dt.timedelta(minutes=1), finished_at=BASE_TIME + dt.timedelta(minutes=3), attempts=1,
        input_series={}, result_summary={},
    )
    session.add(job)
    session.flush()
    session.add_all([
        _event(job, 0, None, JobState.WAITING, "first instance received"),
        _event(job, 1, JobState.WAITING, JobState.QUEUED, "study complete"),
        _event(job, 1.1, JobState.QUEUED, JobState.RUNNING, "picked up by worker"),
        _event(job, 2.5, JobState.RUNNING, JobState.DELIVERING, "2 object(s) written; sending to pacs"),
        _event(job, 3, JobState.DELIVERING, JobState.DONE, "delivered to every destination"),
    ])

    seg = make_seg(slices)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    seg_path = outputs_dir / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    session.add_all([
        Output(job_id=job.id, kind=OutputKind.SEG, sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
               series_instance_uid=seg.SeriesInstanceUID, path=str(seg_path)),
        Output(job_id=job.id, kind=OutputKind.SR, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
               sop_instance_uid=generate_uid(), series_instance_uid=generate_uid(), path=str(outputs_dir / "sr.dcm")),
    ])
    delivery = Delivery(
        job_id=job.id, destination="pacs", ae_title="PACS", host="127.0.0.1", port=11112,
        state=DeliveryState.DELIVERED, attempts=1, output_kinds=["seg", "sr"], delivered_at=BASE_TIME + dt.timedelta(minutes=3),
    )
    session.add(delivery)
    session.flush()
    session.add(DeliveryAttempt(delivery_id=delivery.id, at=BASE_TIME + dt.timedelta(minutes=3), outcome="delivered",
                                status=0, message="2 of 2 stored", duration_s=0.4))
    return study.id, job.id


def _seed_failed_study(session: Session) -> tuple[int, int, int]:
    study = _study(generate_uid(), "PACS_B", 10, patient_name="Li^Si", patient_id="P999", state=StudyState.INCOMPLETE, instance_count=20)
    session.add(study)
    session.flush()
    session.add(_series(study, generate_uid(), "t2", 2, "T2 TSE", 20))
    job = Job(
        study_id=study.id, state=JobState.FAILED_INPUT, created_at=BASE_TIME + dt.timedelta(minutes=10),
        finished_at=BASE_TIME + dt.timedelta(minutes=25), reason_code="missing_role",
        error_message="no series matched CE-T1", hint="Send the missing or complete series again, then retry the job from the dashboard.",
        input_series={}, result_summary={},
    )
    session.add(job)
    session.flush()
    session.add_all([
        _event(job, 10, None, JobState.WAITING, "first instance received"),
        _event(job, 25, JobState.WAITING, JobState.FAILED_INPUT, "no series matched CE-T1"),
    ])
    delivery = Delivery(
        job_id=job.id, destination="pacs", ae_title="PACS", host="127.0.0.1", port=11112,
        state=DeliveryState.FAILED, attempts=2, output_kinds=["failure_sr"], last_error="association rejected permanently",
    )
    session.add(delivery)
    session.flush()
    for attempt in range(2):
        session.add(DeliveryAttempt(delivery_id=delivery.id, at=BASE_TIME + dt.timedelta(minutes=26 + attempt),
                                    outcome="permanent", status=None, message="association rejected permanently", duration_s=0.1))
    return study.id, job.id, delivery.id


def _seed_waiting_study(session: Session) -> tuple[int, int]:
    study = _study(generate_uid(), "PACS_A", 30, patient_name="Wang^Wu", patient_id="P777", state=StudyState.RECEIVING, instance_count=3)
    session.add(study)
    session.flush()
    job = Job(study_id=study.id, state=JobState.WAITING, created_at=BASE_TIME + dt.timedelta(minutes=30), input_series={}, result_summary={})
    session.add(job)
    session.flush()
    session.add(_event(job, 30, None, JobState.WAITING, "first instance received"))
    return study.id, job.id


def _seed_filler(session: Session, count: int) -> None:
    # Older jobs on other days, for paging and the date filter.
    for index in range(count):
        created = BASE_TIME - dt.timedelta(days=1 + index % 3, minutes=index)
        study = _study(generate_uid(), FILLER_AES[index % 2], 0, patient_name=f"Filler^{index}", patient_id=f"F{index}",
                       state=StudyState.COMPLETE, instance_count=1)
        study.first_received_at = study.last_received_at = created
        session.add(study)
        session.flush()
        session.add(Job(study_id=study.id, state=JobState.DONE, created_at=created, started_at=created,
                        finished_at=created + dt.timedelta(seconds=90), input_series={}, result_summary={}))


def seed_database(session_factory: sessionmaker[Session], spool_dir: Path, outputs_dir: Path, *, filler: int = 60) -> SeededIds:
    """Fill a migrated database with a done, a failed-input and a waiting study plus ``filler`` older jobs."""
    with session_scope(session_factory) as session:
        _seed_filler(session, filler)
        done_study, done_job = _seed_done_study(session, spool_dir, outputs_dir)
        failed_study, failed_job, failed_delivery = _seed_failed_study(session)
        waiting_study, waiting_job = _seed_waiting_study(session)
    return SeededIds(done_study, done_job, failed_study, failed_job, failed_delivery, waiting_study, waiting_job, filler)


def read_seg(path: Path) -> Dataset:
    """Read a SEG file back, for checks on the seeded output."""
    return pydicom.dcmread(path)

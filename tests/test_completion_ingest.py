"""Completion of studies stored through the ingestor, with Enhanced MR and real headers."""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.roles import EnhancementRules
from config.settings import Settings
from db.models import Job, Series, Study
from db.states import JobState, StudyState
from dicom_node.completion import CompletionScheduler, as_utc
from dicom_node.enhancement_check import load_volume
from dicom_node.ingest import Ingestor, Sender
from dicom_node.spool import Spool

ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SENDER = Sender(ae_title="PACS", host="127.0.0.1")
HEIGHTS = [3.0 * index for index in range(6)]
MPRAGE = Path("mr_dicom_series/philips_3T_T1_mprage_sag3d")


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        storage={"data_dir": tmp_path, "fsync": False},
        assembly={"quiet_period_s": 0.2, "force_complete_s": 5.0},
    )


def _file_meta(dataset: Dataset) -> None:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image_module(dataset: Dataset, frames: int) -> None:
    dataset.Rows = dataset.Columns = 32
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.full((frames, 32, 32), 300, dtype=np.uint16).tobytes()


def _mr_slices(
    study_uid: str, frame_uid: str, description: str, number: int, timing: tuple[float, float], acquired: str
) -> list[Dataset]:
    series_uid = generate_uid()
    slices = []
    for index, height in enumerate(HEIGHTS):
        dataset = Dataset()
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = generate_uid()
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.Modality = "MR"
        dataset.SeriesDescription = description
        dataset.SeriesNumber = number
        dataset.InstanceNumber = index + 1
        dataset.RepetitionTime, dataset.EchoTime = timing
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        dataset.AcquisitionTime = acquired
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [-32.0, -32.0, height]
        dataset.PixelSpacing = [2.0, 2.0]
        _image_module(dataset, 1)
        _file_meta(dataset)
        slices.append(dataset)
    return slices


def _enhanced_mr(study_uid: str, frame_uid: str, heights: list[float]) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = generate_uid()
    dataset.FrameOfReferenceUID = frame_uid
    dataset.Modality = "MR"
    dataset.SeriesDescription = "T1W_TSE_TRA_GD"
    dataset.SeriesNumber = 801
    dataset.InstanceNumber = 1
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    dataset.ContrastBolusAgent = "Gadovist"
    dataset.AcquisitionDateTime = "20261204103000"
    dataset.NumberOfFrames = len(heights)

    shared = Dataset()
    orientation, measures, timing, echo = Dataset(), Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [2.0, 2.0]
    measures.SliceThickness = 3.0
    timing.RepetitionTime = 600.0
    echo.EffectiveEchoTime = 10.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.MREchoSequence = Sequence([echo])
    dataset.SharedFunctionalGroupsSequence = Sequence([shared])

    frames = []
    for height in heights:
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = [-32.0, -32.0, height]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = Sequence(frames)
    _image_module(dataset, len(heights))
    _file_meta(dataset)
    return dataset


def _store(ingestor: Ingestor, datasets: list[Dataset]) -> None:
    for dataset in datasets:
        result = ingestor.store(dataset, _encoded(dataset), requested_sop_class=str(dataset.SOPClassUID), sender=SENDER)
        assert result.status == 0x0000


def _send_study(tmp_path: Path, factory: sessionmaker[Session], ce_heights: list[float]) -> str:
    settings = _settings(tmp_path)
    ingestor = Ingestor(Spool(settings.storage.resolved_spool_dir, fsync=False), factory, min_free_mb=0)
    study_uid, frame_uid = generate_uid(), generate_uid()
    _store(ingestor, _mr_slices(study_uid, frame_uid, "T1W_TSE_TRA", 501, (550.0, 12.0), "100500"))
    _store(ingestor, _mr_slices(study_uid, frame_uid, "T2W_TSE_SPAIR", 601, (4000.0, 100.0), "101000"))
    _store(ingestor, [_enhanced_mr(study_uid, frame_uid, ce_heights)])
    return study_uid


def _study_and_job(factory: sessionmaker[Session], study_uid: str) -> tuple[Study, Job]:
    with factory() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        job = session.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.id.desc())).first()
        return study, job


def test_ingested_enhanced_study_queued(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    study_uid = _send_study(tmp_path, session_factory, HEIGHTS)
    study, _ = _study_and_job(session_factory, study_uid)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    outcomes = scheduler.check_studies(as_utc(study.last_received_at) + dt.timedelta(seconds=0.3))
    study, job = _study_and_job(session_factory, study_uid)

    assert [outcome.action.value for outcome in outcomes] == ["queued"]
    assert job.state is JobState.QUEUED
    assert study.state is StudyState.COMPLETE
    with session_factory() as session:
        roles = {series.series_description: series.role for series in session.scalars(select(Series))}
    assert roles == {"T1W_TSE_TRA": "t1", "T2W_TSE_SPAIR": "t2", "T1W_TSE_TRA_GD": "ce_t1"}


def test_ingested_enhanced_frame_gap_fails(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    study_uid = _send_study(tmp_path, session_factory, [height for height in HEIGHTS if height != 6.0])
    study, _ = _study_and_job(session_factory, study_uid)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    scheduler.check_studies(as_utc(study.last_received_at) + dt.timedelta(seconds=6.0))
    _, job = _study_and_job(session_factory, study_uid)

    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "slice_gap"
    assert "'T1W_TSE_TRA_GD'" in job.error_message
    assert "missing slice between z=3.0 and z=9.0 mm, expected spacing 3.0 mm" in job.error_message


def test_enhanced_frames_load_as_volume(tmp_path: Path) -> None:
    dataset = _enhanced_mr(generate_uid(), generate_uid(), list(reversed(HEIGHTS)))
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_encoded(dataset))

    volume = load_volume([path], EnhancementRules())

    assert volume.pixels.shape == (6, 32, 32)
    assert list(volume.positions[:, 2]) == HEIGHTS
    assert volume.row_spacing == pytest.approx(2.0)


def test_real_mprage_study_fails_naming_roles(
    session_factory: sessionmaker[Session], tmp_path: Path, test_data_dir: Path
) -> None:
    files = sorted((test_data_dir / MPRAGE).glob("*.dcm.gz"))[:20]
    if not files:
        pytest.skip(f"{MPRAGE} not found in the public test data at {test_data_dir}")
    settings = _settings(tmp_path)
    ingestor = Ingestor(Spool(settings.storage.resolved_spool_dir, fsync=False), session_factory, min_free_mb=0)
    for path in files:
        with gzip.open(path, "rb") as stream:
            encoded = stream.read()
        dataset = pydicom.dcmread(io.BytesIO(encoded))
        result = ingestor.store(dataset, encoded, requested_sop_class=str(dataset.SOPClassUID), sender=SENDER)
        assert result.status == 0x0000
    study_uid = str(dataset.StudyInstanceUID)
    study, _ = _study_and_job(session_factory, study_uid)

    CompletionScheduler(settings, session_factory).check_studies(as_utc(study.last_received_at) + dt.timedelta(seconds=6.0))
    _, job = _study_and_job(session_factory, study_uid)

    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "missing_role"
    assert job.error_message.startswith("Required series CE-T1, T2, T1 not received within 5 s")
    assert "'ADNI_Sag3D MPRAGE'" in job.error_message
    assert "sagittal slices" in job.error_message

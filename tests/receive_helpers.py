"""Synthetic MR files and an in-process SCP for the receive tests and the ingest benchmark."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, UID, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from config.settings import NodeSettings
from db.migrate import upgrade_to_head
from db.session import create_db_engine, make_session_factory
from dicom_node.ingest import Ingestor
from dicom_node.scp import StorageScp
from dicom_node.spool import Spool

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
NODE_AE = "OTSCC_NODE"
SENDER_AE = "STORESCU"


@dataclass(frozen=True)
class SeriesSpec:
    """A synthetic series: its number, description and the timing of its sequence."""

    number: int
    description: str
    repetition_time: float
    echo_time: float
    contrast_agent: str | None = None


def _file_meta(sop_class: UID, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _patient_and_study(ds: Dataset, study_uid: str, patient_name: str, character_set: str | None) -> None:
    if character_set is not None:
        ds.SpecificCharacterSet = character_set
    ds.PatientName = patient_name
    ds.PatientID = "PHANTOM-001"
    ds.PatientSex = "F"
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC-1"
    ds.StudyDescription = "MR tongue"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "OTSCC test generator"
    ds.ManufacturerModelName = "pydicom"


def phantom_pixels(rows: int, columns: int, index: int, bits: int = 16) -> np.ndarray:
    """Return a deterministic test image with structure, so compressed files are not trivial."""
    y, x = np.mgrid[0:rows, 0:columns]
    top = 255 if bits == 8 else 4000
    image = (x * 7 + y * 3 + index * 11) % (top // 2) + ((x - columns / 2) ** 2 + (y - rows / 2) ** 2 < (rows / 4) ** 2) * (top // 3)
    dtype = np.uint8 if bits == 8 else np.uint16
    return image.astype(dtype)


def make_mr_slice(
    study_uid: str,
    series_uid: str,
    spec: SeriesSpec,
    index: int,
    *,
    rows: int = 64,
    columns: int = 64,
    bits: int = 16,
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.1",
    patient_name: str = "Phantom^Tongue",
    character_set: str | None = "ISO_IR 100",
) -> Dataset:
    """Return a single-frame MR Image Storage dataset, axial, 3 mm slices."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(MR_IMAGE_STORAGE, sop_uid)
    _patient_and_study(ds, study_uid, patient_name, character_set)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = spec.number
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.description
    ds.SeriesTime = "101500"
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = spec.repetition_time
    ds.EchoTime = spec.echo_time
    ds.FlipAngle = 90
    if spec.contrast_agent:
        ds.ContrastBolusAgent = spec.contrast_agent
        ds.ContrastBolusRoute = "IV"
    ds.SliceThickness = 3.0
    ds.SpacingBetweenSlices = 3.0
    ds.ImagePositionPatient = [-100.0, -100.0, index * 3.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [200.0 / rows, 200.0 / columns]
    ds.BodyPartExamined = "HEADNECK"
    _set_pixels(ds, phantom_pixels(rows, columns, index, bits), bits)
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def make_enhanced_mr(study_uid: str, series_uid: str, frames: int = 4, rows: int = 32, columns: int = 32) -> Dataset:
    """Return an Enhanced MR Image Storage dataset whose timing and geometry sit in functional groups."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(ENHANCED_MR_IMAGE_STORAGE, sop_uid)
    _patient_and_study(ds, study_uid, "Phantom^Enhanced", "ISO_IR 100")
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 7
    ds.SeriesDescription = "T2 enhanced"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.AcquisitionDateTime = "20260101101500"
    ds.NumberOfFrames = frames

    timing = Dataset()
    timing.RepetitionTime = 4000.0
    timing.FlipAngle = 90.0
    echo = Dataset()
    echo.EffectiveEchoTime = 95.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    measures = Dataset()
    measures.SliceThickness = 4.0
    measures.PixelSpacing = [0.5, 0.5]
    shared = Dataset()
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.MREchoSequence = Sequence([echo])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    per_frame = []
    for frame in range(frames):
        position = Dataset()
        position.ImagePositionPatient = [-8.0, -8.0, frame * 4.0]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    stack = np.stack([phantom_pixels(rows, columns, frame) for frame in range(frames)])
    _set_pixels(ds, stack, 16)
    return ds


def write_series(
    folder: Path,
    spec: SeriesSpec,
    count: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    **slice_options: object,
) -> list[Path]:
    """Write ``count`` slices of one series into ``folder``; return their paths in order."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = make_mr_slice(study_uid, series_uid, spec, index, **slice_options)
        path = folder / f"{spec.number:02d}_{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def node_settings(port: int = 0, **overrides: object) -> NodeSettings:
    """Node settings for tests: loopback, a free port and short timeouts."""
    values: dict[str, object] = {
        "ae_title": NODE_AE,
        "bind_address": "127.0.0.1",
        "port": port,
        "acse_timeout_s": 10.0,
        "dimse_timeout_s": 30.0,
        "network_timeout_s": 30.0,
    }
    values.update(overrides)
    return NodeSettings(**values)


@contextmanager
def running_scp(
    spool_dir: Path,
    session_factory: sessionmaker[Session],
    settings: NodeSettings | None = None,
    *,
    min_free_mb: int = 0,
) -> Iterator[StorageScp]:
    """Run a storage SCP in this process for the duration of the ``with`` block."""
    ingestor = Ingestor(Spool(spool_dir), session_factory, min_free_mb=min_free_mb)
    scp = StorageScp(settings or node_settings(), ingestor)
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


def utc_now() -> dt.datetime:
    """Return the current UTC time."""
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def sqlite_session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A session factory on a migrated SQLite database, for tests that need one backend only."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()

"""Header builders and DICOM writers for the role and completion tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from db.models import Instance, Series, Study

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
HEADER_KEYWORDS = (
    "Modality", "SeriesDescription", "ProtocolName", "SeriesNumber", "ContrastBolusAgent",
    "ContrastBolusRoute", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "ImageType",
    "ImageOrientationPatient", "ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName",
    "MRAcquisitionType", "SliceThickness", "SpacingBetweenSlices", "Rows", "Columns",
    "AcquisitionTime", "SeriesTime", "ContentTime", "Manufacturer", "ManufacturerModelName",
    "BodyPartExamined", "FrameOfReferenceUID", "SOPClassUID",
)


def mr_header(**values: Any) -> dict[str, Any]:
    """Return an axial T1 spin-echo header without contrast, with ``values`` replacing its keys."""
    header: dict[str, Any] = {
        "Modality": "MR",
        "SeriesDescription": "",
        "ProtocolName": "",
        "SeriesNumber": 3,
        "ContrastBolusAgent": "",
        "RepetitionTime": 550.0,
        "EchoTime": 12.0,
        "InversionTime": None,
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "ImageOrientationPatient": list(AXIAL),
        "ScanningSequence": "SE",
        "MRAcquisitionType": "2D",
        "SliceThickness": 3.0,
        "AcquisitionTime": "101500",
        "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.1",
        "SOPClassUID": MR_IMAGE_STORAGE,
        "Manufacturer": "SIEMENS",
    }
    header.update(values)
    return header


def t2_header(**values: Any) -> dict[str, Any]:
    """Return an axial T2 turbo spin-echo header, with ``values`` replacing its keys."""
    return mr_header(**{"RepetitionTime": 4200.0, "EchoTime": 95.0, "SeriesDescription": "t2_tse_tra", **values})


def header_from_dataset(dataset: pydicom.Dataset) -> dict[str, Any]:
    """Extract the header keys that ingest stores, from the first instance of a series."""
    header: dict[str, Any] = {}
    for keyword in HEADER_KEYWORDS:
        value = dataset.get(keyword)
        if value is None or value == "":
            header[keyword] = None
        elif isinstance(value, pydicom.multival.MultiValue):
            header[keyword] = [_plain(item) for item in value]
        else:
            header[keyword] = _plain(value)
    return header


def _plain(value: Any) -> Any:
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal)):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    return value if isinstance(value, (int, float)) else str(value)


def add_study(session: Any, *, last_received_at: dt.datetime, study_uid: str | None = None) -> Study:
    """Insert a receiving study and flush."""
    study = Study(
        study_instance_uid=study_uid or generate_uid(),
        first_received_at=last_received_at,
        last_received_at=last_received_at,
        notes={},
    )
    session.add(study)
    session.flush()
    return study


def add_series(
    session: Any,
    study: Study,
    header: dict[str, Any],
    z_positions: Sequence[float],
    *,
    paths: Sequence[str] | None = None,
    received_at: dt.datetime | None = None,
) -> Series:
    """Insert a single-frame series with one instance per z position, and flush."""
    uid = generate_uid()
    series = Series(
        study_id=study.id,
        series_instance_uid=uid,
        modality="MR",
        series_description=header.get("SeriesDescription"),
        frame_of_reference_uid=header.get("FrameOfReferenceUID"),
        header=header,
        instance_count=len(z_positions),
        role_evidence={},
    )
    session.add(series)
    session.flush()
    orientation = header.get("ImageOrientationPatient") or AXIAL
    for index, z in enumerate(z_positions):
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=generate_uid(),
                sop_class_uid=MR_IMAGE_STORAGE,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                instance_number=index + 1,
                image_orientation_patient=list(orientation),
                frame_positions=[_position(orientation, z)],
                path=paths[index] if paths else f"{uid}/{index}.dcm",
                size_bytes=1,
                sha256=f"{index:064d}",
                received_at=received_at or study.last_received_at,
            )
        )
    study.instance_count += len(z_positions)
    session.flush()
    return series


def _position(orientation: Sequence[float], height: float) -> list[float]:
    normal = np.cross(orientation[:3], orientation[3:])
    return [float(value) for value in np.array([-50.0, -60.0, 0.0]) + height * normal]


def write_mr_slices(
    folder: Path,
    pixels: np.ndarray,
    header: dict[str, Any],
    *,
    z_positions: Sequence[float],
    series_uid: str,
    study_uid: str,
    pixel_spacing: float = 2.0,
) -> list[Path]:
    """Write ``pixels`` ([slice, row, column], uint16) as axial MR Image Storage files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, z in enumerate(z_positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{index:03d}.dcm"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = MR_IMAGE_STORAGE
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = header["FrameOfReferenceUID"]
        dataset.Modality = "MR"
        dataset.InstanceNumber = index + 1
        dataset.ImageOrientationPatient = list(AXIAL)
        dataset.ImagePositionPatient = _position(AXIAL, z)
        dataset.PixelSpacing = [pixel_spacing, pixel_spacing]
        dataset.SliceThickness = 3.0
        dataset.Rows, dataset.Columns = pixels.shape[1:]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        dataset.PixelData = np.ascontiguousarray(pixels[index], dtype=np.uint16).tobytes()
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths

"""Synthetic MR studies and pipeline results for the sr_writer tests.

The studies are small (64 x 64 x 8 by default) and built from scratch with
pydicom, so that the tests control the orientation, the character set and
the patient's name exactly.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree
from pydicom.dataset import FileMetaDataset
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from inference.result import (
    GridGeometry,
    ModelIdentity,
    NomogramResult,
    PipelineResult,
    RadiomicsResult,
    Segmentation,
    SequenceRole,
    SeriesUsed,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Column cosine [0, -1, 0]: the row index grows towards anterior, as in an
# axial image stored upside down.
NEGATED_COLUMNS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
_C, _S = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
OBLIQUE = (1.0, 0.0, 0.0, 0.0, float(_C), float(-_S))


@dataclass
class SyntheticStudy:
    """A synthetic study: its input datasets by role and a pipeline result on them."""

    sources: dict[SequenceRole, list[pydicom.Dataset]]
    result: PipelineResult


def tumour_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Return an off-centre ellipsoid ``uint8`` mask indexed [z, y, x], asymmetric in every axis."""
    z, y, x = np.indices(shape)
    depth, rows, columns = shape
    centre = (depth * 0.45, rows * 0.4, columns * 0.6)
    radii = (max(depth * 0.25, 1.0), rows * 0.15, columns * 0.1)
    inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip((z, y, x), centre, radii)) <= 1.0
    return inside.astype(np.uint8)


def make_series(
    *,
    study_uid: str,
    role: SequenceRole,
    shape: tuple[int, int, int],
    orientation: Sequence[float],
    spacing: tuple[float, float, float],
    patient_name: str,
    character_set: str,
    frame_of_reference_uid: str,
    series_number: int,
    mask: np.ndarray | None = None,
) -> list[pydicom.Dataset]:
    """Build one single-frame MR series, slice 0 first, with a bright blob where ``mask`` is set."""
    depth, rows, columns = shape
    row_cosine = np.array(orientation[:3])
    column_cosine = np.array(orientation[3:])
    normal = np.cross(row_cosine, column_cosine)
    origin = np.array([-25.0, -30.0, 40.0])
    series_uid = generate_uid()
    rng = np.random.default_rng(series_number)
    datasets = []
    for k in range(depth):
        pixels = rng.integers(200, 400, size=(rows, columns), dtype=np.uint16)
        if mask is not None:
            pixels[mask[k] > 0] += 800
        position = origin + k * spacing[2] * normal
        datasets.append(
            _mr_slice(
                study_uid=study_uid,
                series_uid=series_uid,
                role=role,
                position=position,
                orientation=orientation,
                spacing=spacing,
                pixels=pixels,
                instance_number=k + 1,
                patient_name=patient_name,
                character_set=character_set,
                frame_of_reference_uid=frame_of_reference_uid,
                series_number=series_number,
            )
        )
    return datasets


def _mr_slice(
    *,
    study_uid: str,
    series_uid: str,
    role: SequenceRole,
    position: np.ndarray,
    orientation: Sequence[float],
    spacing: tuple[float, float, float],
    pixels: np.ndarray,
    instance_number: int,
    patient_name: str,
    character_set: str,
    frame_of_reference_uid: str,
    series_number: int,
) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage

    ds.SpecificCharacterSet = character_set
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    ds.Modality = "MR"
    ds.PatientName = patient_name
    ds.PatientID = "SYN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MR tongue"

    ds.SeriesDescription = {"ce_t1": "T1 FS +C", "t2": "T2 TSE", "t1": "T1 TSE"}[role.value]
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "Synthetic"

    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTrainLength = 1
    ds.RepetitionTime = 500.0
    ds.EchoTime = 10.0
    ds.MagneticFieldStrength = 3.0

    ds.SliceThickness = spacing[2]
    ds.SpacingBetweenSlices = spacing[2]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [spacing[1], spacing[0]]

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def make_models(is_demo: bool = True) -> list[ModelIdentity]:
    """Return a segmentation model and a nomogram model identity."""
    training = "synthetic phantoms" if is_demo else "institutional cohort"
    return [
        ModelIdentity(
            name="otscc-unet",
            version="0.1.0",
            kind="segmentation",
            sha256="a" * 64,
            is_demo=is_demo,
            training_data=training,
            intended_use="research",
        ),
        ModelIdentity(
            name="otscc-nomogram",
            version="0.1.0",
            kind="nomogram",
            sha256="b" * 64,
            is_demo=is_demo,
            training_data=training,
            intended_use="research",
        ),
    ]


def make_study(
    *,
    shape: tuple[int, int, int] = (8, 64, 64),
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float, float] = (0.8, 0.8, 3.0),
    patient_name: str = "Doe^Jane",
    character_set: str = "ISO_IR 192",
    empty: bool = False,
    probability: float | None = 0.42,
    missing_inputs: Sequence[str] = ("depth_of_invasion_mm",),
    is_demo: bool = True,
) -> SyntheticStudy:
    """Build a three-series synthetic study and a PipelineResult whose mask lies on its CE-T1 series."""
    study_uid = generate_uid()
    frame_uid = generate_uid()
    mask = np.zeros(shape, np.uint8) if empty else tumour_mask(shape)
    sources = {}
    for number, role in enumerate(SequenceRole, start=3):
        sources[role] = make_series(
            study_uid=study_uid,
            role=role,
            shape=shape,
            orientation=orientation,
            spacing=spacing,
            patient_name=patient_name,
            character_set=character_set,
            frame_of_reference_uid=frame_uid,
            series_number=number,
            mask=mask,
        )
    result = _result(study_uid, sources, mask, orientation, spacing, probability, missing_inputs, is_demo)
    return SyntheticStudy(sources=sources, result=result)


def _result(
    study_uid: str,
    sources: dict[SequenceRole, list[pydicom.Dataset]],
    mask: np.ndarray,
    orientation: Sequence[float],
    spacing: tuple[float, float, float],
    probability: float | None,
    missing_inputs: Sequence[str],
    is_demo: bool,
) -> PipelineResult:
    ce_t1 = sources[SequenceRole.CE_T1]
    row_cosine = np.array(orientation[:3])
    column_cosine = np.array(orientation[3:])
    direction = np.column_stack([row_cosine, column_cosine, np.cross(row_cosine, column_cosine)])
    geometry = GridGeometry(
        origin=tuple(float(v) for v in ce_t1[0].ImagePositionPatient),
        spacing=spacing,
        direction=tuple(float(v) for v in direction.ravel()),
        size=(mask.shape[2], mask.shape[1], mask.shape[0]),
    )
    voxel_volume = float(np.prod(spacing))

    series = {
        role: SeriesUsed(
            role=role,
            series_instance_uid=str(datasets[0].SeriesInstanceUID),
            sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in datasets),
            frame_of_reference_uid=str(datasets[0].FrameOfReferenceUID),
            series_description=str(datasets[0].SeriesDescription),
        )
        for role, datasets in sources.items()
    }

    empty = not mask.any()
    nomogram = None
    risk_group = None
    if probability is not None:
        risk_group = "high" if probability >= 0.35 else "low"
    if not empty:
        nomogram = NomogramResult(
            probability=probability,
            risk_group=risk_group,
            cutoff=0.35,
            radiomics_score=1.234,
            missing_inputs=list(missing_inputs),
            imputed_inputs=list(missing_inputs) if probability is not None else [],
        )

    return PipelineResult(
        study_instance_uid=study_uid,
        series=series,
        segmentation=Segmentation(
            mask=mask,
            geometry=geometry,
            source_sop_instance_uids=series[SequenceRole.CE_T1].sop_instance_uids,
            volume_mm3=float(mask.sum()) * voxel_volume,
            max_diameter_mm=0.0 if empty else 19.5,
        ),
        radiomics=RadiomicsResult(status="skipped" if empty else "ok"),
        nomogram=nomogram,
        models=make_models(is_demo),
        notes=[],
        stage_seconds={"segmentation": 1.0},
    )


# Read-back helpers: voxel positions in patient coordinates (LPS, mm).

DCMQI_BIN = Path(sys.executable).parent
JS_DIR = Path(__file__).resolve().parent / "js"
TOOL_TIMEOUT_S = 120


def source_mask_points(ce_t1: Sequence[pydicom.Dataset], mask: np.ndarray) -> np.ndarray:
    """Return the LPS centre of every mask voxel, using the source slices' own geometry."""
    points = []
    for k, ds in enumerate(ce_t1):
        rows, columns = np.nonzero(mask[k])
        points.append(_plane_points(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing, rows, columns))
    return np.concatenate(points)


def seg_mask_points(seg: pydicom.Dataset) -> np.ndarray:
    """Return the LPS centre of every segmented voxel, from the SEG's functional groups alone."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    points = []
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        rows, columns = np.nonzero(frame)
        position = item.PlanePositionSequence[0].ImagePositionPatient
        points.append(_plane_points(position, orientation, spacing, rows, columns))
    return np.concatenate(points)


def image_mask_points(path: Path) -> np.ndarray:
    """Return the LPS centre of every non-zero voxel of an ITK image file (NRRD, NIfTI)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    indices = np.argwhere(array > 0)
    return np.array(
        [image.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]) for index in indices]
    )


def _plane_points(
    position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    rows: np.ndarray,
    columns: np.ndarray,
) -> np.ndarray:
    # PS3.3 C.7.6.2.1.1: PixelSpacing is (row spacing, column spacing).
    origin = np.array(position, dtype=float)
    row_cosine = np.array(orientation[:3], dtype=float)
    column_cosine = np.array(orientation[3:], dtype=float)
    return (
        origin
        + np.outer(columns * float(pixel_spacing[1]), row_cosine)
        + np.outer(rows * float(pixel_spacing[0]), column_cosine)
    )


def max_point_mismatch_mm(expected: np.ndarray, actual: np.ndarray) -> float:
    """Return the largest distance from a point of either set to the nearest point of the other."""
    forward = cKDTree(actual).query(expected)[0].max()
    backward = cKDTree(expected).query(actual)[0].max()
    return float(max(forward, backward))


def dcmqi_tool(name: str) -> Path:
    """Return the path of a dcmqi command-line tool, skipping the test where it is not installed."""
    path = DCMQI_BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"dcmqi's {name} is not installed; install the dcmqi package from PyPI")
        path = Path(found)
    return path


def run_tool(command: Sequence[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool with a deadline and fail the test with its output if it fails."""
    completed = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=cwd,
    )
    assert completed.returncode == 0, f"{command[0]} failed: {completed.stdout}\n{completed.stderr}"
    return completed


def save(ds: pydicom.Dataset, folder: Path, name: str) -> Path:
    """Write a dataset as a DICOM file and return its path."""
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def ensure_dcmjs() -> Path:
    """Return tests/js with dcmjs installed, running ``npm ci`` once; skip where npm is missing."""
    if (JS_DIR / "node_modules" / "dcmjs").is_dir():
        return JS_DIR
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed; they are needed to read the SEG with dcmjs")
    try:
        completed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR, capture_output=True, text=True, timeout=240, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci in tests/js timed out after 240 s; install dcmjs there by hand")
    if completed.returncode != 0:
        pytest.skip(f"npm ci in tests/js failed, so dcmjs is unavailable: {completed.stderr[-500:]}")
    return JS_DIR


def content_items(item: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Return the children of an SR content item (empty for a leaf)."""
    return list(item.get("ContentSequence", []))


def concept_name(item: pydicom.Dataset) -> str:
    """Return the code meaning of a content item's concept name, lower case ('' if none)."""
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeMeaning).lower() if names else ""


def find_items(root: pydicom.Dataset, meaning: str) -> list[pydicom.Dataset]:
    """Return every content item below ``root`` whose concept name's meaning is ``meaning``."""
    found = []
    for child in content_items(root):
        if concept_name(child) == meaning.lower():
            found.append(child)
        found.extend(find_items(child, meaning))
    return found


# Enhanced MR (multi-frame) CE-T1 series.

def make_enhanced_study(frame_order: Sequence[int] | None = None, **study_options: object) -> tuple[SyntheticStudy, list[pydicom.Dataset]]:
    """Build a study whose CE-T1 series is one Enhanced MR instance, and the single-frame slices it was made of.

    ``frame_order[i]`` is the mask slice stored as frame ``i + 1``; the
    default reverses the slices, so that frame order differs from z order.
    The single-frame slices are returned as the geometric truth for tests.
    """
    study = make_study(**study_options)
    slices = study.sources[SequenceRole.CE_T1]
    order = list(frame_order) if frame_order is not None else list(range(len(slices)))[::-1]
    enhanced = enhanced_mr_from_slices(slices, order)
    study.sources[SequenceRole.CE_T1] = [enhanced]

    uid = str(enhanced.SOPInstanceUID)
    frame_of_slice = {k: frame + 1 for frame, k in enumerate(order)}
    study.result.series[SequenceRole.CE_T1] = replace(
        study.result.series[SequenceRole.CE_T1], sop_instance_uids=(uid,) * len(slices)
    )
    study.result.segmentation.source_sop_instance_uids = (uid,) * len(slices)
    study.result.segmentation.source_frame_numbers = tuple(frame_of_slice[k] for k in range(len(slices)))
    return study, slices


def enhanced_mr_from_slices(slices: Sequence[pydicom.Dataset], order: Sequence[int]) -> pydicom.Dataset:
    """Merge single-frame MR slices into one Enhanced MR instance, slice ``order[i]`` as frame ``i + 1``."""
    first = slices[0]
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for keyword in _ENHANCED_COPIED:
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(order)

    measures = pydicom.Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = pydicom.Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    shared = pydicom.Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for k in order:
        position = pydicom.Dataset()
        position.ImagePositionPatient = slices[k].ImagePositionPatient
        group = pydicom.Dataset()
        group.PlanePositionSequence = [position]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(slices[k].PixelData for k in order)
    return ds


_ENHANCED_COPIED = (
    "SpecificCharacterSet", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "Modality", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyDate", "SeriesDate", "ContentDate", "StudyTime", "SeriesTime",
    "ContentTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
    "SeriesDescription", "SeriesNumber", "Manufacturer", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation",
)

"""Build one 3D volume from the instances of an MR series.

:func:`load_series` reads single-frame MR instances or an Enhanced MR
multi-frame instance, orders the slices along the slice normal, checks that
they form one complete, evenly spaced stack, and returns a float32
SimpleITK image in LPS patient coordinates. Every problem with the input
raises :class:`~inference.errors.InputError` naming the series.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from inference.errors import InputError
from inference.geometry import (
    ORIENTATION_TOLERANCE,
    POSITION_TOLERANCE_MM,
    SliceGeometry,
    SpacingProblem,
    find_spacing_problem,
    grid_geometry,
    in_plane_offsets,
    resample_sheared,
    shear_step,
    slice_order,
    tilt_degrees,
)
from inference.result import GridGeometry

logger = logging.getLogger(__name__)

# Decoder package to install for each compressed transfer syntax, as pydicom
# 3.0 finds them.
DECODER_PACKAGES: dict[str, str] = {
    pydicom.uid.JPEGLSLossless: "pyjpegls",
    pydicom.uid.JPEGLSNearLossless: "pyjpegls",
    pydicom.uid.JPEG2000Lossless: "pylibjpeg-openjpeg",
    pydicom.uid.JPEG2000: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2KLossless: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2KLosslessRPCL: "pylibjpeg-openjpeg",
    pydicom.uid.HTJ2K: "pylibjpeg-openjpeg",
    pydicom.uid.JPEGBaseline8Bit: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGExtended12Bit: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGLossless: "pylibjpeg-libjpeg",
    pydicom.uid.JPEGLosslessSV1: "pylibjpeg-libjpeg",
    pydicom.uid.RLELossless: "pylibjpeg-rle",
}


@dataclass
class SeriesVolume:
    """One MR series as a 3D image with the instances behind its slices.

    Attributes
    ----------
    image : SimpleITK.Image
        float32 image in LPS millimetres, z along the slice normal.
    sop_instance_uids : tuple of str
        SOP Instance UID of the instance behind each z index. An Enhanced MR
        instance contributes its UID once per frame.
    frame_numbers : tuple of int or None
        1-based frame number inside a multi-frame instance for each z index,
        or None where the slice is a single-frame instance.
    series_instance_uid : str
        Series Instance UID shared by all instances.
    frame_of_reference_uid : str or None
        Frame of Reference UID, where the instances carry one.
    first_dataset : pydicom.Dataset
        Header of the first instance in z order, without Pixel Data.
    notes : list of str
        What was done to the data beyond reading it, such as shear resampling.
    """

    image: sitk.Image
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    frame_of_reference_uid: str | None
    first_dataset: Dataset
    notes: list[str] = field(default_factory=list)
    frame_numbers: tuple[int | None, ...] = ()

    @property
    def geometry(self) -> GridGeometry:
        """Patient geometry of :attr:`image`."""
        return grid_geometry(self.image)

    @property
    def series_description(self) -> str:
        """Series Description of the first instance, or an empty string."""
        return str(self.first_dataset.get("SeriesDescription", ""))


@dataclass
class _Frame:
    """One 2D slice read from an instance, before stacking."""

    sop_instance_uid: str
    frame_number: int | None
    geometry: SliceGeometry
    pixel_spacing: tuple[float, float]
    pixels: np.ndarray


def load_series(paths: Sequence[Path]) -> SeriesVolume:
    """Read the instances of one MR series into a :class:`SeriesVolume`.

    Parameters
    ----------
    paths : sequence of Path
        Files of the series, in any order. Single-frame and Enhanced MR
        multi-frame instances are accepted; a file repeating a SOP Instance
        UID already read is skipped.

    Raises
    ------
    InputError
        If a file is not DICOM, the instances belong to several series, the
        pixel data cannot be decoded, or the slices do not form one complete,
        evenly spaced stack of one orientation and size.
    """
    if not paths:
        raise InputError("no files were given for the series", code="empty_series")

    datasets = _read_datasets(paths)
    series_uid = _common_series_uid(datasets)
    frames: list[_Frame] = []
    for dataset in datasets:
        frames.extend(_frames_of(dataset, series_uid))
        # Pixel data is decoded into the frames, so the file's copy can go.
        del dataset.PixelData

    notes: list[str] = []
    image, order = _stack_frames(frames, series_uid, notes)
    sorted_frames = [frames[i] for i in order]
    first_uid = sorted_frames[0].sop_instance_uid
    first_dataset = next(d for d in datasets if d.SOPInstanceUID == first_uid)

    logger.info(
        "Loaded series %s: %d slices, size %s", series_uid, len(sorted_frames), image.GetSize()
    )
    return SeriesVolume(
        image=image,
        sop_instance_uids=tuple(f.sop_instance_uid for f in sorted_frames),
        series_instance_uid=series_uid,
        frame_of_reference_uid=first_dataset.get("FrameOfReferenceUID"),
        first_dataset=first_dataset,
        notes=notes,
        frame_numbers=tuple(f.frame_number for f in sorted_frames),
    )


def _read_datasets(paths: Sequence[Path]) -> list[Dataset]:
    datasets: dict[str, Dataset] = {}
    for path in paths:
        try:
            dataset = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError) as exc:
            raise InputError(
                f"file {path} could not be read as DICOM: {exc}", code="unreadable_file"
            ) from exc

        uid = dataset.get("SOPInstanceUID")
        if uid is None or "PixelData" not in dataset:
            raise InputError(
                f"file {path} has no SOP Instance UID or no Pixel Data, so it is not an image",
                code="not_an_image",
                series_instance_uid=dataset.get("SeriesInstanceUID"),
            )
        if uid in datasets:
            logger.warning("Skipped a second copy of SOP instance %s", uid)
            continue
        datasets[uid] = dataset
    return list(datasets.values())


def _common_series_uid(datasets: list[Dataset]) -> str:
    uids = {str(d.get("SeriesInstanceUID", "")) for d in datasets}
    if len(uids) != 1 or "" in uids:
        raise InputError(
            f"the files belong to {len(uids)} series ({sorted(uids)}); "
            "pass the files of exactly one series",
            code="mixed_series",
        )
    return uids.pop()


def _frames_of(dataset: Dataset, series_uid: str) -> list[_Frame]:
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise InputError(
            f"instance {dataset.SOPInstanceUID} has {dataset.SamplesPerPixel} samples per "
            "pixel, but MR volumes must be greyscale",
            code="unsupported_pixel_format",
            series_instance_uid=series_uid,
        )

    pixels = _decode_pixels(dataset, series_uid)
    if "PerFrameFunctionalGroupsSequence" in dataset:
        return _multiframe_frames(dataset, pixels, series_uid)

    slope, intercept = _rescale(dataset)
    return [
        _Frame(
            sop_instance_uid=str(dataset.SOPInstanceUID),
            frame_number=None,
            geometry=_slice_geometry(dataset, series_uid, where=f"instance {dataset.SOPInstanceUID}"),
            pixel_spacing=_pixel_spacing(dataset, series_uid),
            pixels=_apply_rescale(pixels, slope, intercept),
        )
    ]


def _decode_pixels(dataset: Dataset, series_uid: str) -> np.ndarray:
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        package = DECODER_PACKAGES.get(syntax, "a pydicom pixel data plugin for it")
        raise InputError(
            f"pixel data of instance {dataset.SOPInstanceUID} in series {series_uid} "
            f"could not be decoded from transfer syntax {syntax.name} ({syntax}): {exc}",
            code="undecodable_pixel_data",
            series_instance_uid=series_uid,
            hint=f"install {package} on the node, or have the sender use an uncompressed syntax",
        ) from exc


def _multiframe_frames(dataset: Dataset, pixels: np.ndarray, series_uid: str) -> list[_Frame]:
    # Enhanced MR keeps geometry in functional groups, per frame or shared
    # (PS3.3 C.7.6.16), not in top-level attributes.
    count = int(dataset.get("NumberOfFrames", 1))
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    shared = dataset.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = dataset.PerFrameFunctionalGroupsSequence
    if len(per_frame) != count or pixels.shape[0] != count:
        raise InputError(
            f"multi-frame instance {dataset.SOPInstanceUID} states {count} frames but has "
            f"{len(per_frame)} per-frame groups and {pixels.shape[0]} frames of pixel data",
            code="inconsistent_stack",
            series_instance_uid=series_uid,
        )

    frames = []
    for index in range(count):
        merged = _merge_groups(shared, per_frame[index])
        where = f"frame {index + 1} of instance {dataset.SOPInstanceUID}"
        slope, intercept = _rescale(merged)
        frames.append(
            _Frame(
                sop_instance_uid=str(dataset.SOPInstanceUID),
                frame_number=index + 1,
                geometry=_slice_geometry(merged, series_uid, where=where),
                pixel_spacing=_pixel_spacing(merged, series_uid),
                pixels=_apply_rescale(pixels[index], slope, intercept),
            )
        )
    return frames


def _merge_groups(shared: Dataset, frame: Dataset) -> Dataset:
    """Flatten the functional groups of one frame into top-level attributes."""
    merged = Dataset()
    sources = (
        ("PlanePositionSequence", ("ImagePositionPatient",)),
        ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
        ("PixelMeasuresSequence", ("PixelSpacing",)),
        ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
    )
    for sequence, keywords in sources:
        # Per-frame groups override shared groups (PS3.3 C.7.6.16).
        for groups in (shared, frame):
            if sequence in groups and len(groups[sequence].value):
                item = groups[sequence][0]
                for keyword in keywords:
                    if keyword in item:
                        setattr(merged, keyword, item[keyword].value)
    return merged


def _slice_geometry(dataset: Dataset, series_uid: str, *, where: str) -> SliceGeometry:
    position = dataset.get("ImagePositionPatient")
    orientation = dataset.get("ImageOrientationPatient")
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        raise InputError(
            f"{where} lacks a valid Image Position (Patient) or Image Orientation (Patient)",
            code="missing_geometry",
            series_instance_uid=series_uid,
        )
    cosines = np.array([float(v) for v in orientation])
    row, column = cosines[:3], cosines[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(column) - 1) > 1e-3
        or abs(np.dot(row, column)) > 1e-3
    ):
        raise InputError(
            f"{where} has Image Orientation (Patient) {list(cosines)}, which is not two "
            "orthogonal unit vectors",
            code="missing_geometry",
            series_instance_uid=series_uid,
        )
    return SliceGeometry(
        position=np.array([float(v) for v in position]),
        row_cosine=row / np.linalg.norm(row),
        column_cosine=column / np.linalg.norm(column),
    )


def _pixel_spacing(dataset: Dataset, series_uid: str) -> tuple[float, float]:
    spacing = dataset.get("PixelSpacing")
    if spacing is None or len(spacing) != 2 or min(float(v) for v in spacing) <= 0:
        raise InputError(
            f"instance in series {series_uid} has no valid Pixel Spacing ({spacing!r})",
            code="missing_geometry",
            series_instance_uid=series_uid,
        )
    return float(spacing[0]), float(spacing[1])


def _rescale(dataset: Dataset) -> tuple[float, float]:
    return float(dataset.get("RescaleSlope", 1.0) or 1.0), float(dataset.get("RescaleIntercept", 0.0) or 0.0)


def _apply_rescale(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    values = pixels.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def _stack_frames(
    frames: list[_Frame], series_uid: str, notes: list[str]
) -> tuple[sitk.Image, np.ndarray]:
    if len(frames) < 2:
        raise InputError(
            f"series {series_uid} has {len(frames)} slice, but a volume needs at least 2",
            code="too_few_slices",
            series_instance_uid=series_uid,
        )
    _check_consistent(frames, series_uid)

    order, distances = slice_order([f.geometry for f in frames])
    _check_duplicates(frames, order, distances, series_uid)
    spacing_z, problem = find_spacing_problem(distances)
    if problem is not None:
        raise _spacing_error(problem, frames, order, distances, series_uid)

    sorted_geometry = [frames[i].geometry for i in order]
    first = sorted_geometry[0]
    row_spacing, column_spacing = frames[0].pixel_spacing
    array = np.stack([frames[i].pixels for i in order])
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(first.position.tolist())
    image.SetSpacing((column_spacing, row_spacing, spacing_z))
    # SimpleITK's direction columns are the x (row cosine), y (column cosine)
    # and z (normal) axes, flattened row by row.
    direction = np.column_stack([first.row_cosine, first.column_cosine, first.normal])
    image.SetDirection(direction.ravel().tolist())

    return _correct_shear(image, sorted_geometry, spacing_z, series_uid, notes), order


def _check_consistent(frames: list[_Frame], series_uid: str) -> None:
    reference = frames[0]
    for frame in frames[1:]:
        if frame.pixels.shape != reference.pixels.shape:
            problem = f"slice sizes {reference.pixels.shape} and {frame.pixels.shape}"
        elif not np.allclose(frame.pixel_spacing, reference.pixel_spacing, atol=1e-4):
            problem = f"pixel spacings {reference.pixel_spacing} and {frame.pixel_spacing}"
        elif not (
            np.allclose(frame.geometry.row_cosine, reference.geometry.row_cosine, atol=ORIENTATION_TOLERANCE)
            and np.allclose(
                frame.geometry.column_cosine, reference.geometry.column_cosine, atol=ORIENTATION_TOLERANCE
            )
        ):
            problem = "different Image Orientation (Patient) values"
        else:
            continue
        raise InputError(
            f"series {series_uid} mixes {problem} (instance {frame.sop_instance_uid}), "
            "so its slices do not form one stack",
            code="inconsistent_stack",
            series_instance_uid=series_uid,
            hint="send each stack or orientation as its own series",
        )


def _check_duplicates(
    frames: list[_Frame], order: np.ndarray, distances: np.ndarray, series_uid: str
) -> None:
    steps = np.diff(distances)
    duplicates = np.flatnonzero(steps <= POSITION_TOLERANCE_MM)
    if duplicates.size:
        index = int(duplicates[0])
        first, second = frames[order[index]], frames[order[index + 1]]
        raise InputError(
            f"series {series_uid} has two slices at the same position "
            f"{distances[index]:.2f} mm along the slice normal (instances "
            f"{first.sop_instance_uid} and {second.sop_instance_uid})",
            code="duplicate_positions",
            series_instance_uid=series_uid,
            hint="the series may hold several echoes, phases or repeats; send one stack per series",
        )


def _spacing_error(
    problem: SpacingProblem,
    frames: list[_Frame],
    order: np.ndarray,
    distances: np.ndarray,
    series_uid: str,
) -> InputError:
    before = frames[order[problem.index]].geometry.position
    after = frames[order[problem.index + 1]].geometry.position
    where = (
        f"between {distances[problem.index]:.2f} mm and {distances[problem.index + 1]:.2f} mm "
        f"along the slice normal (Image Position (Patient) {_format_point(before)} and "
        f"{_format_point(after)})"
    )
    if problem.code == "slice_gap":
        missing = round(problem.spacing_mm / problem.expected_mm) - 1
        message = (
            f"series {series_uid} is missing {missing} slice(s) {where}; "
            f"the slice spacing is {problem.expected_mm:.2f} mm"
        )
        hint = "resend the complete series"
    else:
        message = (
            f"series {series_uid} has non-uniform slice spacing: {problem.spacing_mm:.2f} mm "
            f"{where}, but {problem.expected_mm:.2f} mm elsewhere"
        )
        hint = "send a series with evenly spaced slices"
    return InputError(message, code=problem.code, series_instance_uid=series_uid, hint=hint)


def _format_point(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in point) + ")"


def _correct_shear(
    image: sitk.Image,
    sorted_geometry: list[SliceGeometry],
    spacing_z: float,
    series_uid: str,
    notes: list[str],
) -> sitk.Image:
    offsets = in_plane_offsets(sorted_geometry)
    # In-plane drift below a tenth of a pixel is rounding in the headers, not tilt.
    if np.max(np.linalg.norm(offsets, axis=1)) <= 0.1 * min(image.GetSpacing()[:2]):
        return image

    step = shear_step(offsets)
    if step is None:
        raise InputError(
            f"series {series_uid} has slice positions that drift irregularly within the slice "
            "plane, so they do not form one stack",
            code="inconsistent_stack",
            series_instance_uid=series_uid,
        )

    resampled = resample_sheared(image, step)
    tilt = tilt_degrees(step, spacing_z)
    notes.append(
        f"Series {series_uid} is a sheared stack (gantry tilt about {tilt:.1f} degrees); "
        f"it was resampled with linear interpolation onto an orthogonal grid of size "
        f"{list(resampled.GetSize())} whose slices lie in the original slice planes."
    )
    logger.info("Resampled sheared series %s (tilt %.1f degrees)", series_uid, tilt)
    return resampled

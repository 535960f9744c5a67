"""Tell the post-contrast series from the pre-contrast one by their pixels.

Where the tags leave two T1-weighted series without a contrast cue, the one
acquired after the agent shows enhancing vessels, mucosa and tumour. So once
each series is divided by the median intensity of its body, the brightest
voxels of the post-contrast series are brighter than those of the other. Both series are
read from the spool with pydicom. Where they share a frame of reference, the
second is resampled onto the first by patient position (nearest neighbour)
and only the overlap is compared. Otherwise whole-series statistics are used.

This runs in the completion scheduler's thread, never in the C-STORE handler.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from config.roles import EnhancementRules
from dicom_node.role_rules import SeriesCandidate

logger = logging.getLogger(__name__)

# Fewer overlapping body voxels than this make the region comparison noise,
# so the whole-series statistics decide instead.
MIN_OVERLAP_VOXELS = 500


class EnhancementCheckError(ValueError):
    """The pixel data of a series could not be read for the enhancement check."""


@dataclass(frozen=True)
class EnhancementVerdict:
    """Outcome of comparing two series: which is post-contrast, if the images decide it."""

    post_contrast_uid: str | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesVolume:
    """Slices of one series sorted along their normal, with the patient geometry of each."""

    pixels: np.ndarray
    positions: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    row_spacing: float
    column_spacing: float

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row cosine x column cosine."""
        normal = np.cross(self.row_cosine, self.column_cosine)
        return normal / np.linalg.norm(normal)


def load_volume(paths: Sequence[Path], rules: EnhancementRules) -> SeriesVolume:
    """Read the slices of one series from ``paths`` into a volume sorted along the slice normal.

    In-plane size is reduced by striding to at most ``rules.max_in_plane``
    and the slice count to at most ``rules.max_slices_read``, evenly chosen.

    Raises
    ------
    EnhancementCheckError
        If a file cannot be read or lacks the geometry or pixel data.
    """
    frames: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    orientation: np.ndarray | None = None
    spacing: tuple[float, float] | None = None
    for path in paths:
        file_frames, file_positions, orientation, spacing = _read_file(path)
        frames.extend(file_frames)
        positions.extend(file_positions)
    if not frames or orientation is None or spacing is None:
        raise EnhancementCheckError(f"no readable image frames among {len(paths)} files; check the spool folder")

    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    order = np.argsort([float(np.dot(position, normal)) for position in positions])
    if len(order) > rules.max_slices_read:
        order = order[np.linspace(0, len(order) - 1, rules.max_slices_read).round().astype(int)]

    stride = max(1, math.ceil(max(frames[0].shape) / rules.max_in_plane))
    pixels = np.stack([frames[index][::stride, ::stride] for index in order]).astype(np.float32)
    return SeriesVolume(
        pixels=pixels,
        positions=np.array([positions[index] for index in order], dtype=np.float64),
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        row_spacing=spacing[0] * stride,
        column_spacing=spacing[1] * stride,
    )


def _read_file(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, tuple[float, float]]:
    try:
        dataset = pydicom.dcmread(path)
        pixels = np.asarray(dataset.pixel_array, dtype=np.float32)
    except (OSError, InvalidDicomError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise EnhancementCheckError(f"cannot read pixel data of {path}: {exc}") from exc

    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if "PerFrameFunctionalGroupsSequence" in dataset:
        return _enhanced_frames(dataset, pixels, path)

    try:
        orientation = np.array([float(value) for value in dataset.ImageOrientationPatient])
        position = np.array([float(value) for value in dataset.ImagePositionPatient])
        spacing = (float(dataset.PixelSpacing[0]), float(dataset.PixelSpacing[1]))
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise EnhancementCheckError(f"{path} lacks ImageOrientationPatient, ImagePositionPatient or PixelSpacing") from exc
    return [pixels], [position], orientation, spacing


def _enhanced_frames(
    dataset: pydicom.Dataset, pixels: np.ndarray, path: Path
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, tuple[float, float]]:
    # Enhanced MR (PS3.3 section C.7.6.16): geometry sits in the shared or
    # per-frame functional groups, Plane Position and Plane Orientation.
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    shared = dataset.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = dataset.PerFrameFunctionalGroupsSequence
    try:
        orientation = np.array(
            [float(value) for value in _functional(shared, per_frame[0], "PlaneOrientationSequence").ImageOrientationPatient]
        )
        measures = _functional(shared, per_frame[0], "PixelMeasuresSequence")
        spacing = (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1]))
        positions = [
            np.array([float(value) for value in _functional(None, item, "PlanePositionSequence").ImagePositionPatient])
            for item in per_frame
        ]
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise EnhancementCheckError(f"{path} lacks plane position, orientation or pixel measures per frame") from exc
    return list(pixels), positions, orientation, spacing


def _functional(shared: Any, frame: Any, sequence: str) -> pydicom.Dataset:
    for group in (frame, shared):
        if group is not None and sequence in group:
            return group[sequence].value[0]
    raise AttributeError(f"{sequence} not found in the functional groups")


def _normalise(volume: np.ndarray, rules: EnhancementRules) -> tuple[np.ndarray, np.ndarray, float]:
    # The body mask leaves out air, so the median is that of tissue.
    high = float(np.percentile(volume, 99))
    body = volume > rules.body_threshold * high
    if not body.any() or high <= 0:
        raise EnhancementCheckError("the series has no voxels above the air level; it cannot be normalised")
    median = float(np.median(volume[body]))
    return volume / median, body, median


def resample_onto(source: SeriesVolume, target: SeriesVolume) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``source`` at the voxel centres of ``target`` by nearest neighbour.

    Returns the resampled array on the target grid and a mask of the target
    voxels that fall inside the source volume.
    """
    slices, rows, columns = target.pixels.shape
    row_index, column_index = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    in_plane = (
        column_index[..., np.newaxis] * target.column_spacing * target.row_cosine
        + row_index[..., np.newaxis] * target.row_spacing * target.column_cosine
    )

    source_normal = source.normal
    source_heights = source.positions @ source_normal
    source_gap = float(np.median(np.diff(source_heights))) if len(source_heights) > 1 else 1.0
    origin = source.positions[0]
    result = np.zeros(target.pixels.shape, dtype=np.float32)
    inside = np.zeros(target.pixels.shape, dtype=bool)
    source_slices, source_rows, source_columns = source.pixels.shape

    for index in range(slices):
        points = target.positions[index] + in_plane
        heights = points @ source_normal
        nearest = np.clip(np.searchsorted(source_heights, heights), 0, source_slices - 1)
        previous = np.clip(nearest - 1, 0, source_slices - 1)
        use_previous = np.abs(source_heights[previous] - heights) < np.abs(source_heights[nearest] - heights)
        nearest = np.where(use_previous, previous, nearest)
        offset = points - origin
        column = np.rint(offset @ source.row_cosine / source.column_spacing).astype(int)
        row = np.rint(offset @ source.column_cosine / source.row_spacing).astype(int)
        valid = (
            (np.abs(source_heights[nearest] - heights) <= abs(source_gap) / 2 + 1e-3)
            & (row >= 0) & (row < source_rows) & (column >= 0) & (column < source_columns)
        )
        result[index][valid] = source.pixels[nearest[valid], row[valid], column[valid]]
        inside[index] = valid
    return result, inside


def compare_enhancement(
    first: SeriesVolume,
    second: SeriesVolume,
    rules: EnhancementRules,
    *,
    first_uid: str,
    second_uid: str,
    same_frame_of_reference: bool,
    labels: tuple[str, str] | None = None,
) -> EnhancementVerdict:
    """Decide which of two T1-weighted series is post-contrast, or that the images do not tell.

    The series whose ``rules.top_percentile`` intensity, after normalisation
    by its body median, is higher by at least ``rules.min_relative_gain`` is
    the post-contrast one.
    """
    names = labels or (first_uid, second_uid)
    first_norm, first_body, first_median = _normalise(first.pixels, rules)
    second_norm, second_body, second_median = _normalise(second.pixels, rules)
    details: dict[str, Any] = {
        "body_median": [first_median, second_median],
        "top_percentile": rules.top_percentile,
    }

    first_values, second_values, region = first_norm[first_body], second_norm[second_body], "whole series"
    if same_frame_of_reference:
        resampled, inside = resample_onto(second, first)
        resampled_norm = resampled / second_median
        overlap = inside & (first_body | (resampled > rules.body_threshold * np.percentile(second.pixels, 99)))
        details["overlap_voxels"] = int(overlap.sum())
        if overlap.sum() >= MIN_OVERLAP_VOXELS:
            first_values, second_values, region = first_norm[overlap], resampled_norm[overlap], "overlapping region"
            brighter = resampled_norm[overlap] > first_norm[overlap] * (1 + rules.voxel_gain)
            darker = first_norm[overlap] > resampled_norm[overlap] * (1 + rules.voxel_gain)
            details["fraction_second_brighter"] = round(float(brighter.mean()), 4)
            details["fraction_first_brighter"] = round(float(darker.mean()), 4)

    first_top = float(np.percentile(first_values, rules.top_percentile))
    second_top = float(np.percentile(second_values, rules.top_percentile))
    ratio = second_top / first_top if first_top > 0 else math.inf
    details.update({"region": region, "top_normalised": [round(first_top, 4), round(second_top, 4)], "ratio": round(ratio, 4)})

    top_share = f"top {100 - rules.top_percentile:g}% voxels"
    threshold = 1 + rules.min_relative_gain
    if ratio >= threshold:
        post_uid, post_label, gain = second_uid, names[1], ratio - 1
    elif ratio <= 1 / threshold:
        post_uid, post_label, gain = first_uid, names[0], 1 / ratio - 1
    else:
        summary = (
            f"image comparison ({region}): {names[0]} and {names[1]} differ by "
            f"{abs(ratio - 1) * 100:.0f}% in their {top_share} after normalisation, less than the "
            f"{rules.min_relative_gain * 100:.0f}% needed -> undecided"
        )
        return EnhancementVerdict(post_contrast_uid=None, summary=summary, details=details)

    summary = (
        f"image comparison ({region}): {post_label} is brighter after normalisation by "
        f"{gain * 100:.0f}% in its {top_share} -> CE-T1"
    )
    return EnhancementVerdict(post_contrast_uid=post_uid, summary=summary, details=details)


class SpoolImageComparator:
    """Compare two series read from the spool; the callable that role assignment takes.

    Parameters
    ----------
    spool_dir : Path
        Folder that ``Instance.path`` values are relative to.
    instance_paths : dict
        Relative file paths per SeriesInstanceUID.
    rules : EnhancementRules
        Thresholds of the comparison.
    """

    def __init__(self, spool_dir: Path, instance_paths: dict[str, list[str]], rules: EnhancementRules) -> None:
        self._spool_dir = Path(spool_dir)
        self._instance_paths = instance_paths
        self._rules = rules

    def __call__(self, first: SeriesCandidate, second: SeriesCandidate) -> EnhancementVerdict:
        """Compare two series by their pixels; a read failure gives an undecided verdict."""
        labels = (_label(first), _label(second))
        try:
            first_volume = self._load(first.series_instance_uid)
            second_volume = self._load(second.series_instance_uid)
            same_frame = bool(first.header.get("FrameOfReferenceUID")) and first.header.get(
                "FrameOfReferenceUID"
            ) == second.header.get("FrameOfReferenceUID")
            return compare_enhancement(
                first_volume,
                second_volume,
                self._rules,
                first_uid=first.series_instance_uid,
                second_uid=second.series_instance_uid,
                same_frame_of_reference=same_frame,
                labels=labels,
            )
        except EnhancementCheckError as exc:
            logger.warning(
                "enhancement check of series %s and %s failed: %s",
                first.series_instance_uid,
                second.series_instance_uid,
                exc,
            )
            return EnhancementVerdict(
                post_contrast_uid=None,
                summary=f"image comparison of {labels[0]} and {labels[1]} failed: {exc}",
                details={"error": str(exc)},
            )

    def _load(self, series_uid: str) -> SeriesVolume:
        paths = [self._spool_dir / relative for relative in self._instance_paths.get(series_uid, [])]
        if not paths:
            raise EnhancementCheckError(f"series {series_uid} has no stored instances to read")
        return load_volume(paths, self._rules)


def _label(candidate: SeriesCandidate) -> str:
    header = candidate.header
    number = header.get("SeriesNumber")
    description = header.get("SeriesDescription") or "(no description)"
    return f"series {number} '{description}'" if number not in (None, "") else f"series '{description}'"

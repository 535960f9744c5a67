"""Slice-stack geometry: ordering, spacing checks and shear correction.

All positions are patient coordinates in LPS millimetres, as DICOM's Image
Position (Patient) and Image Orientation (Patient) give them (PS3.3 C.7.6.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from inference.result import GridGeometry

# Largest difference between two slices' direction cosines that still counts
# as the same orientation. Scanners write cosines with about 6 decimals.
ORIENTATION_TOLERANCE = 1e-4

# Slice spacings may differ by this fraction of the median spacing (plus
# POSITION_TOLERANCE_MM) before the stack counts as non-uniform, because
# scanners round Image Position (Patient) to a few decimals.
SPACING_RELATIVE_TOLERANCE = 0.02
POSITION_TOLERANCE_MM = 0.01

# A spacing this many times the median, or more, and close to a whole
# multiple of it, is read as missing slices rather than non-uniform spacing.
GAP_RATIO = 1.5


@dataclass(frozen=True)
class SliceGeometry:
    """Plane of one slice: its first voxel's position and its cosines."""

    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, the cross product of row and column cosines."""
        normal = np.cross(self.row_cosine, self.column_cosine)
        return normal / np.linalg.norm(normal)


@dataclass(frozen=True)
class SpacingProblem:
    """A defect in the distances between sorted slices.

    ``code`` is ``"slice_gap"`` or ``"nonuniform_spacing"``; ``index`` is the
    sorted slice after which the defect starts.
    """

    code: str
    index: int
    spacing_mm: float
    expected_mm: float


def grid_geometry(image: sitk.Image) -> GridGeometry:
    """Return the :class:`GridGeometry` of a 3D SimpleITK image."""
    return GridGeometry(
        origin=tuple(float(v) for v in image.GetOrigin()),
        spacing=tuple(float(v) for v in image.GetSpacing()),
        direction=tuple(float(v) for v in image.GetDirection()),
        size=tuple(int(v) for v in image.GetSize()),
    )


def slice_order(slices: list[SliceGeometry]) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorting permutation and sorted distances along the slice normal.

    Slices are sorted by the projection of their position on the first slice's
    normal, ascending, so the stack's z axis points along that normal.
    """
    normal = slices[0].normal
    distances = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(distances, kind="stable")
    return order, distances[order]


def find_spacing_problem(distances: np.ndarray) -> tuple[float, SpacingProblem | None]:
    """Return the regular slice spacing and the first spacing defect, if any.

    Parameters
    ----------
    distances : numpy.ndarray
        Sorted slice positions along the normal, in mm, without duplicates.
    """
    steps = np.diff(distances)
    # The regular spacing is the median of the steps near the smallest one, so
    # a short series with one gap is not measured against a median that the
    # gap itself has inflated.
    median = float(np.median(steps[steps < GAP_RATIO * steps.min()]))
    tolerance = SPACING_RELATIVE_TOLERANCE * median + POSITION_TOLERANCE_MM

    for index, step in enumerate(steps):
        if abs(step - median) <= tolerance:
            continue
        ratio = step / median
        whole = round(ratio)
        is_gap = ratio >= GAP_RATIO and abs(step - whole * median) <= whole * tolerance
        code = "slice_gap" if is_gap else "nonuniform_spacing"
        return median, SpacingProblem(code, index, float(step), median)
    return median, None


def in_plane_offsets(slices: list[SliceGeometry]) -> np.ndarray:
    """Return each sorted slice's position offset from the first, projected onto its plane.

    A straight stack has all offsets zero. A stack acquired with gantry tilt
    has offsets that grow linearly with the slice index.
    """
    normal = slices[0].normal
    offsets = np.array([s.position - slices[0].position for s in slices])
    return offsets - np.outer(offsets @ normal, normal)


def shear_step(offsets: np.ndarray) -> np.ndarray | None:
    """Return the in-plane shift per slice of a linearly sheared stack.

    Returns None when the offsets are not a linear function of the slice
    index within :data:`POSITION_TOLERANCE_MM` times ten, which means the
    slices do not form one tilted stack.
    """
    count = len(offsets)
    step = offsets[-1] / (count - 1)
    predicted = np.outer(np.arange(count), step)
    if np.max(np.linalg.norm(offsets - predicted, axis=1)) > 10 * POSITION_TOLERANCE_MM:
        return None
    return step


def tilt_degrees(step: np.ndarray, spacing: float) -> float:
    """Return the gantry tilt angle implied by an in-plane shift per slice."""
    return math.degrees(math.atan2(float(np.linalg.norm(step)), spacing))


def resample_sheared(image: sitk.Image, step: np.ndarray) -> sitk.Image:
    """Resample a sheared stack onto an orthogonal grid with the same slice planes.

    Parameters
    ----------
    image : SimpleITK.Image
        The stack laid out as if unsheared: origin at the first slice,
        direction (row, column, normal) and z spacing along the normal.
    step : numpy.ndarray
        In-plane shift of each slice relative to the previous one, in mm.

    Returns
    -------
    SimpleITK.Image
        Orthogonal image whose slice ``k`` lies in the plane of source slice
        ``k`` and whose in-plane extent covers every source slice.
    """
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    spacing = np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    normal = direction[:, 2]

    # A point p in the true sheared stack is found in the unsheared layout at
    # p - step * (distance of p along the normal from slice 0) / spacing_z.
    matrix = np.eye(3) - np.outer(step, normal) / spacing[2]
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetCenter(origin.tolist())

    # In-plane extent of all sheared slices, in (row, column) grid coordinates.
    shift_index = np.array([step @ direction[:, 0], step @ direction[:, 1]]) / spacing[:2]
    last_shift = shift_index * (size[2] - 1)
    low = np.floor(np.minimum(0.0, last_shift)).astype(int)
    high = np.ceil(np.maximum(0.0, last_shift)).astype(int)
    new_size = [int(size[0] + high[0] - low[0]), int(size[1] + high[1] - low[1]), int(size[2])]
    new_origin = origin + direction[:, :2] @ (low * spacing[:2])

    return sitk.Resample(
        image,
        new_size,
        transform,
        sitk.sitkLinear,
        new_origin.tolist(),
        image.GetSpacing(),
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )

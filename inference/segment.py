"""Tumour segmentation with a model package, and measurements of the mask.

The model's input is axial slices in the standard LPS orientation (rows run
from anterior to posterior, columns from patient right to left). :func:`model_input_slices`
builds that input from SimpleITK volumes and is shared with training, so a
model is trained on exactly what inference feeds it. :func:`predict_mask`
runs the model slice by slice and cleans the result up in 3D.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from inference.errors import InputError
from inference.model_package import (
    LoadedSegmentationModel,
    Normalisation,
    NormalisationMethod,
    SegmentationManifest,
)
from inference.result import GridGeometry, SequenceRole

logger = logging.getLogger(__name__)

# Orientation code of the model's input grid: x towards patient left, y
# towards posterior, z towards superior, which is a standard axial stack.
MODEL_ORIENTATION = "LPS"

# NOTE: 30 mm3 (a sphere about 4 mm across) is an estimate of the smallest
# tongue tumour worth reporting, not a validated threshold.
DEFAULT_MIN_COMPONENT_MM3 = 30.0

# Grids whose origin, spacing or direction differ by less than this (mm or
# cosine) count as the same grid, because DICOM stores them as decimal strings.
GRID_TOLERANCE = 1e-3

_FULL_CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS = ndimage.generate_binary_structure(2, 1)[np.newaxis]


def make_trimap(
    mask: np.ndarray, border_px: int, class_ids: Mapping[str, int] | None = None
) -> np.ndarray:
    """Return the training target for a binary mask: tumour, background and border.

    The border is the band between the mask dilated and the mask eroded by
    ``border_px`` pixels within each slice, so it straddles the tumour edge.
    A 3D mask ``[z, y, x]`` is processed slice by slice.

    Parameters
    ----------
    mask : numpy.ndarray
        2D ``[y, x]`` or 3D ``[z, y, x]`` array, non-zero inside the tumour.
    border_px : int
        Half-width of the border band in pixels, at least 1.
    class_ids : mapping of str to int, optional
        Ids of ``"background"``, ``"tumour"`` and ``"border"``; by default
        the manifest defaults 0, 1 and 2.

    Returns
    -------
    numpy.ndarray
        uint8 array of class ids with the shape of ``mask``.
    """
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    if border_px < 1:
        raise ValueError(f"border_px must be at least 1, got {border_px}")
    ids = dict(class_ids) if class_ids is not None else {"background": 0, "tumour": 1, "border": 2}

    volume = np.asarray(mask, dtype=bool)
    volume = volume[np.newaxis] if volume.ndim == 2 else volume
    dilated = ndimage.binary_dilation(volume, _IN_PLANE_CROSS, iterations=border_px)
    eroded = ndimage.binary_erosion(volume, _IN_PLANE_CROSS, iterations=border_px, border_value=1)

    trimap = np.full(volume.shape, ids["background"], dtype=np.uint8)
    trimap[volume] = ids["tumour"]
    trimap[dilated & ~eroded] = ids["border"]
    return trimap.reshape(mask.shape)


def normalise_volume(array: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """Return a float32 copy of a volume scaled by the manifest's normalisation."""
    values = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(values, normalisation.clip_percentiles)
    clipped = np.clip(values, low, high)

    if normalisation.method is NormalisationMethod.ZSCORE_PER_VOLUME:
        spread = float(clipped.std())
        centred = clipped - np.float32(clipped.mean())
        return centred / np.float32(spread) if spread > 0 else centred
    span = float(high - low)
    shifted = clipped - np.float32(low)
    return shifted / np.float32(span) if span > 0 else shifted


def orient_for_model(image: sitk.Image) -> sitk.Image:
    """Return the image with its axes permuted and flipped to the model's LPS grid.

    Only axis order and sign change, so no voxel is interpolated. An oblique
    image goes to the nearest LPS axes.
    """
    return sitk.DICOMOrient(image, MODEL_ORIENTATION)


def model_input_slices(
    volumes: Mapping[SequenceRole, sitk.Image], manifest: SegmentationManifest
) -> np.ndarray:
    """Return the model input for a study: ``(z, height, width, channels)`` float32.

    Each volume is reoriented to axial LPS, normalised on its own, and its
    slices are resized linearly to the manifest's input size. Channels
    follow the manifest's order.

    Raises
    ------
    InputError
        If a role the manifest lists is missing or the volumes are not on one grid.
    """
    reference = _common_grid(volumes, manifest)
    height, width = manifest.input_size
    channels = []
    for role in manifest.channels:
        oriented = sitk.GetArrayFromImage(orient_for_model(volumes[role]))
        normalised = normalise_volume(oriented, manifest.normalisation)
        channels.append(_resize_slices(normalised, (height, width), order=1))
    logger.debug("Prepared model input from grid of size %s", reference.GetSize())
    return np.stack(channels, axis=-1)


def predict_mask(
    model: LoadedSegmentationModel,
    volumes: Mapping[SequenceRole, sitk.Image],
    *,
    batch_size: int = 8,
    min_component_mm3: float = DEFAULT_MIN_COMPONENT_MM3,
) -> np.ndarray:
    """Segment the tumour and return a uint8 mask ``[z, y, x]`` on the volumes' grid.

    Parameters
    ----------
    model : LoadedSegmentationModel
        Verified model package.
    volumes : mapping of SequenceRole to SimpleITK.Image
        One volume per role the manifest lists, all on one grid (normally the
        CE-T1 grid, after alignment). Extra roles are ignored.
    batch_size : int
        Slices per forward pass.
    min_component_mm3 : float
        Connected components smaller than this are dropped.

    Returns
    -------
    numpy.ndarray
        1 inside the largest tumour component, holes filled, else 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    manifest = model.manifest
    reference = _common_grid(volumes, manifest)
    oriented_reference = orient_for_model(reference)
    inputs = model_input_slices(volumes, manifest)

    out_shape = sitk.GetArrayViewFromImage(oriented_reference).shape[1:]
    labels = np.empty((inputs.shape[0], *out_shape), dtype=np.uint8)
    for start in range(0, inputs.shape[0], batch_size):
        labels[start : start + batch_size] = model.predict_labels(inputs[start : start + batch_size], out_shape)

    raw = (labels == manifest.tumour_class).astype(np.uint8)
    mask = _to_original_grid(raw, oriented_reference, reference)
    return postprocess_mask(mask, reference.GetSpacing(), min_component_mm3=min_component_mm3)


def postprocess_mask(
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    min_component_mm3: float = DEFAULT_MIN_COMPONENT_MM3,
) -> np.ndarray:
    """Keep the largest 3D component of a mask if it is big enough, with holes filled.

    Components are 26-connected. Holes are filled within each slice and then
    in 3D, so a cavity open only towards a neighbouring slice is filled too.

    Parameters
    ----------
    mask : numpy.ndarray
        Binary array ``[z, y, x]``.
    spacing : tuple of float
        Voxel spacing (x, y, z) in mm, as SimpleITK gives it.
    min_component_mm3 : float
        The largest component is dropped too if it is smaller than this.
    """
    binary = np.asarray(mask, dtype=bool)
    labelled, count = ndimage.label(binary, structure=_FULL_CONNECTIVITY_3D)
    if count == 0:
        return np.zeros(binary.shape, dtype=np.uint8)

    sizes = np.bincount(labelled.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] * float(np.prod(spacing)) < min_component_mm3:
        return np.zeros(binary.shape, dtype=np.uint8)

    # Holes lie inside the component's bounding box, so filling works on that
    # box only, which is much faster than on whole 512 x 512 slices.
    box = ndimage.find_objects(labelled, max_label=largest)[largest - 1]
    component = labelled[box] == largest
    for index in range(component.shape[0]):
        component[index] = ndimage.binary_fill_holes(component[index])
    component = ndimage.binary_fill_holes(component)

    result = np.zeros(binary.shape, dtype=np.uint8)
    result[box] = component
    return result


def tumour_volume_mm3(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Return the mask's volume in mm3: voxel count times voxel volume."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing))


def max_diameter_mm(mask: np.ndarray, geometry: GridGeometry) -> float:
    """Return the maximum 3D Feret diameter of a mask in patient millimetres.

    The diameter is the largest distance between the centres of two surface
    voxels, found among the vertices of their convex hull. It is 0 for an
    empty mask or a single voxel.
    """
    binary = np.asarray(mask, dtype=bool)
    boxes = ndimage.find_objects(binary.astype(np.uint8))
    if not boxes:
        return 0.0

    # Erode only the bounding box, padded by one voxel so that voxels on the
    # box edge count as surface just as in the whole array.
    box = boxes[0]
    cropped = np.pad(binary[box], 1)
    surface = cropped & ~ndimage.binary_erosion(cropped, _FULL_CONNECTIVITY_3D)
    offset = np.array([s.start for s in box]) - 1
    indices = (np.argwhere(surface) + offset)[:, ::-1].astype(float)
    if len(indices) < 2:
        return 0.0

    direction = np.array(geometry.direction).reshape(3, 3)
    points = np.asarray(geometry.origin) + (indices * np.asarray(geometry.spacing)) @ direction.T
    return float(pdist(_hull_vertices(points)).max())


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    if len(points) < 5:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:
        # Flat or collinear point sets (a one-slice mask) have no 3D hull, so
        # fall back to the hull within their plane.
        return _planar_hull_vertices(points)


def _planar_hull_vertices(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    if singular[1] < 1e-9:
        return points
    planar = centred @ axes[:2].T
    try:
        return points[ConvexHull(planar).vertices]
    except QhullError:
        return points


def _common_grid(
    volumes: Mapping[SequenceRole, sitk.Image], manifest: SegmentationManifest
) -> sitk.Image:
    missing = [role.value for role in manifest.channels if role not in volumes]
    if missing:
        raise InputError(
            f"the model {manifest.name} needs series {missing}, which were not given",
            code="missing_series",
            hint="send the study with every series the model's manifest lists",
        )
    reference = volumes[manifest.channels[0]]
    for role in manifest.channels[1:]:
        if not same_grid(volumes[role], reference):
            raise InputError(
                f"the {role.label} volume is not on the grid of the {manifest.channels[0].label} "
                "volume; align it before segmentation",
                code="misaligned_volumes",
            )
    return reference


def same_grid(first: sitk.Image, second: sitk.Image) -> bool:
    """Return whether two images share size, origin, spacing and direction."""
    return (
        first.GetSize() == second.GetSize()
        and np.allclose(first.GetOrigin(), second.GetOrigin(), atol=GRID_TOLERANCE)
        and np.allclose(first.GetSpacing(), second.GetSpacing(), atol=GRID_TOLERANCE)
        and np.allclose(first.GetDirection(), second.GetDirection(), atol=GRID_TOLERANCE)
    )


def _resize_slices(array: np.ndarray, size: tuple[int, int], *, order: int) -> np.ndarray:
    """Resize each slice of ``[z, y, x]`` to ``size``, aligning pixel edges."""
    factors = (1.0, size[0] / array.shape[1], size[1] / array.shape[2])
    if factors[1:] == (1.0, 1.0):
        return array
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def _to_original_grid(
    mask: np.ndarray, oriented_reference: sitk.Image, reference: sitk.Image
) -> np.ndarray:
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(oriented_reference)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection())
    restored = sitk.DICOMOrient(mask_image, code)
    return sitk.GetArrayFromImage(restored).astype(np.uint8)

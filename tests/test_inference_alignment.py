"""Tests for resampling series onto the CE-T1 grid and rigid registration."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from inference.alignment import AlignmentMethod, align_series, resample_to_reference
from inference.errors import InputError
from inference.result import SequenceRole
from inference.volume import SeriesVolume


def _ramp_image(size, spacing, origin, direction=None) -> sitk.Image:
    """An image whose value at patient point p is 2x - 3y + 5z, exact under linear interpolation."""
    image = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return _fill(image, lambda p: 2 * p[..., 0] - 3 * p[..., 1] + 5 * p[..., 2])


def _fill(image: sitk.Image, function) -> sitk.Image:
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + (index * image.GetSpacing()) @ direction.T
    values = function(points).astype(np.float32)
    result = sitk.GetImageFromArray(np.transpose(values, (2, 1, 0)))
    result.CopyInformation(image)
    return result


def _volume(image: sitk.Image, frame_uid: str | None = "1.2.3") -> SeriesVolume:
    return SeriesVolume(
        image=image,
        sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(image.GetSize()[2])),
        series_instance_uid=f"1.2.826.0.{id(image)}",
        frame_of_reference_uid=frame_uid,
        first_dataset=Dataset(),
    )


def _voxel_points(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * image.GetSpacing()) @ direction.T


def test_resample_matches_patient_coordinates() -> None:
    reference = _ramp_image((20, 18, 8), (0.7, 0.7, 3.0), (0.0, 0.0, 0.0))
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    moving = _ramp_image((30, 30, 14), (0.9, 0.9, 2.5), (-5.0, 20.0, -4.0), flipped)

    resampled = resample_to_reference(moving, reference)
    assert resampled.GetSize() == reference.GetSize()
    assert resampled.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(
        np.transpose(sitk.GetArrayFromImage(resampled), (2, 1, 0)),
        np.transpose(sitk.GetArrayFromImage(reference), (2, 1, 0)),
        atol=1e-3,
    )


def test_resample_label_keeps_label_values() -> None:
    reference = sitk.Image([17, 13, 5], sitk.sitkFloat32)
    reference.SetSpacing((0.73, 0.73, 2.9))
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[1:4, 3:9, 3:9] = 3
    labels[2:5, 10:18, 8:15] = 7
    moving = sitk.GetImageFromArray(labels)
    moving.SetSpacing((0.5, 0.5, 2.0))

    resampled = resample_to_reference(moving, reference, is_label=True)
    values = set(np.unique(sitk.GetArrayFromImage(resampled)))
    assert resampled.GetPixelID() == sitk.sitkUInt8
    assert values == {0, 3, 7}


def test_align_same_grid_passes_through() -> None:
    image = _ramp_image((10, 10, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    aligned, record = align_series(_volume(image), _volume(image), SequenceRole.T2, register=False)
    assert aligned is image
    assert record.method == AlignmentMethod.SAME_GRID.value
    assert record.role is SequenceRole.T2


def test_align_different_frame_is_recorded() -> None:
    reference = _ramp_image((10, 10, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    moving = _ramp_image((12, 12, 5), (1.0, 1.0, 2.0), (-1.0, -1.0, -1.0))
    aligned, record = align_series(_volume(moving, "9.8.7"), _volume(reference), SequenceRole.T1, register=False)
    assert record.method == AlignmentMethod.RESAMPLED_DIFFERENT_FRAME.value
    np.testing.assert_allclose(sitk.GetArrayFromImage(aligned), sitk.GetArrayFromImage(reference), atol=1e-3)


def test_align_without_overlap_rejected() -> None:
    reference = _ramp_image((10, 10, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    moving = _ramp_image((10, 10, 4), (1.0, 1.0, 2.0), (500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not overlap") as info:
        align_series(_volume(moving), _volume(reference), SequenceRole.T2, register=False)
    assert info.value.code == "series_do_not_overlap"


def _blobs(points: np.ndarray) -> np.ndarray:
    centres = [(-8.0, -5.0, 0.0), (9.0, 4.0, -6.0), (0.0, 10.0, 8.0)]
    widths = [6.0, 4.0, 5.0]
    total = np.zeros(points.shape[:-1])
    for centre, width in zip(centres, widths):
        total += 1000 * np.exp(-np.sum((points - centre) ** 2, axis=-1) / (2 * width**2))
    return total


def test_rigid_registration_recovers_translation() -> None:
    grid = sitk.Image([40, 40, 24], sitk.sitkFloat32)
    grid.SetSpacing((1.5, 1.5, 2.0))
    grid.SetOrigin((-30.0, -30.0, -24.0))
    reference = _fill(grid, _blobs)
    shift = np.array([2.5, -1.5, 2.0])
    moving = _fill(grid, lambda p: _blobs(p - shift))

    aligned, record = align_series(_volume(moving, "4.5.6"), _volume(reference), SequenceRole.T2, register=True)
    assert record.method == AlignmentMethod.RIGID_REGISTRATION.value
    translation = np.array(record.transform[3:6])
    assert np.linalg.norm(translation - shift) < 1.0
    assert np.max(np.abs(record.transform[:3])) < 0.05
    assert record.metric_value is not None
    assert aligned.GetSize() == reference.GetSize()

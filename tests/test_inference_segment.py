"""Tests for slice-wise tumour segmentation, post-processing and measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.errors import InputError
from inference.model_package import load_segmentation_model
from inference.result import GridGeometry, SequenceRole
from inference.segment import (
    make_trimap,
    max_diameter_mm,
    model_input_slices,
    postprocess_mask,
    predict_mask,
    tumour_volume_mm3,
)
from tests.inference_helpers import make_manifest, threshold_model, write_tiny_package


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _geometry(shape_zyx, spacing=(1.0, 1.0, 1.0), direction=tuple(np.eye(3).ravel())) -> GridGeometry:
    return GridGeometry(
        origin=(0.0, 0.0, 0.0), spacing=spacing, direction=direction, size=tuple(reversed(shape_zyx))
    )


def _blob(shape=(8, 48, 64)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 10:30, 20:50] = 1
    return mask


def test_trimap_marks_border_around_edge() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    trimap = make_trimap(mask, border_px=2)
    assert trimap[10, 10] == 1
    assert trimap[0, 0] == 0
    assert trimap[5, 10] == 2
    assert trimap[3, 10] == 2
    assert trimap[2, 10] == 0
    assert trimap[7, 10] == 1
    assert set(np.unique(trimap)) == {0, 1, 2}


def test_trimap_3d_works_per_slice() -> None:
    mask = np.zeros((3, 20, 20), np.uint8)
    mask[1, 5:15, 5:15] = 1
    trimap = make_trimap(mask, border_px=1)
    assert trimap.shape == (3, 20, 20)
    assert not trimap[0].any()
    assert not trimap[2].any()
    np.testing.assert_array_equal(trimap[1], make_trimap(mask[1], border_px=1))


def test_postprocess_keeps_largest_component() -> None:
    mask = np.zeros((10, 30, 30), np.uint8)
    mask[2:8, 2:12, 2:12] = 1
    mask[2:4, 20:23, 20:23] = 1
    result = postprocess_mask(mask, (1.0, 1.0, 1.0), min_component_mm3=1.0)
    assert result[5, 5, 5] == 1
    assert result[3, 21, 21] == 0
    assert result.sum() == 6 * 10 * 10


def test_postprocess_fills_holes() -> None:
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[1:5, 4:16, 4:16] = 1
    mask[2:4, 8:12, 8:12] = 0
    mask[1, 9:11, 9:11] = 0
    result = postprocess_mask(mask, (1.0, 1.0, 1.0), min_component_mm3=1.0)
    assert result[3, 10, 10] == 1
    assert result[1, 10, 10] == 1
    assert result.sum() == 4 * 12 * 12


def test_postprocess_drops_small_component() -> None:
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[2:4, 5:8, 5:8] = 1
    result = postprocess_mask(mask, (0.5, 0.5, 2.0), min_component_mm3=10.0)
    assert not result.any()
    large_enough = postprocess_mask(mask, (0.5, 0.5, 2.0), min_component_mm3=8.0)
    assert large_enough.sum() == 18


def test_volume_counts_voxels_times_spacing() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1:3, 1:4, 1:5] = 1
    assert tumour_volume_mm3(mask, (0.5, 0.5, 3.0)) == pytest.approx(24 * 0.75)


def test_max_diameter_of_box_is_diagonal() -> None:
    mask = np.zeros((10, 20, 30), np.uint8)
    mask[2:7, 3:13, 4:24] = 1
    spacing = (0.5, 0.8, 3.0)
    expected = np.sqrt((19 * 0.5) ** 2 + (9 * 0.8) ** 2 + (4 * 3.0) ** 2)
    assert max_diameter_mm(mask, _geometry(mask.shape, spacing)) == pytest.approx(expected)


def test_max_diameter_ignores_rotation() -> None:
    mask = np.zeros((10, 20, 30), np.uint8)
    mask[2:7, 3:13, 4:24] = 1
    angle = np.radians(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    straight = max_diameter_mm(mask, _geometry(mask.shape, (0.5, 0.8, 3.0)))
    rotated = max_diameter_mm(mask, _geometry(mask.shape, (0.5, 0.8, 3.0), tuple(rotation.ravel())))
    assert rotated == pytest.approx(straight)


def test_max_diameter_of_sphere_near_twice_radius() -> None:
    grid = np.indices((41, 41, 41)) - 20
    mask = (np.sqrt((grid**2).sum(axis=0)) <= 15).astype(np.uint8)
    assert max_diameter_mm(mask, _geometry(mask.shape)) == pytest.approx(30.0, abs=1.0)


def test_max_diameter_of_flat_mask() -> None:
    mask = np.zeros((3, 20, 20), np.uint8)
    mask[1, 2:8, 2:6] = 1
    expected = np.hypot(5.0, 3.0)
    assert max_diameter_mm(mask, _geometry(mask.shape)) == pytest.approx(expected)
    line = np.zeros((3, 20, 20), np.uint8)
    line[1, 4, 2:12] = 1
    assert max_diameter_mm(line, _geometry(line.shape)) == pytest.approx(9.0)
    assert max_diameter_mm(np.zeros((2, 2, 2), np.uint8), _geometry((2, 2, 2))) == 0.0


def test_predict_mask_finds_bright_blob() -> None:
    truth = _blob()
    image = _image(truth * 1000.0 + 10.0, spacing=(0.5, 0.5, 3.0))
    mask = predict_mask(threshold_model(("ce_t1",)), {SequenceRole.CE_T1: image}, min_component_mm3=1.0)
    assert mask.shape == truth.shape
    assert mask.dtype == np.uint8
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_predict_mask_flipped_image_maps_back() -> None:
    truth = _blob()
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    image = _image(truth * 1000.0 + 10.0, spacing=(0.5, 0.5, 3.0), direction=flipped)
    mask = predict_mask(threshold_model(("ce_t1",)), {SequenceRole.CE_T1: image}, min_component_mm3=1.0)
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_model_input_is_axial_lps() -> None:
    array = np.zeros((4, 32, 32), np.float32)
    # Bright corner block of 2% of the voxels, above the 99th-percentile clip.
    array[0, :8, :8] = 100.0
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    image = _image(array, direction=flipped)
    inputs = model_input_slices({SequenceRole.CE_T1: image}, make_manifest(("ce_t1",)))
    assert inputs.shape == (4, 32, 32, 1)
    # Slice 0 rows 0-7 are the most superior and posterior voxels, so in LPS
    # order they land in the last slice and the last rows.
    channel = inputs[..., 0]
    assert channel[3, 24:, :8].min() > channel.mean()
    assert channel[0, :8, :8].max() < channel.mean()
    assert np.count_nonzero(channel == channel.max()) == 64


def test_predict_mask_is_deterministic(tmp_path: Path) -> None:
    model = load_segmentation_model(write_tiny_package(tmp_path / "pkg", ("ce_t1", "t2", "t1")))
    rng = np.random.default_rng(5)
    volumes = {role: _image(rng.normal(size=(5, 40, 40))) for role in SequenceRole}
    first = predict_mask(model, volumes, batch_size=2, min_component_mm3=0.0)
    second = predict_mask(model, volumes, batch_size=3, min_component_mm3=0.0)
    assert first.shape == (5, 40, 40)
    np.testing.assert_array_equal(first, second)


def test_predict_mask_missing_role_rejected() -> None:
    model = threshold_model(("ce_t1",))
    with pytest.raises(InputError, match=r"needs series \['ce_t1'\]") as info:
        predict_mask(model, {SequenceRole.T2: _image(np.zeros((3, 8, 8)))})
    assert info.value.code == "missing_series"


def test_predict_mask_misaligned_volumes_rejected() -> None:
    model = threshold_model(("ce_t1", "t2"))
    volumes = {
        SequenceRole.CE_T1: _image(np.zeros((3, 8, 8))),
        SequenceRole.T2: _image(np.zeros((3, 8, 8)), origin=(0.0, 0.0, 5.0)),
    }
    with pytest.raises(InputError, match="T2 volume is not on the grid of the CE-T1") as info:
        predict_mask(model, volumes)
    assert info.value.code == "misaligned_volumes"


def test_max_diameter_of_mask_touching_edges() -> None:
    mask = np.ones((3, 4, 5), np.uint8)
    expected = np.sqrt(4**2 + 3**2 + 2**2)
    assert max_diameter_mm(mask, _geometry(mask.shape)) == pytest.approx(expected)

"""Behaviour of the node's radiomics extraction on small synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from inference.errors import InputError
from inference.radiomics import extract_tumour_features
from inference.result import SequenceRole

SPACING = (0.5, 0.5, 4.0)
SHAPE_ZYX = (8, 64, 64)


def _image(seed: int, mask_array: np.ndarray) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(400.0, 40.0, SHAPE_ZYX) + mask_array * rng.normal(250.0, 60.0, SHAPE_ZYX)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin((-16.0, -20.0, 10.0))
    return image


def _lesion_mask_array(radius_mm: float = 8.0) -> np.ndarray:
    z, y, x = np.mgrid[0 : SHAPE_ZYX[0], 0 : SHAPE_ZYX[1], 0 : SHAPE_ZYX[2]]
    distance = np.sqrt(
        ((x - 32) * SPACING[0]) ** 2 + ((y - 32) * SPACING[1]) ** 2 + ((z - 4) * SPACING[2]) ** 2
    )
    return (distance < radius_mm).astype(np.uint8)


def _mask_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(reference)
    return mask


@pytest.fixture(scope="module")
def study() -> tuple[dict[SequenceRole, sitk.Image], sitk.Image]:
    mask_array = _lesion_mask_array()
    images = {role: _image(seed, mask_array) for seed, role in enumerate(SequenceRole)}
    return images, _mask_like(mask_array, images[SequenceRole.CE_T1])


def test_feature_names_carry_sequence_prefix(study) -> None:
    images, mask = study

    result = extract_tumour_features(images, mask)

    assert result.status == "ok"
    assert "ce_t1_original_glcm_Contrast" in result.features
    assert "t2_original_firstorder_Mean" in result.features
    assert "t1_original_ngtdm_Busyness" in result.features
    for name in result.features:
        role, _, rest = name.partition("_original_")
        assert role in {r.value for r in SequenceRole}
        assert rest.split("_")[0] in {
            "shape",
            "firstorder",
            "glcm",
            "glrlm",
            "glszm",
            "gldm",
            "ngtdm",
        }
    shape_roles = {name.split("_original_")[0] for name in result.features if "_shape_" in name}
    assert shape_roles == {"ce_t1"}
    assert all(np.isfinite(value) for value in result.features.values())


def test_sequences_get_same_feature_set(study) -> None:
    images, mask = study

    result = extract_tumour_features(images, mask)

    per_role = {
        role.value: {
            n.removeprefix(role.value + "_")
            for n in result.features
            if n.startswith(role.value + "_")
        }
        for role in SequenceRole
    }
    shape = {n for n in per_role["ce_t1"] if n.startswith("original_shape_")}
    assert len(shape) > 10
    assert per_role["t2"] == per_role["ce_t1"] - shape
    assert per_role["t1"] == per_role["t2"]


def test_empty_mask_gives_roi_too_small(study) -> None:
    images, mask = study
    empty = _mask_like(np.zeros(SHAPE_ZYX, np.uint8), mask)

    result = extract_tumour_features(images, empty)

    assert result.status == "roi_too_small"
    assert result.features == {}
    assert "no voxels" in result.message


def test_few_voxel_mask_gives_roi_too_small(study, capfd) -> None:
    images, mask = study
    array = np.zeros(SHAPE_ZYX, np.uint8)
    array[4, 30:32, 30:32] = 1

    result = extract_tumour_features(images, _mask_like(array, mask))

    assert result.status == "roi_too_small"
    assert result.features == {}
    assert "too small" in result.message
    assert capfd.readouterr().err == ""


def test_single_voxel_mask_gives_roi_too_small(study) -> None:
    images, mask = study
    array = np.zeros(SHAPE_ZYX, np.uint8)
    array[0, 0, 0] = 1

    result = extract_tumour_features(images, _mask_like(array, mask))

    assert result.status == "roi_too_small"


def test_mask_cut_by_image_edge_is_extracted(study) -> None:
    images, mask = study
    array = np.zeros(SHAPE_ZYX, np.uint8)
    # A lesion whose centre lies outside the field of view: only a corner remains.
    array[:3, :12, :12] = 1

    result = extract_tumour_features(images, _mask_like(array, mask))

    assert result.status == "ok"
    assert result.features["ce_t1_original_shape_VoxelVolume"] == pytest.approx(
        3 * 12 * 12 * 0.5 * 0.5 * 4.0
    )


def test_sliver_at_image_edge_gives_roi_too_small(study) -> None:
    images, mask = study
    array = np.zeros(SHAPE_ZYX, np.uint8)
    array[-1, 0, :3] = 1

    result = extract_tumour_features(images, _mask_like(array, mask))

    assert result.status == "roi_too_small"
    assert "3 voxels" in result.message


def test_geometry_within_tolerance_is_accepted(study) -> None:
    images, mask = study
    shifted = sitk.Image(mask)
    shifted.SetOrigin(tuple(o + 5e-5 for o in mask.GetOrigin()))
    shifted.SetSpacing(tuple(s + 5e-5 for s in mask.GetSpacing()))
    direction = list(mask.GetDirection())
    direction[1] = 5e-5
    shifted.SetDirection(direction)

    exact = extract_tumour_features(images, mask)
    tolerated = extract_tumour_features(images, shifted)

    assert tolerated.status == "ok"
    assert tolerated.features == exact.features


@pytest.mark.parametrize("field", ["origin", "spacing", "direction"])
def test_geometry_beyond_tolerance_raises(study, field: str) -> None:
    images, mask = study
    moved = sitk.Image(mask)
    if field == "origin":
        moved.SetOrigin(tuple(o + 1e-3 for o in mask.GetOrigin()))
    elif field == "spacing":
        moved.SetSpacing(tuple(s + 1e-3 for s in mask.GetSpacing()))
    else:
        direction = list(mask.GetDirection())
        direction[1] = 1e-3
        moved.SetDirection(direction)

    with pytest.raises(InputError, match=f"mask's {field}") as info:
        extract_tumour_features(images, moved)
    assert info.value.code == "mask_geometry_mismatch"


def test_empty_mask_off_grid_raises(study) -> None:
    images, mask = study
    empty = _mask_like(np.zeros(SHAPE_ZYX, np.uint8), mask)
    empty.SetOrigin(tuple(o + 1.0 for o in mask.GetOrigin()))

    with pytest.raises(InputError, match="mask's origin"):
        extract_tumour_features(images, empty)


def test_mask_size_mismatch_raises(study) -> None:
    images, mask = study
    smaller = sitk.RegionOfInterest(mask, (32, 32, 8), (0, 0, 0))

    with pytest.raises(InputError, match="has size") as info:
        extract_tumour_features(images, smaller)
    assert info.value.code == "mask_geometry_mismatch"


def test_series_off_mask_grid_raises(study) -> None:
    images, mask = study
    t2 = sitk.Image(images[SequenceRole.T2])
    t2.SetOrigin(tuple(o + 2.0 for o in t2.GetOrigin()))

    with pytest.raises(InputError, match="T2 series"):
        extract_tumour_features({**images, SequenceRole.T2: t2}, mask)


def test_missing_ce_t1_raises(study) -> None:
    images, mask = study

    with pytest.raises(ValueError, match="must contain CE-T1"):
        extract_tumour_features({SequenceRole.T2: images[SequenceRole.T2]}, mask)


def test_nonbinary_mask_values_count_as_tumour(study) -> None:
    images, mask = study
    relabelled = sitk.Cast(mask, sitk.sitkUInt8) * 7

    assert (
        extract_tumour_features(images, relabelled).features
        == extract_tumour_features(images, mask).features
    )

"""Tests for building volumes from MR series: geometry, checks and decoding."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from inference.errors import InputError
from inference.volume import load_series
from tests.inference_helpers import slice_positions, write_enhanced_mr, write_mr_series

SHAPE = (6, 20, 24)


def _pixels(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=shape, dtype=np.uint16)


def _read_with_simpleitk(paths: list[Path]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    folder = str(paths[0].parent)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return reader.Execute()


def _assert_same_geometry(ours: sitk.Image, reference: sitk.Image) -> None:
    np.testing.assert_allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ours.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(ours.GetDirection(), reference.GetDirection(), atol=1e-5)
    assert ours.GetSize() == reference.GetSize()


def test_single_frame_series_geometry_and_order(tmp_path: Path) -> None:
    pixels = _pixels()
    paths = write_mr_series(tmp_path, pixels, spacing=(0.5, 0.6, 3.0), origin=(-10, -20, 5))
    volume = load_series(paths)

    assert volume.image.GetSize() == (24, 20, 6)
    np.testing.assert_allclose(volume.image.GetSpacing(), (0.5, 0.6, 3.0))
    np.testing.assert_allclose(volume.image.GetOrigin(), (-10, -20, 5))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), pixels.astype(np.float32))
    assert volume.image.GetPixelID() == sitk.sitkFloat32
    expected_uids = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    assert volume.sop_instance_uids == tuple(expected_uids)
    assert volume.frame_numbers == (None,) * 6
    assert volume.series_instance_uid == pydicom.dcmread(paths[0]).SeriesInstanceUID
    assert "PixelData" not in volume.first_dataset
    assert volume.first_dataset.SOPInstanceUID == expected_uids[0]
    assert volume.notes == []


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
        ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
        ((0.9659258, 0.2588190, 0.0), (0.0, 0.8660254, -0.5)),
    ],
    ids=["negated_column", "sagittal", "oblique"],
)
def test_orientation_matches_simpleitk_reader(tmp_path: Path, row: tuple, column: tuple) -> None:
    # Make the oblique cosines exactly orthogonal before writing them.
    row_vector = np.array(row) / np.linalg.norm(row)
    column_vector = np.array(column) - np.dot(column, row_vector) * row_vector
    column_vector /= np.linalg.norm(column_vector)
    pixels = _pixels(1)
    paths = write_mr_series(tmp_path, pixels, row=row_vector, column=column_vector)

    volume = load_series(paths)
    reference = _read_with_simpleitk(paths)
    _assert_same_geometry(volume.image, reference)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(reference).astype(np.float32)
    )


def test_rescale_slope_and_intercept_applied(tmp_path: Path) -> None:
    pixels = _pixels(2)
    paths = write_mr_series(tmp_path, pixels, slope=0.5, intercept=-100.0)
    array = sitk.GetArrayFromImage(load_series(paths).image)
    np.testing.assert_allclose(array, pixels * 0.5 - 100.0)


def test_enhanced_mr_matches_single_frame(tmp_path: Path) -> None:
    pixels = _pixels(3)
    column = (0.0, -1.0, 0.0)
    single = load_series(write_mr_series(tmp_path / "single", pixels, column=column))
    path = write_enhanced_mr(tmp_path / "enhanced.dcm", pixels, column=column, frame_order=[3, 0, 5, 1, 4, 2])
    enhanced = load_series([path])

    _assert_same_geometry(enhanced.image, single.image)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(enhanced.image), sitk.GetArrayFromImage(single.image)
    )
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert enhanced.sop_instance_uids == (uid,) * 6
    assert enhanced.frame_numbers == (2, 4, 6, 1, 5, 3)


def test_slice_gap_names_series_and_position(tmp_path: Path) -> None:
    paths = write_mr_series(tmp_path, _pixels(4), origin=(0, 0, 0), spacing=(0.5, 0.5, 3.0))
    series_uid = pydicom.dcmread(paths[0]).SeriesInstanceUID
    del paths[3]

    with pytest.raises(InputError, match=r"missing 1 slice\(s\) between 6.00 mm and 12.00 mm") as info:
        load_series(paths)
    assert info.value.code == "slice_gap"
    assert info.value.series_instance_uid == series_uid
    assert series_uid in str(info.value)


def test_nonuniform_spacing_rejected(tmp_path: Path) -> None:
    positions = slice_positions(6, 3.0, (0, 0, 0), (1, 0, 0), (0, 1, 0))
    positions[4:, 2] += 1.0
    paths = write_mr_series(tmp_path, _pixels(5), positions=positions)
    with pytest.raises(InputError, match="non-uniform slice spacing: 4.00 mm") as info:
        load_series(paths)
    assert info.value.code == "nonuniform_spacing"


def test_duplicate_positions_rejected(tmp_path: Path) -> None:
    positions = slice_positions(6, 3.0, (0, 0, 0), (1, 0, 0), (0, 1, 0))
    positions[5] = positions[4]
    paths = write_mr_series(tmp_path, _pixels(6), positions=positions)
    with pytest.raises(InputError, match="two slices at the same position 12.00 mm") as info:
        load_series(paths)
    assert info.value.code == "duplicate_positions"


def test_mixed_orientation_rejected(tmp_path: Path) -> None:
    series_uid = pydicom.uid.generate_uid()
    frame_uid = pydicom.uid.generate_uid()
    paths = write_mr_series(tmp_path / "a", _pixels(7), series_uid=series_uid, frame_of_reference_uid=frame_uid)
    paths += write_mr_series(
        tmp_path / "b",
        _pixels(8, (1, 20, 24)),
        series_uid=series_uid,
        frame_of_reference_uid=frame_uid,
        column=(0.0, 0.0, 1.0),
    )
    with pytest.raises(InputError, match="mixes different Image Orientation") as info:
        load_series(paths)
    assert info.value.code == "inconsistent_stack"


def test_mixed_sizes_rejected(tmp_path: Path) -> None:
    series_uid = pydicom.uid.generate_uid()
    paths = write_mr_series(tmp_path / "a", _pixels(9), series_uid=series_uid)
    paths += write_mr_series(
        tmp_path / "b", _pixels(10, (1, 16, 24)), series_uid=series_uid, origin=(-32, -40, 100)
    )
    with pytest.raises(InputError, match=r"mixes slice sizes \(20, 24\) and \(16, 24\)"):
        load_series(paths)


def test_two_series_rejected(tmp_path: Path) -> None:
    paths = write_mr_series(tmp_path / "a", _pixels(11)) + write_mr_series(tmp_path / "b", _pixels(12))
    with pytest.raises(InputError, match="belong to 2 series") as info:
        load_series(paths)
    assert info.value.code == "mixed_series"


def test_non_dicom_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(InputError, match="could not be read as DICOM") as info:
        load_series([path])
    assert info.value.code == "unreadable_file"


def test_sheared_stack_resampled_with_note(tmp_path: Path) -> None:
    # Gantry tilt: each slice is shifted 1 mm along y, with 2 mm slice spacing.
    pixels = np.zeros((5, 20, 24), np.uint16)
    step = np.array([0.0, 1.0, 2.0])
    positions = np.array([0.0, 0.0, 0.0]) + np.outer(np.arange(5), step)
    pixels[:, 8, 10] = 1000
    paths = write_mr_series(tmp_path, pixels, spacing=(1.0, 1.0, 2.0), positions=positions)

    volume = load_series(paths)
    assert len(volume.notes) == 1
    assert "sheared stack (gantry tilt about 26.6 degrees)" in volume.notes[0]
    assert volume.image.GetSize() == (24, 24, 5)
    np.testing.assert_allclose(volume.image.GetDirection(), np.eye(3).ravel())

    array = sitk.GetArrayFromImage(volume.image)
    for k in range(5):
        # Slice k's bright voxel sits at patient (10, 8 + k, 2k).
        index = volume.image.TransformPhysicalPointToIndex((10.0, 8.0 + k, 2.0 * k))
        assert array[index[2], index[1], index[0]] == pytest.approx(1000.0)
        assert array[k].sum() == pytest.approx(1000.0)


def _compress_with_pydicom(paths: list[Path], syntax: str) -> list[Path]:
    compressed = []
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.compress(syntax)
        target = path.with_name(f"c_{path.name}")
        dataset.save_as(target)
        compressed.append(target)
    return compressed


def _compress_with_dcmtk(paths: list[Path], tool: str) -> list[Path]:
    if shutil.which(tool) is None:
        pytest.skip(f"DCMTK's {tool} is not installed")
    compressed = []
    for path in paths:
        target = path.with_name(f"c_{path.name}")
        subprocess.run([tool, str(path), str(target)], check=True, capture_output=True, timeout=30)
        compressed.append(target)
    return compressed


@pytest.mark.parametrize(
    ("syntax", "tool"),
    [
        (RLELossless, None),
        (JPEGLSLossless, None),
        (JPEG2000Lossless, None),
        (RLELossless, "dcmcrle"),
        (JPEGLSLossless, "dcmcjpls"),
        (JPEGLosslessSV1, "dcmcjpeg"),
    ],
    ids=["rle_pydicom", "jpegls_pydicom", "j2k_pydicom", "rle_dcmtk", "jpegls_dcmtk", "jpeg_lossless_dcmtk"],
)
def test_compressed_series_decodes_identically(tmp_path: Path, syntax: str, tool: str | None) -> None:
    # OpenJPEG needs planes of at least 32 x 32 for its default number of resolutions.
    pixels = _pixels(13, (4, 64, 64)) // 2
    paths = write_mr_series(tmp_path, pixels)
    original = sitk.GetArrayFromImage(load_series(paths).image)

    compressed = _compress_with_dcmtk(paths, tool) if tool else _compress_with_pydicom(paths, syntax)
    assert pydicom.dcmread(compressed[0]).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(sitk.GetArrayFromImage(load_series(compressed).image), original)


def test_undecodable_syntax_names_syntax(tmp_path: Path) -> None:
    paths = write_mr_series(tmp_path, _pixels(14))
    dataset = pydicom.dcmread(paths[0])
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    dataset.PixelData = encapsulate([b"\x00" * 16])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(paths[0])

    with pytest.raises(InputError, match="could not be decoded from transfer syntax MPEG2") as info:
        load_series(paths)
    assert info.value.code == "undecodable_pixel_data"
    assert "install" in info.value.hint


def test_philips_sagittal_matches_simpleitk(tmp_path: Path, test_data_dir: Path) -> None:
    source = test_data_dir / "mr_dicom_series" / "philips_3T_T1_mprage_sag3d"
    paths = []
    for gz_path in sorted(source.glob("*.gz")):
        target = tmp_path / gz_path.stem
        target.write_bytes(gzip.decompress(gz_path.read_bytes()))
        paths.append(target)
    assert len(paths) == 170

    volume = load_series(paths)
    reference = _read_with_simpleitk(paths)
    _assert_same_geometry(volume.image, reference)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(reference), rtol=1e-5, atol=1e-3
    )


def test_ge_adc_matches_simpleitk(test_data_dir: Path) -> None:
    paths = sorted((test_data_dir / "mr_dicom_series" / "dcmqi_qin_prostate_adc" / "701-ADCb500").glob("*.dcm"))
    volume = load_series(paths)
    reference = _read_with_simpleitk(paths)
    _assert_same_geometry(volume.image, reference)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(reference), rtol=1e-5, atol=1e-3
    )


def test_gap_in_three_slices_detected(tmp_path: Path) -> None:
    paths = write_mr_series(tmp_path, _pixels(15, (4, 20, 24)), origin=(0, 0, 0), spacing=(0.5, 0.5, 2.0))
    del paths[1]
    with pytest.raises(InputError, match=r"missing 1 slice\(s\) between 0.00 mm and 4.00 mm") as info:
        load_series(paths)
    assert info.value.code == "slice_gap"

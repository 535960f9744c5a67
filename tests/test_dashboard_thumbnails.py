"""CE-T1 thumbnails: the slice with the largest tumour area, its contour, and the fallbacks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from dicom_node.dashboard.thumbnails import ThumbnailSource, _read_slices, build_thumbnail, tumour_areas
from tests.dashboard_helpers import SIZE, TUMOUR_SLICE, make_ce_t1_slices, make_seg
from tests.receive_helpers import make_enhanced_mr

RED = (255, 0, 0)


def write_study(folder: Path) -> tuple[list[Path], Path, list]:
    slices = make_ce_t1_slices(generate_uid(), generate_uid())
    folder.mkdir(parents=True, exist_ok=True)
    # Stored in reverse order, so the thumbnail cannot rely on file order.
    paths = []
    for ds in reversed(slices):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    seg_path = folder / "seg.dcm"
    make_seg(slices).save_as(seg_path, enforce_file_format=True)
    return paths, seg_path, slices


def red_pixels(png: bytes) -> np.ndarray:
    rgb = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
    return np.argwhere(np.all(rgb == RED, axis=-1))


def test_contour_on_largest_tumour_slice(tmp_path: Path) -> None:
    paths, seg_path, slices = write_study(tmp_path)
    areas = tumour_areas(seg_path)
    largest = max(areas, key=lambda key: int(areas[key].sum()))
    assert largest == (slices[TUMOUR_SLICE].SOPInstanceUID, 1)

    png = build_thumbnail(ThumbnailSource("1.2.3", tuple(paths), seg_path, "1.2.4"))
    image = Image.open(io.BytesIO(png))
    contour = red_pixels(png)
    scale = image.width // SIZE
    assert image.width >= 256
    assert len(contour) > 0
    # The blob is centred at row 30, column 34 and has a radius of 8 pixels.
    centre = contour.mean(axis=0) / scale
    assert abs(centre[0] - 30) < 1.5
    assert abs(centre[1] - 34) < 1.5
    assert contour[:, 0].max() / scale < 30 + 9


def test_no_seg_shows_middle_slice(tmp_path: Path) -> None:
    paths, _seg_path, _slices = write_study(tmp_path)
    png = build_thumbnail(ThumbnailSource("1.2.3", tuple(paths), None, None))
    rgb = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
    assert len(red_pixels(png)) == 0
    # The label is drawn in anti-aliased yellow; the grey image has no such pixel.
    yellowish = (rgb[..., 0] > 150) & (rgb[..., 1] > 150) & (rgb[..., 2] < 60)
    assert np.any(yellowish)


def test_enhanced_mr_frames_become_slices(tmp_path: Path) -> None:
    dataset = make_enhanced_mr(generate_uid(), generate_uid(), frames=4)
    path = tmp_path / "enhanced.dcm"
    dataset.save_as(path, enforce_file_format=True)
    slices = _read_slices((path,))
    assert sorted(slices) == [(dataset.SOPInstanceUID, frame) for frame in (1, 2, 3, 4)]
    positions = [slices[(dataset.SOPInstanceUID, frame)].position for frame in (1, 2, 3, 4)]
    assert positions == [0.0, 4.0, 8.0, 12.0]
    assert slices[(dataset.SOPInstanceUID, 2)].pixels.shape == (32, 32)

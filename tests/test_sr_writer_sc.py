"""Tests of the optional Secondary Capture with the burned-in tumour outline."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from inference.result import SequenceRole
from sr_writer import WriterOptions, build_outputs
from sr_writer.common import SourceSlice
from sr_writer.secondary_capture import patient_orientation, tumour_slices

from . import sr_helpers as helpers


def _capture(study: helpers.SyntheticStudy) -> pydicom.Dataset:
    outputs = build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True))
    captures = [ds for ds in outputs if ds.SOPClassUID == SecondaryCaptureImageStorage]
    assert len(captures) == 1
    return captures[0]


@pytest.fixture(scope="module")
def capture() -> pydicom.Dataset:
    return _capture(helpers.make_study())


def test_capture_is_rgb_burned_in(capture: pydicom.Dataset) -> None:
    assert capture.BurnedInAnnotation == "YES"
    assert capture.PhotometricInterpretation == "RGB"
    assert capture.SamplesPerPixel == 3
    assert capture.pixel_array.shape == (capture.Rows, capture.Columns, 3)


def test_capture_draws_red_outline(capture: pydicom.Dataset) -> None:
    pixels = capture.pixel_array.astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)

    assert red.sum() > 50


def test_capture_draws_yellow_text(capture: pydicom.Dataset) -> None:
    pixels = capture.pixel_array.astype(int)
    header = pixels[: capture.Rows // 8]
    yellow = (header[..., 0] > 180) & (header[..., 1] > 180) & (header[..., 2] < 80)

    assert yellow.sum() > 50


def test_capture_not_built_by_default() -> None:
    study = helpers.make_study()
    outputs = build_outputs(study.result, study.sources, WriterOptions())

    assert SecondaryCaptureImageStorage not in [ds.SOPClassUID for ds in outputs]


def test_capture_keeps_study_identity(capture: pydicom.Dataset) -> None:
    assert capture.Modality == "OT"
    assert str(capture.PatientName) == "Doe^Jane"
    assert capture.StudyInstanceUID


def test_tumour_slices_pick_largest_areas() -> None:
    mask = np.zeros((8, 4, 4), np.uint8)
    areas = [0, 3, 1, 5, 0, 2, 4, 0]
    for k, area in enumerate(areas):
        mask[k].flat[:area] = 1

    assert tumour_slices(mask) == [1, 3, 5, 6]


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [(helpers.AXIAL, ("L", "P")), (helpers.NEGATED_COLUMNS, ("L", "A")), (helpers.OBLIQUE, ("L", "P"))],
)
def test_patient_orientation_letters(orientation: tuple, expected: tuple[str, str]) -> None:
    reference = pydicom.Dataset()
    reference.ImageOrientationPatient = list(orientation)

    assert patient_orientation(SourceSlice(reference)) == expected


def test_capture_needs_pixel_data() -> None:
    study = helpers.make_study()
    for ds in study.sources[SequenceRole.CE_T1]:
        del ds.PixelData

    with pytest.raises(ValueError, match="has no pixel data"):
        build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True))


def test_seg_and_sr_need_headers_only() -> None:
    study = helpers.make_study()
    for datasets in study.sources.values():
        for ds in datasets:
            del ds.PixelData

    outputs = build_outputs(study.result, study.sources, WriterOptions())

    assert [ds.Modality for ds in outputs] == ["SEG", "SR"]

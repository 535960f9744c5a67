"""Tests of the SEG, SR and Secondary Capture on an Enhanced MR (multi-frame) CE-T1 series."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, EnhancedMRImageStorage, SegmentationStorage

from inference.result import SequenceRole
from sr_writer import WriterOptions, build_outputs
from sr_writer.common import ordered_ce_t1_sources
from sr_writer.validate import dciodvfy_errors

from . import sr_helpers as helpers

POSITION_TOLERANCE_MM = 1e-3
# Frame i + 1 of the Enhanced MR instance contains mask slice FRAME_ORDER[i].
# This is neither z order nor its reverse, so a writer that ignores frame
# numbers fails.
FRAME_ORDER = (3, 0, 7, 1, 5, 2, 6, 4)


@dataclasses.dataclass
class Written:
    """An Enhanced MR study, its single-frame slices as geometric truth, and the outputs on it."""

    study: helpers.SyntheticStudy
    slices: list[pydicom.Dataset]
    seg: pydicom.Dataset
    sr: pydicom.Dataset
    seg_path: Path

    @property
    def enhanced(self) -> pydicom.Dataset:
        return self.study.sources[SequenceRole.CE_T1][0]


def _of_class(outputs: list[pydicom.Dataset], sop_class_uid: str) -> pydicom.Dataset:
    found = [ds for ds in outputs if ds.SOPClassUID == sop_class_uid]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    study, slices = helpers.make_enhanced_study(frame_order=FRAME_ORDER)
    outputs = build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True))
    seg = _of_class(outputs, SegmentationStorage)
    sr = _of_class(outputs, ComprehensiveSRStorage)
    assert [ds.Modality for ds in outputs] == ["SEG", "SR", "OT"]
    path = helpers.save(seg, tmp_path_factory.mktemp("enhanced"), "seg.dcm")
    return Written(study, slices, seg, sr, path)


def test_enhanced_seg_passes_dciodvfy(written: Written) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed")
    completed = subprocess.run(
        ["dciodvfy", str(written.seg_path)],
        capture_output=True, text=True, errors="replace", timeout=helpers.TOOL_TIMEOUT_S, check=False,
    )

    assert dciodvfy_errors(completed.stdout + completed.stderr) == []


def test_enhanced_seg_geometry_matches_mask(written: Written) -> None:
    expected = helpers.source_mask_points(written.slices, written.study.result.segmentation.mask)
    actual = helpers.seg_mask_points(written.seg)

    assert len(actual) == len(expected)
    assert helpers.max_point_mismatch_mm(expected, actual) < POSITION_TOLERANCE_MM


def test_enhanced_seg_frames_reference_source_frames(written: Written) -> None:
    enhanced = written.enhanced
    source_positions = [
        [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        for group in enhanced.PerFrameFunctionalGroupsSequence
    ]
    referenced = set()
    for group in written.seg.PerFrameFunctionalGroupsSequence:
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        frame_number = int(source.ReferencedFrameNumber)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        referenced.add(frame_number)

        assert source.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        assert source.ReferencedSOPClassUID == EnhancedMRImageStorage
        assert np.allclose(position, source_positions[frame_number - 1], atol=POSITION_TOLERANCE_MM)
    assert referenced == set(range(1, len(FRAME_ORDER) + 1))


def test_enhanced_seg_references_source_series(written: Written) -> None:
    series = written.seg.ReferencedSeriesSequence

    assert [item.SeriesInstanceUID for item in series] == [written.enhanced.SeriesInstanceUID]
    assert [item.ReferencedSOPInstanceUID for item in series[0].ReferencedInstanceSequence] == [
        written.enhanced.SOPInstanceUID
    ]


def test_enhanced_seg_highdicom_readback_matches_mask(written: Written) -> None:
    segmentation = written.study.result.segmentation
    seg = hd.seg.segread(written.seg_path)
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=str(written.enhanced.SOPInstanceUID),
        source_frame_numbers=list(segmentation.source_frame_numbers),
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )

    assert pixels.shape == segmentation.mask.shape + (1,)
    assert np.array_equal(pixels[..., 0] > 0, segmentation.mask > 0)


@pytest.mark.peers
def test_enhanced_seg_dcmqi_readback_matches_mask(written: Written, tmp_path: Path) -> None:
    # dcmqi rebuilds the volume from the SEG's own functional groups, so it
    # reads a SEG on a multi-frame source as it reads any other.
    tool = helpers.dcmqi_tool("segimage2itkimage")
    helpers.run_tool([tool, "--inputDICOM", written.seg_path, "--outputDirectory", tmp_path, "-t", "nrrd"])
    expected = helpers.source_mask_points(written.slices, written.study.result.segmentation.mask)
    actual = helpers.image_mask_points(tmp_path / "1.nrrd")

    assert len(actual) == len(expected)
    assert helpers.max_point_mismatch_mm(expected, actual) < POSITION_TOLERANCE_MM


def test_enhanced_sr_image_library_names_instance(written: Written) -> None:
    library = helpers.find_items(written.sr, "Image Library")
    entries = [item for item in helpers.find_items(library[0], "Source (attribute)") if item.ValueType == "IMAGE"]
    reference = entries[0].ReferencedSOPSequence[0]
    descriptors = {helpers.concept_name(item) for item in helpers.content_items(entries[0])}

    assert len(library) == 1
    assert len(entries) == 1
    assert reference.ReferencedSOPInstanceUID == written.enhanced.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == EnhancedMRImageStorage
    assert {"modality", "frame of reference uid", "pixel data rows", "pixel data columns"} <= descriptors


def test_enhanced_sr_highdicom_readback(written: Written, tmp_path: Path) -> None:
    document = hd.sr.srread(helpers.save(written.sr, tmp_path, "sr.dcm"))
    group = hd.sr.MeasurementReport.from_sequence([document]).get_volumetric_roi_measurement_groups()[0]
    evidence = {
        series.SeriesInstanceUID
        for study_item in written.sr.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
    }

    assert group.referenced_segment.referenced_sop_instance_uid == written.seg.SOPInstanceUID
    assert group.referenced_segment.source_series_for_segmentation.value == written.enhanced.SeriesInstanceUID
    assert written.enhanced.SeriesInstanceUID in evidence


def test_source_slice_reads_its_frame(written: Written) -> None:
    # The Secondary Capture draws these pixels under the mask slice's outline.
    ordered = ordered_ce_t1_sources(written.study.result, written.study.sources)

    for k, (source, single_frame) in enumerate(zip(ordered, written.slices)):
        assert np.array_equal(source.pixels(), single_frame.pixel_array)
        assert source.image_orientation == [float(v) for v in single_frame.ImageOrientationPatient]
        assert source.label() == f"Fr {FRAME_ORDER.index(k) + 1}"


def test_enhanced_seg_omits_empty_frames() -> None:
    study, _ = helpers.make_enhanced_study(frame_order=FRAME_ORDER)
    outputs = build_outputs(study.result, study.sources, WriterOptions(omit_empty_frames=True))
    seg = _of_class(outputs, SegmentationStorage)
    mask = study.result.segmentation.mask
    frames_with_tumour = {
        study.result.segmentation.source_frame_numbers[k] for k in np.flatnonzero(mask.any(axis=(1, 2)))
    }
    referenced = {
        int(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for group in seg.PerFrameFunctionalGroupsSequence
    }

    assert referenced == frames_with_tumour
    assert len(referenced) < mask.shape[0]


def test_enhanced_seg_rejects_partial_frames() -> None:
    study, _ = helpers.make_enhanced_study(frame_order=FRAME_ORDER)
    segmentation = study.result.segmentation
    segmentation.mask = segmentation.mask[:-1]
    segmentation.source_sop_instance_uids = segmentation.source_sop_instance_uids[:-1]
    segmentation.source_frame_numbers = segmentation.source_frame_numbers[:-1]

    with pytest.raises(ValueError, match="needs every frame exactly once"):
        build_outputs(study.result, study.sources, WriterOptions())


def test_enhanced_seg_needs_frame_numbers() -> None:
    study, _ = helpers.make_enhanced_study(frame_order=FRAME_ORDER)
    study.result.segmentation.source_frame_numbers = ()

    with pytest.raises(ValueError, match="Enhanced MR Image Storage.*set result.segmentation.source_frame_numbers"):
        build_outputs(study.result, study.sources, WriterOptions())


def test_seg_rejects_several_multiframe_instances() -> None:
    study, slices = helpers.make_enhanced_study(frame_order=FRAME_ORDER)
    halves = [helpers.enhanced_mr_from_slices(slices, order) for order in (range(0, 4), range(4, 8))]
    segmentation = study.result.segmentation
    segmentation.source_sop_instance_uids = tuple(str(halves[k // 4].SOPInstanceUID) for k in range(8))
    segmentation.source_frame_numbers = tuple(k % 4 + 1 for k in range(8))
    study.sources[SequenceRole.CE_T1] = halves

    with pytest.raises(ValueError, match="lies on 2 CE-T1 instances.*Enhanced MR Image Storage"):
        build_outputs(study.result, study.sources, WriterOptions())

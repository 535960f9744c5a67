"""Tests of the tumour SEG: geometry read back by three readers, identity and options."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import SegmentationStorage

from inference.result import SequenceRole
from sr_writer import WriterOptions, build_outputs
from sr_writer.seg import SEGMENT_LABEL

from . import sr_helpers as helpers

# Voxel centres computed from different headers agree to float rounding only.
POSITION_TOLERANCE_MM = 1e-3

ORIENTATIONS = {
    "axial": helpers.AXIAL,
    "negated_columns": helpers.NEGATED_COLUMNS,
    "oblique": helpers.OBLIQUE,
}


def _seg_of(outputs: list[pydicom.Dataset]) -> pydicom.Dataset:
    segs = [ds for ds in outputs if ds.SOPClassUID == SegmentationStorage]
    assert len(segs) == 1
    return segs[0]


@pytest.fixture(scope="module", params=sorted(ORIENTATIONS))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    study = helpers.make_study(orientation=ORIENTATIONS[request.param])
    seg = _seg_of(build_outputs(study.result, study.sources, WriterOptions()))
    folder = tmp_path_factory.mktemp(f"seg_{request.param}")
    return study, seg, helpers.save(seg, folder, "seg.dcm")


def test_seg_geometry_matches_mask(written: tuple) -> None:
    study, seg, _ = written
    expected = helpers.source_mask_points(study.sources[SequenceRole.CE_T1], study.result.segmentation.mask)
    actual = helpers.seg_mask_points(seg)

    assert len(actual) == len(expected)
    assert helpers.max_point_mismatch_mm(expected, actual) < POSITION_TOLERANCE_MM


def test_seg_highdicom_readback_matches_mask(written: tuple) -> None:
    study, _, path = written
    seg = hd.seg.segread(path)
    ce_t1_uids = study.result.segmentation.source_sop_instance_uids
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=ce_t1_uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )

    assert pixels.shape == study.result.segmentation.mask.shape + (1,)
    assert np.array_equal(pixels[..., 0] > 0, study.result.segmentation.mask > 0)


@pytest.mark.peers
def test_seg_dcmqi_readback_matches_mask(written: tuple, tmp_path: Path) -> None:
    study, _, path = written
    tool = helpers.dcmqi_tool("segimage2itkimage")
    helpers.run_tool([tool, "--inputDICOM", path, "--outputDirectory", tmp_path, "-t", "nrrd"])
    expected = helpers.source_mask_points(study.sources[SequenceRole.CE_T1], study.result.segmentation.mask)
    actual = helpers.image_mask_points(tmp_path / "1.nrrd")
    meta = json.loads((tmp_path / "meta.json").read_text())

    assert len(actual) == len(expected)
    assert helpers.max_point_mismatch_mm(expected, actual) < POSITION_TOLERANCE_MM
    assert meta["segmentAttributes"][0][0]["SegmentLabel"] == SEGMENT_LABEL


@pytest.mark.peers
def test_seg_dcmjs_reads_segment_and_voxels(written: tuple) -> None:
    study, _, path = written
    js_dir = helpers.ensure_dcmjs()
    completed = subprocess.run(
        ["node", "read_seg.mjs", str(path)],
        cwd=js_dir, capture_output=True, text=True, timeout=helpers.TOOL_TIMEOUT_S, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    parsed = json.loads(completed.stdout)

    assert parsed["sopClassUid"] == SegmentationStorage
    assert parsed["segmentationType"] == "BINARY"
    assert parsed["segmentLabels"] == [SEGMENT_LABEL]
    assert parsed["numberOfFrames"] == study.result.segmentation.mask.shape[0]
    assert parsed["setBits"] == int(study.result.segmentation.mask.sum())


def test_seg_describes_tumour_segment(written: tuple) -> None:
    study, seg, _ = written
    segment = seg.SegmentSequence[0]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]

    assert segment.SegmentLabel == SEGMENT_LABEL
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "372087000"
    assert segment.AnatomicRegionSequence[0].CodeValue == "21974007"
    assert segment.RecommendedDisplayCIELabValue
    assert algorithm.AlgorithmName == "otscc-unet"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.result.series[SequenceRole.CE_T1].series_instance_uid
    assert "otscc-node" in [item.Manufacturer for item in seg.ContributingEquipmentSequence]
    assert "DEMO" in seg.SeriesDescription


@pytest.mark.parametrize(
    ("character_set", "patient_name"),
    [("GB18030", "王^小明"), ("ISO_IR 192", "Müller^Zoë=ミュラー^ゾエ")],
)
def test_seg_keeps_patient_name_encoding(character_set: str, patient_name: str, tmp_path: Path) -> None:
    study = helpers.make_study(character_set=character_set, patient_name=patient_name)
    outputs = build_outputs(study.result, study.sources, WriterOptions())

    for index, ds in enumerate(outputs):
        reread = pydicom.dcmread(helpers.save(ds, tmp_path, f"{index}.dcm"))
        assert reread.SpecificCharacterSet == character_set
        assert str(reread.PatientName) == patient_name


def test_seg_keeps_empty_frames_by_default() -> None:
    study = helpers.make_study()
    seg = _seg_of(build_outputs(study.result, study.sources, WriterOptions()))

    assert int(seg.NumberOfFrames) == study.result.segmentation.mask.shape[0]


def test_seg_omits_empty_frames_on_request() -> None:
    study = helpers.make_study()
    seg = _seg_of(build_outputs(study.result, study.sources, WriterOptions(omit_empty_frames=True)))
    slices_with_tumour = int(study.result.segmentation.mask.any(axis=(1, 2)).sum())

    assert int(seg.NumberOfFrames) == slices_with_tumour
    assert slices_with_tumour < study.result.segmentation.mask.shape[0]


def test_rerun_gives_same_uids() -> None:
    study = helpers.make_study()
    first = build_outputs(study.result, study.sources, WriterOptions())
    second = build_outputs(study.result, study.sources, WriterOptions())

    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]
    assert [ds.SeriesInstanceUID for ds in first] == [ds.SeriesInstanceUID for ds in second]
    assert all(str(ds.SOPInstanceUID).startswith("2.25.") for ds in first)


def test_new_inputs_give_new_uids() -> None:
    study = helpers.make_study()
    first = build_outputs(study.result, study.sources, WriterOptions())
    changed = helpers.make_study()
    changed.result.study_instance_uid = study.result.study_instance_uid
    second = build_outputs(changed.result, changed.sources, WriterOptions())

    assert not {ds.SOPInstanceUID for ds in first} & {ds.SOPInstanceUID for ds in second}
    assert not {ds.SeriesInstanceUID for ds in first} & {ds.SeriesInstanceUID for ds in second}


def test_series_numbers_avoid_existing() -> None:
    study = helpers.make_study()
    existing = {3, 4, 5, 9901, 9902}
    outputs = build_outputs(study.result, study.sources, WriterOptions(), existing_series_numbers=existing)
    numbers = [int(ds.SeriesNumber) for ds in outputs]

    assert not set(numbers) & existing
    assert len(set(numbers)) == len(numbers)
    assert numbers[0] == 9903


def test_no_tumour_gives_sr_only() -> None:
    study = helpers.make_study(empty=True)
    outputs = build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True))

    assert [ds.Modality for ds in outputs] == ["SR"]


def test_superseded_seg_named_in_comments() -> None:
    study = helpers.make_study()
    old = (str(SegmentationStorage), "2.25.1234", "2.25.5678")
    seg = _seg_of(build_outputs(study.result, study.sources, WriterOptions(superseded=[old])))

    assert "2.25.1234" in seg.ImageComments


def test_missing_source_instance_raises() -> None:
    study = helpers.make_study()
    sources = dict(study.sources)
    sources[SequenceRole.CE_T1] = sources[SequenceRole.CE_T1][:-1]

    with pytest.raises(ValueError, match="missing from sources"):
        build_outputs(study.result, sources, WriterOptions())


def test_options_reject_bad_series_number() -> None:
    with pytest.raises(ValueError, match="series_number_base must be between"):
        WriterOptions(series_number_base=0)


def test_options_reject_short_superseded_entry() -> None:
    with pytest.raises(ValueError, match="superseded entries must be"):
        WriterOptions(superseded=[("1.2.3", "4.5.6")])

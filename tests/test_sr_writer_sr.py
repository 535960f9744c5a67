"""Tests of the TID 1500 SR and the failure SR: content, read-back and structure."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, SegmentationStorage

from inference.result import SequenceRole
from sr_writer import WriterOptions, build_failure_report, build_outputs
from sr_writer import codes

from . import sr_helpers as helpers

REFERENCE_SR = Path("seg_sr_reference") / "dcmqi_qin_headneck" / "sr.dcm"


def _outputs(study: helpers.SyntheticStudy, **options: object) -> tuple[pydicom.Dataset | None, pydicom.Dataset]:
    outputs = build_outputs(
        study.result, study.sources, WriterOptions(**options),
        role_evidence={"CE-T1": "SeriesDescription matches 'T1 FS +C'"},
    )
    segs = [ds for ds in outputs if ds.SOPClassUID == SegmentationStorage]
    srs = [ds for ds in outputs if ds.SOPClassUID == ComprehensiveSRStorage]
    assert len(srs) == 1
    return (segs[0] if segs else None), srs[0]


@pytest.fixture(scope="module")
def report() -> tuple[helpers.SyntheticStudy, pydicom.Dataset, pydicom.Dataset]:
    study = helpers.make_study()
    seg, sr = _outputs(study)
    return study, seg, sr


def _num_value(sr: pydicom.Dataset, meaning: str) -> tuple[float, str]:
    items = helpers.find_items(sr, meaning)
    assert len(items) == 1, f"expected one NUM item {meaning!r}, found {len(items)}"
    measured = items[0].MeasuredValueSequence[0]
    return float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def _texts(sr: pydicom.Dataset, meaning: str) -> list[str]:
    return [str(item.TextValue) for item in helpers.find_items(sr, meaning)]


def _skeleton(sr: pydicom.Dataset) -> dict[str, object]:
    """Return the TID 1500 features every measurement report shares, read from the content tree."""
    children = helpers.content_items(sr)
    containers = helpers.find_items(sr, "Imaging Measurements")
    groups = [child for child in helpers.content_items(containers[0]) if helpers.concept_name(child) == "measurement group"]
    return {
        "root": sr.ConceptNameCodeSequence[0].CodeValue,
        "template": sr.ContentTemplateSequence[0].TemplateIdentifier,
        "observer_type": any(helpers.concept_name(item) == "observer type" for item in children),
        "procedure_reported": any(helpers.concept_name(item) == "procedure reported" for item in children),
        "imaging_measurements": len(containers),
        "groups": len(groups),
        "segment_references": [
            item.ReferencedSOPSequence[0].ReferencedSegmentNumber
            for item in helpers.find_items(groups[0], "Referenced Segment")
        ],
        "tracking_identifier": bool(helpers.find_items(groups[0], "Tracking Identifier")),
        "tracking_uid": bool(helpers.find_items(groups[0], "Tracking Unique Identifier")),
        "finding": bool(helpers.find_items(groups[0], "Finding")),
    }


def test_sr_reports_measurements(report: tuple) -> None:
    study, _, sr = report
    segmentation = study.result.segmentation

    assert _num_value(sr, "Volume") == (pytest.approx(segmentation.volume_mm3), "mm3")
    assert _num_value(sr, "Diameter") == (pytest.approx(segmentation.max_diameter_mm), "mm")
    assert _num_value(sr, codes.RADIOMICS_SCORE.meaning) == (pytest.approx(1.234), "1")
    assert _num_value(sr, codes.NODAL_METASTASIS_PROBABILITY.meaning) == (pytest.approx(42.0), "%")
    assert _num_value(sr, codes.NODAL_METASTASIS_CUTOFF.meaning) == (pytest.approx(35.0), "%")


def test_sr_codes_risk_group(report: tuple) -> None:
    _, _, sr = report
    items = helpers.find_items(sr, codes.NODAL_METASTASIS_RISK.meaning)

    assert len(items) == 1
    assert items[0].ConceptCodeSequence[0].CodeValue == codes.HIGH_RISK.value


def test_sr_states_inputs_and_provenance(report: tuple) -> None:
    study, _, sr = report
    series_texts = _texts(sr, codes.INPUT_SERIES.meaning)
    comments = " ".join(_texts(sr, "Comment"))

    for role, used in study.result.series.items():
        assert any(text.startswith(f"{role.label}: {used.series_instance_uid}") for text in series_texts)
    assert _texts(sr, codes.MISSING_INPUT.meaning) == ["depth_of_invasion_mm"]
    assert _texts(sr, codes.ROLE_EVIDENCE.meaning) == ["CE-T1: SeriesDescription matches 'T1 FS +C'"]
    assert "DEMO MODEL - NOT FOR CLINICAL USE" in comments
    assert "trained on synthetic phantoms" in comments
    assert "algorithm" in comments


def test_sr_names_algorithm_on_measurements(report: tuple) -> None:
    _, _, sr = report
    names = {str(item.TextValue) for item in helpers.find_items(sr, "Algorithm Name")}
    versions = {str(item.TextValue) for item in helpers.find_items(sr, "Algorithm Version")}

    assert names == {"otscc-unet", "otscc-nomogram"}
    assert versions == {"0.1.0"}


def test_sr_observer_is_device(report: tuple) -> None:
    _, _, sr = report
    observer_type = helpers.find_items(sr, "Observer Type")[0].ConceptCodeSequence[0]

    assert observer_type.CodeValue == "121007"
    assert helpers.find_items(sr, "Device Observer UID")
    assert _texts(sr, "Device Observer Manufacturer") == ["otscc-node"]


def test_sr_declares_private_scheme(report: tuple) -> None:
    _, seg, sr = report
    for ds in (seg, sr):
        designators = [item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence]
        assert codes.PRIVATE_SCHEME in designators


def test_sr_lists_evidence(report: tuple) -> None:
    study, seg, sr = report
    evidence_series = {
        series.SeriesInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
    }

    assert seg.SeriesInstanceUID in evidence_series
    for used in study.result.series.values():
        assert used.series_instance_uid in evidence_series


def test_sr_references_seg_segment(report: tuple) -> None:
    _, seg, sr = report
    reference = helpers.find_items(sr, "Referenced Segment")[0].ReferencedSOPSequence[0]

    assert reference.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert reference.ReferencedSegmentNumber == 1
    assert _texts(sr, "Tracking Identifier") == [str(seg.SegmentSequence[0].TrackingID)]


def test_sr_highdicom_readback(report: tuple, tmp_path: Path) -> None:
    study, seg, sr = report
    document = hd.sr.srread(helpers.save(sr, tmp_path, "sr.dcm"))
    parsed = hd.sr.MeasurementReport.from_sequence([document])
    groups = parsed.get_volumetric_roi_measurement_groups()
    volume = groups[0].get_measurements(name=codes.VOLUME)

    assert len(groups) == 1
    assert volume[0].value == pytest.approx(study.result.segmentation.volume_mm3)
    assert groups[0].referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID


@pytest.mark.peers
def test_sr_dcmqi_reads_measurements(report: tuple, tmp_path: Path) -> None:
    study, _, sr = report
    tool = helpers.dcmqi_tool("tid1500reader")
    output = tmp_path / "sr.json"
    helpers.run_tool([tool, "--inputDICOM", helpers.save(sr, tmp_path, "sr.dcm"), "--outputMetadata", output])
    group = json.loads(output.read_text())["Measurements"][0]
    values = {item["quantity"]["CodeMeaning"]: float(item["value"]) for item in group["measurementItems"]}

    assert group["ReferencedSegment"] == 1
    assert group["FindingSite"]["CodeValue"] == codes.TONGUE.value
    assert group["SourceSeriesForImageSegmentation"] == study.result.series[SequenceRole.CE_T1].series_instance_uid
    assert values["Volume"] == pytest.approx(study.result.segmentation.volume_mm3)
    assert values[codes.NODAL_METASTASIS_PROBABILITY.meaning] == pytest.approx(42.0)


@pytest.mark.peers
def test_sr_dsrdump_prints_tree(report: tuple, tmp_path: Path) -> None:
    _, _, sr = report
    if helpers.shutil.which("dsrdump") is None:
        pytest.skip("DCMTK's dsrdump is not installed")
    completed = helpers.run_tool(["dsrdump", helpers.save(sr, tmp_path, "sr.dcm")])

    assert "Imaging Measurement Report" in completed.stdout
    assert "Referenced Segment" in completed.stdout
    assert "\nE: " not in completed.stderr


def test_sr_skeleton_matches_dcmqi_reference(report: tuple, test_data_dir: Path) -> None:
    _, _, sr = report
    reference = pydicom.dcmread(test_data_dir / REFERENCE_SR)

    assert _skeleton(sr) == _skeleton(reference)
    assert _skeleton(sr)["groups"] == 1


def test_sr_lists_superseded_report() -> None:
    study = helpers.make_study()
    old_sr = (str(ComprehensiveSRStorage), "2.25.111", "2.25.222")
    old_seg = (str(SegmentationStorage), "2.25.333", "2.25.444")
    _, sr = _outputs(study, superseded=[old_sr, old_seg])
    predecessors = [
        item.ReferencedSOPInstanceUID
        for study_item in sr.PredecessorDocumentsSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    replaced = _texts(sr, codes.REPLACED_OBJECT.meaning)

    assert predecessors == ["2.25.111"]
    assert any("2.25.333" in text for text in replaced)
    assert any("2.25.111" in text for text in replaced)


def test_sr_without_probability_explains() -> None:
    study = helpers.make_study(probability=None)
    _, sr = _outputs(study)
    summary = helpers.find_items(sr, codes.PROCESSING_SUMMARY.meaning)[0]

    assert not helpers.find_items(sr, codes.NODAL_METASTASIS_PROBABILITY.meaning)
    assert not helpers.find_items(sr, codes.NODAL_METASTASIS_RISK.meaning)
    assert summary.ConceptCodeSequence[0].CodeValue == codes.NOT_ALL_SUCCEEDED_WITH_FINDINGS.value
    assert any("clinical variable is missing" in text for text in _texts(sr, "Comment"))


def _read_back(sr: pydicom.Dataset, folder: Path) -> pydicom.Dataset:
    document = hd.sr.srread(helpers.save(sr, folder, "sr.dcm"))
    hd.sr.MeasurementReport.from_sequence([document]).get_volumetric_roi_measurement_groups()
    return document


def test_sr_lists_imputed_and_invalid_inputs(tmp_path: Path) -> None:
    study = helpers.make_study(missing_inputs=("depth_of_invasion_mm", "t_stage"))
    study.result.nomogram.invalid_inputs = ["t_stage"]
    _, sr = _outputs(study)
    document = _read_back(sr, tmp_path)
    comments = _texts(document, "Comment")

    assert _texts(document, codes.MISSING_INPUT.meaning) == ["depth_of_invasion_mm", "t_stage"]
    assert _texts(document, codes.IMPUTED_INPUT.meaning) == ["depth_of_invasion_mm", "t_stage"]
    assert _texts(document, codes.INVALID_INPUT.meaning) == ["t_stage"]
    assert (
        "The nodal metastasis probability was computed with imputed values for: "
        "depth_of_invasion_mm, t_stage." in comments
    )


def test_sr_invalid_input_without_probability(tmp_path: Path) -> None:
    study = helpers.make_study(probability=None, missing_inputs=("t_stage",))
    study.result.nomogram.invalid_inputs = ["t_stage"]
    _, sr = _outputs(study)
    document = _read_back(sr, tmp_path)
    comments = " ".join(_texts(document, "Comment"))

    assert _texts(document, codes.INVALID_INPUT.meaning) == ["t_stage"]
    assert _texts(document, codes.IMPUTED_INPUT.meaning) == []
    assert "a required clinical variable is missing or invalid" in comments
    assert "imputed values" not in comments


def test_sr_without_imputation_has_no_imputed_note() -> None:
    study = helpers.make_study(missing_inputs=())
    _, sr = _outputs(study)

    assert _texts(sr, codes.IMPUTED_INPUT.meaning) == []
    assert _texts(sr, codes.INVALID_INPUT.meaning) == []
    assert not any("imputed values" in text for text in _texts(sr, "Comment"))


def test_invalid_inputs_change_sr_uid() -> None:
    study = helpers.make_study()
    _, first = _outputs(study)
    study.result.nomogram.invalid_inputs = ["depth_of_invasion_mm"]
    _, second = _outputs(study)

    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_sr_without_tumour_says_so() -> None:
    study = helpers.make_study(empty=True)
    seg, sr = _outputs(study)
    summary = helpers.find_items(sr, codes.PROCESSING_SUMMARY.meaning)[0]

    assert seg is None
    assert not helpers.find_items(sr, "Referenced Segment")
    assert summary.ConceptCodeSequence[0].CodeValue == codes.ALL_SUCCEEDED_WITHOUT_FINDINGS.value
    assert "No tumour was found by the segmentation model." in _texts(sr, "Comment")


def test_sr_clinical_model_has_no_demo_label() -> None:
    study = helpers.make_study(is_demo=False)
    seg, sr = _outputs(study)

    assert "DEMO" not in " ".join(_texts(sr, "Comment"))
    assert "DEMO" not in sr.SeriesDescription
    assert "DEMO" not in seg.SeriesDescription


def test_sr_rejects_unknown_risk_group() -> None:
    study = helpers.make_study()
    study.result.nomogram.risk_group = "intermediate"

    with pytest.raises(ValueError, match="neither 'high' nor 'low'"):
        _outputs(study)


def test_failure_report_states_reason(tmp_path: Path) -> None:
    study = helpers.make_study()
    reference = study.sources[SequenceRole.CE_T1][0]
    sr = build_failure_report(
        reference, reason="Required series T2 not received", hint="Send the T2 series again",
        code="missing_series", options=WriterOptions(), job_key="job-17",
    )
    summary = helpers.find_items(sr, codes.PROCESSING_SUMMARY.meaning)[0]

    assert sr.StudyInstanceUID == reference.StudyInstanceUID
    assert sr.PatientName == reference.PatientName
    assert _texts(sr, codes.FAILURE_REASON.meaning) == ["Required series T2 not received"]
    assert _texts(sr, codes.FAILURE_HINT.meaning) == ["Send the T2 series again"]
    assert _texts(sr, codes.FAILURE_CODE.meaning) == ["missing_series"]
    assert summary.ConceptCodeSequence[0].CodeValue == codes.NONE_SUCCEEDED.value
    assert hd.sr.srread(helpers.save(sr, tmp_path, "failure.dcm")).SOPInstanceUID == sr.SOPInstanceUID


def test_failure_report_uids_repeat_per_job() -> None:
    reference = helpers.make_study().sources[SequenceRole.CE_T1][0]
    arguments = {"reason": "Required series T2 not received", "hint": "", "code": "missing_series", "options": WriterOptions()}
    first = build_failure_report(reference, job_key="job-1", **arguments)
    again = build_failure_report(reference, job_key="job-1", **arguments)
    other = build_failure_report(reference, job_key="job-2", **arguments)

    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SOPInstanceUID != other.SOPInstanceUID


def test_failure_report_requires_reason() -> None:
    reference = helpers.make_study().sources[SequenceRole.CE_T1][0]

    with pytest.raises(ValueError, match="reason is empty"):
        build_failure_report(reference, reason=" ", hint="", code="x", options=WriterOptions(), job_key="j")

"""Role rules against a table of header variants, and study-level choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.roles import RoleRules
from config.settings import load_settings
from dicom_node.enhancement_check import EnhancementVerdict
from dicom_node.role_rules import parse_tm
from dicom_node.roles import SeriesCandidate, assign_roles
from inference.result import SequenceRole
from tests.roles_helpers import AXIAL, CORONAL, SAGITTAL, mr_header, t2_header

CE_T1, T2, T1 = SequenceRole.CE_T1, SequenceRole.T2, SequenceRole.T1

# (case id, header, expected role, "matched" or "rejected", text in that evidence list)
CASES = [
    ("siemens km", mr_header(SeriesDescription="t1_tse_tra_KM"), CE_T1, "matched", "post-contrast by name"),
    ("siemens agent", mr_header(SeriesDescription="t1_tse_tra", ContrastBolusAgent="Gadovist"), CE_T1, "matched", "contrast agent given"),
    ("siemens post", mr_header(SeriesDescription="t1_tse_fs_tra_post"), CE_T1, "matched", "post-contrast by name"),
    ("siemens vor km", mr_header(SeriesDescription="t1_tse_tra_vor_KM"), T1, "matched", "non-contrast by name"),
    ("siemens t2 fs", t2_header(SeriesDescription="t2_tse_tra_fs"), T2, "matched", "fat-suppressed"),
    ("ge plus c", mr_header(SeriesDescription="Ax T1 FSE +C", Manufacturer="GE MEDICAL SYSTEMS"), CE_T1, "matched", "ContrastBolusAgent empty"),
    ("ge post gad", mr_header(SeriesDescription="AX T1 FSE POST GAD"), CE_T1, "matched", "post-contrast by name"),
    ("ge t2 frfse fs", t2_header(SeriesDescription="Ax T2 FRFSE FS"), T2, "matched", "fat-suppressed"),
    ("ge pre contrast", mr_header(SeriesDescription="Ax T1 pre-contrast"), T1, "matched", "non-contrast by name"),
    ("ge agent none", mr_header(SeriesDescription="Ax T1 FSE", ContrastBolusAgent="NONE"), None, "rejected", "ambiguous"),
    ("philips gd", mr_header(SeriesDescription="T1W_TSE_TRA_GD", Manufacturer="Philips"), CE_T1, "matched", "post-contrast by name"),
    ("philips spair", t2_header(SeriesDescription="T2W_TSE_SPAIR"), T2, "matched", "fat-suppressed"),
    ("philips sense prefix", mr_header(SeriesDescription="sT1W_3D_TFE_GD", RepetitionTime=8.0, EchoTime=4.0), CE_T1, "matched", "T1-weighted by name"),
    ("philips mdixon", t2_header(SeriesDescription="T2W_mDIXON_TSE_TRA"), T2, "matched", "fat-suppressed"),
    ("chinese enhanced", mr_header(SeriesDescription="T1WI 横断 增强"), CE_T1, "matched", "post-contrast by name"),
    ("chinese plain", mr_header(SeriesDescription="T1WI 轴位 平扫"), T1, "matched", "non-contrast by name"),
    ("chinese fat sat", t2_header(SeriesDescription="T2WI 横断 压脂"), T2, "matched", "fat-suppressed"),
    (
        "chinese coronal by name",
        t2_header(SeriesDescription="T2WI 冠状 压脂", ImageOrientationPatient=None),
        None,
        "rejected",
        "coronal slices",
    ),
    ("chinese localizer", mr_header(SeriesDescription="定位像"), None, "rejected", "localizer"),
    (
        "localizer image type",
        mr_header(SeriesDescription="localizer", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        None,
        "rejected",
        "localizer: ImageType",
    ),
    ("ge 3 plane", mr_header(SeriesDescription="3-Plane Loc"), None, "rejected", "localizer"),
    ("philips survey", mr_header(SeriesDescription="SURVEY"), None, "rejected", "localizer"),
    ("coronal ce t1", mr_header(SeriesDescription="t1_tse_cor_KM", ImageOrientationPatient=CORONAL), None, "rejected", "coronal slices"),
    ("sagittal t2", t2_header(SeriesDescription="t2_tse_sag", ImageOrientationPatient=SAGITTAL), None, "rejected", "sagittal slices"),
    (
        "flair",
        t2_header(SeriesDescription="t2_tirm_tra_dark-fluid", InversionTime=2500.0, RepetitionTime=9000.0),
        None,
        "rejected",
        "inversion recovery",
    ),
    ("stir", t2_header(SeriesDescription="Ax STIR", InversionTime=150.0, EchoTime=65.0), None, "rejected", "inversion recovery"),
    (
        "dwi",
        t2_header(SeriesDescription="ep2d_diff_b50_800_tra", ScanningSequence="EP", EchoTime=70.0),
        None,
        "rejected",
        "diffusion",
    ),
    (
        "adc map",
        t2_header(SeriesDescription="ep2d_diff_tra_ADC", ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]),
        None,
        "rejected",
        "DERIVED",
    ),
    ("proton density", mr_header(SeriesDescription="pd_tse_tra", RepetitionTime=3000.0, EchoTime=30.0), None, "rejected", "proton density"),
    ("t1 by timing", mr_header(ContrastBolusAgent="Magnevist"), CE_T1, "matched", "T1-weighted by TR/TE"),
    ("t2 by timing", t2_header(SeriesDescription=""), T2, "matched", "T2-weighted by TR/TE"),
    ("name timing conflict", mr_header(SeriesDescription="t1_tse_tra", RepetitionTime=4000.0, EchoTime=90.0), None, "rejected", "names T1 but"),
    ("not mr", mr_header(Modality="CT", SeriesDescription="Ax T1 +C"), None, "rejected", "Modality is CT"),
    ("t2 star", mr_header(SeriesDescription="t2*_fl2d_tra", RepetitionTime=600.0, EchoTime=20.0), None, "rejected", "T2*"),
]


def _candidate(uid: str, header: dict, *, count: int = 20, complete: bool | None = True) -> SeriesCandidate:
    return SeriesCandidate(series_instance_uid=uid, header=header, instance_count=count, stack_complete=complete)


@pytest.mark.parametrize(("header", "role", "kind", "text"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_role_rules_table(header: dict, role: SequenceRole | None, kind: str, text: str) -> None:
    assignment = assign_roles([_candidate("1.2.3", header)])
    evidence = assignment.evidence["1.2.3"]

    assert assignment.role_of("1.2.3") is role
    assert evidence["role"] == (None if role is None else role.value)
    if kind == "matched":
        assert any(text in match["rule"] for match in evidence["matched"]), evidence["matched"]
    else:
        assert any(text in reason for reason in evidence["rejected"]), evidence["rejected"]
    json.dumps(evidence)


def test_fat_suppressed_t2_records_finding() -> None:
    assignment = assign_roles([_candidate("1", t2_header(SeriesDescription="t2_tse_tra_fs", ScanOptions=["FS"]))])
    evidence = assignment.evidence["1"]

    assert evidence["findings"]["fat_suppressed"] is True
    assert {"keyword": "ScanOptions", "value": ["FS"]}.items() <= next(
        match for match in evidence["matched"] if match["keyword"] == "ScanOptions"
    ).items()
    assert "fat-suppressed" in evidence["summary"]


def test_agent_value_recorded_as_evidence() -> None:
    assignment = assign_roles([_candidate("1", mr_header(SeriesDescription="t1_tse_tra", ContrastBolusAgent="Gadovist"))])
    match = next(match for match in assignment.evidence["1"]["matched"] if match["keyword"] == "ContrastBolusAgent")

    assert match["value"] == "Gadovist"
    assert assignment.evidence["1"]["score"] > 0


def _siemens_study() -> list[SeriesCandidate]:
    return [
        _candidate("loc", mr_header(SeriesDescription="localizer", SeriesNumber=1, AcquisitionTime="100000")),
        _candidate("t1", mr_header(SeriesDescription="t1_tse_tra", SeriesNumber=3, AcquisitionTime="100500")),
        _candidate("t2", t2_header(SeriesDescription="t2_tse_tra_fs", SeriesNumber=4, AcquisitionTime="101000")),
        _candidate("t2cor", t2_header(SeriesDescription="t2_tse_cor", SeriesNumber=5, ImageOrientationPatient=CORONAL)),
        _candidate(
            "ce",
            mr_header(SeriesDescription="t1_tse_fs_tra_post", SeriesNumber=7, AcquisitionTime="102000", ContrastBolusAgent="Dotarem"),
        ),
    ]


def test_full_study_gets_three_roles() -> None:
    assignment = assign_roles(_siemens_study())

    assert assignment.chosen == {CE_T1: "ce", T2: "t2", T1: "t1"}
    assert assignment.missing == {}
    assert assignment.evidence["loc"]["role"] is None
    assert assignment.evidence["t2cor"]["role"] is None
    assert any("acquired before the labelled CE-T1" in match["rule"] for match in assignment.evidence["t1"]["matched"])


def test_rescan_prefers_later_acquisition() -> None:
    study = _siemens_study() + [
        _candidate(
            "ce2",
            mr_header(SeriesDescription="t1_tse_fs_tra_post", SeriesNumber=8, AcquisitionTime="102600", ContrastBolusAgent="Dotarem"),
        )
    ]
    assignment = assign_roles(study)

    assert assignment.chosen[CE_T1] == "ce2"
    assert "a later acquisition" in assignment.evidence["ce2"]["tie_break"]
    assert assignment.evidence["ce"]["role"] is None
    assert assignment.evidence["ce"]["tie_break"].startswith("not chosen")
    assert assignment.evidence["ce"]["candidate_for"] == ["ce_t1"]


def test_rescan_prefers_complete_stack() -> None:
    study = _siemens_study() + [
        _candidate(
            "ce2",
            mr_header(SeriesDescription="t1_tse_fs_tra_post", SeriesNumber=8, AcquisitionTime="102600", ContrastBolusAgent="Dotarem"),
            complete=False,
        )
    ]
    assignment = assign_roles(study)

    assert assignment.chosen[CE_T1] == "ce"
    assert "a complete slice stack" in assignment.evidence["ce"]["tie_break"]


def test_rescan_tie_falls_to_lower_uid() -> None:
    header = mr_header(SeriesDescription="t1_tse_tra_post", SeriesNumber=7, AcquisitionTime="102000")
    first = assign_roles([_candidate("1.2.9", header), _candidate("1.2.10", header)])
    second = assign_roles([_candidate("1.2.10", header), _candidate("1.2.9", header)])

    assert first.chosen[CE_T1] == second.chosen[CE_T1] == "1.2.10"
    assert "the lower SeriesInstanceUID" in first.evidence["1.2.10"]["tie_break"]


def test_series_after_contrast_is_post_contrast() -> None:
    study = [
        _candidate("cor", mr_header(SeriesDescription="t1_tse_cor", ContrastBolusAgent="Gadovist", ImageOrientationPatient=CORONAL, AcquisitionTime="102000")),
        _candidate("tra", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="102500")),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {CE_T1: "tra"}
    assert any("post-contrast by acquisition order" in match["rule"] for match in assignment.evidence["tra"]["matched"])


def test_exam_protocol_name_is_ignored() -> None:
    study = [
        _candidate("pre", mr_header(SeriesDescription="Ax T1 FSE", ProtocolName="NECK +C", AcquisitionTime="100000")),
        _candidate("post", mr_header(SeriesDescription="Ax T1 FSE +C", ProtocolName="NECK +C", AcquisitionTime="101500")),
        _candidate("t2", t2_header(SeriesDescription="Ax T2 FRFSE FS", ProtocolName="NECK +C", AcquisitionTime="100700")),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {CE_T1: "post", T2: "t2", T1: "pre"}
    assert any("names the exam" in note for note in assignment.evidence["pre"]["notes"])
    assert assignment.evidence["pre"]["rejected"] == []


def test_unlabelled_t1_pair_without_check_is_ambiguous() -> None:
    study = [
        _candidate("a", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="100000")),
        _candidate("b", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="101500", SeriesNumber=9)),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {}
    assert any("ambiguous" in reason for reason in assignment.evidence["a"]["rejected"])
    assert "ambiguous" in assignment.missing[CE_T1]
    assert "no series matched CE-T1" in assignment.missing[CE_T1]


def _verdict_for(post_uid: str | None):
    def compare(first: SeriesCandidate, second: SeriesCandidate) -> EnhancementVerdict:
        assert {first.series_instance_uid, second.series_instance_uid} == {"a", "b"}
        return EnhancementVerdict(post_contrast_uid=post_uid, summary=f"image comparison: {post_uid} brighter")

    return compare


def test_image_verdict_decides_unlabelled_pair() -> None:
    study = [
        _candidate("a", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="100000")),
        _candidate("b", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="101500", SeriesNumber=9)),
    ]
    assignment = assign_roles(study, compare_images=_verdict_for("b"))

    assert assignment.chosen == {CE_T1: "b", T1: "a"}
    assert assignment.evidence["b"]["image_check"]["summary"] == "image comparison: b brighter"
    assert any(match["keyword"] == "PixelData" for match in assignment.evidence["a"]["matched"])


def test_image_verdict_against_order_is_ambiguous() -> None:
    study = [
        _candidate("a", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="100000")),
        _candidate("b", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="101500", SeriesNumber=9)),
    ]
    assignment = assign_roles(study, compare_images=_verdict_for("a"))

    assert assignment.chosen == {}
    assert any("acquired before" in reason for reason in assignment.evidence["a"]["rejected"])


def test_missing_t2_names_candidates() -> None:
    study = [candidate for candidate in _siemens_study() if candidate.series_instance_uid != "t2"]
    assignment = assign_roles(study)

    assert T2 not in assignment.chosen
    assert assignment.missing[T2].startswith("no series matched T2 (candidates:")
    assert "'t2_tse_cor' (t2cor): coronal slices" in assignment.missing[T2]


def test_sagittal_accepted_when_configured() -> None:
    rules = RoleRules(accepted_orientations=["axial", "sagittal"])
    header = t2_header(SeriesDescription="t2_tse_sag", ImageOrientationPatient=SAGITTAL)

    assert assign_roles([_candidate("1", header)], rules).chosen == {T2: "1"}
    assert assign_roles([_candidate("1", header)]).chosen == {}


def test_oblique_axial_within_tolerance() -> None:
    # Rows along x, columns tilted 20 degrees from y towards z.
    tilted = [1.0, 0.0, 0.0, 0.0, 0.9397, -0.3420]
    assignment = assign_roles([_candidate("1", t2_header(ImageOrientationPatient=tilted))])

    assert assignment.chosen == {T2: "1"}
    assert assignment.evidence["1"]["findings"]["orientation"] == "axial"


def test_roles_section_read_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        "[roles]\naxial_tolerance_deg = 15.0\ncontrast_patterns = ['mitkm']\n\n[roles.stack]\nmin_slices = 5\n",
        encoding="utf-8",
    )
    settings = load_settings(config, environ={})

    assert settings.roles.axial_tolerance_deg == 15.0
    assert settings.roles.contrast_patterns == ["mitkm"]
    assert settings.roles.stack.min_slices == 5
    assert settings.roles.t2_patterns == RoleRules().t2_patterns


def test_invalid_pattern_rejected() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RoleRules(t1_patterns=["t1("])


def test_overlapping_timing_thresholds_rejected() -> None:
    with pytest.raises(ValueError, match="t1_max_repetition_time_ms"):
        RoleRules(t1_max_repetition_time_ms=3000.0)



@pytest.mark.parametrize(
    ("value", "seconds"),
    [("103000", 37800.0), ("10:30:00.5", 37800.5), ("103000.25+0100", 37800.25), ("1030", 37800.0), ("", None), ("noon", None)],
)
def test_parse_tm_values(value: str, seconds: float | None) -> None:
    assert parse_tm(value) == seconds


def test_unlabelled_rescans_beside_labelled_ce() -> None:
    study = [
        _candidate("a", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="100000", SeriesNumber=3)),
        _candidate("b", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime="100400", SeriesNumber=4)),
        _candidate("ce", mr_header(SeriesDescription="t1_tse_tra_post", AcquisitionTime="102000", SeriesNumber=7)),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {CE_T1: "ce", T1: "b"}
    assert "a later acquisition" in assignment.evidence["b"]["tie_break"]
    assert assignment.evidence["a"]["candidate_for"] == ["t1"]


def test_untimed_unlabelled_t1_uses_image_check() -> None:
    study = [
        _candidate("a", mr_header(SeriesDescription="t1_tse_tra", AcquisitionTime=None)),
        _candidate("b", mr_header(SeriesDescription="t1_tse_tra_post", AcquisitionTime=None, SeriesNumber=9)),
    ]
    assignment = assign_roles(study, compare_images=_verdict_for("b"))

    assert assignment.chosen == {CE_T1: "b", T1: "a"}
    assert assignment.evidence["a"]["image_check"]["compared"] == ["a", "b"]


def test_t2_rescan_ignores_contrast_points() -> None:
    study = [
        _candidate("pre", t2_header(SeriesDescription="t2_tse_tra", AcquisitionTime="100000", SeriesNumber=4)),
        _candidate(
            "post",
            t2_header(SeriesDescription="t2_tse_tra", AcquisitionTime="095000", SeriesNumber=2, ContrastBolusAgent="Gadovist"),
        ),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {T2: "pre"}
    assert "a later acquisition" in assignment.evidence["pre"]["tie_break"]


def test_ce_before_t1_is_flagged() -> None:
    study = [
        _candidate("pre", mr_header(SeriesDescription="t1_tse_tra_pre", AcquisitionTime="103000")),
        _candidate("post", mr_header(SeriesDescription="t1_tse_tra_post", AcquisitionTime="101000")),
    ]
    assignment = assign_roles(study)

    assert assignment.chosen == {CE_T1: "post", T1: "pre"}
    assert any("was acquired before the T1" in note for note in assignment.evidence["post"]["notes"])
    assert any("was acquired before the T1" in note for note in assignment.evidence["pre"]["notes"])

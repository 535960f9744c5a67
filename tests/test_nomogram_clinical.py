"""Clinical inputs of the nomogram from DICOM headers and CSV files."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from inference.clinical import (
    CLINICAL_VARIABLES,
    VariableType,
    canonical_level,
    clinical_from_header,
    read_clinical_csv,
)


def _header(**elements: str) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    "patient_age, years",
    [("056Y", 56.0), ("006M", 0.5), ("052W", 52 * 7 / 365.25), ("010D", 10 / 365.25)],
)
def test_age_from_patient_age(patient_age: str, years: float) -> None:
    assert clinical_from_header(_header(PatientAge=patient_age))["age"] == pytest.approx(years)


def test_age_from_birth_and_study_date() -> None:
    before_birthday = _header(PatientBirthDate="19600615", StudyDate="20250614")
    on_birthday = _header(PatientBirthDate="19600615", StudyDate="20250615")

    assert clinical_from_header(before_birthday)["age"] == 64.0
    assert clinical_from_header(on_birthday)["age"] == 65.0


def test_patient_age_preferred_over_dates() -> None:
    ds = _header(PatientAge="070Y", PatientBirthDate="19600615", StudyDate="20250615")

    assert clinical_from_header(ds)["age"] == 70.0


def test_invalid_patient_age_falls_back_to_dates() -> None:
    ds = _header(PatientAge="70", PatientBirthDate="19600615", StudyDate="20250615")

    assert clinical_from_header(ds)["age"] == 65.0


@pytest.mark.parametrize(
    "elements",
    [
        {},
        {"PatientBirthDate": "19600615"},
        {"PatientBirthDate": "1960", "StudyDate": "20250615"},
        {"PatientBirthDate": "20300101", "StudyDate": "20250615"},
    ],
)
def test_age_none_without_usable_dates(elements: dict) -> None:
    assert clinical_from_header(_header(**elements))["age"] is None


@pytest.mark.parametrize("patient_sex, sex", [("M", "M"), ("F", "F"), ("O", None), ("", None)])
def test_sex_from_patient_sex(patient_sex: str, sex: str | None) -> None:
    assert clinical_from_header(_header(PatientSex=patient_sex))["sex"] == sex


def test_sex_none_when_absent() -> None:
    assert clinical_from_header(_header())["sex"] is None


def test_variable_definitions_cover_nomogram_inputs() -> None:
    assert set(CLINICAL_VARIABLES) == {"age", "sex", "t_stage", "doi_mm"}
    assert CLINICAL_VARIABLES["doi_mm"].type is VariableType.NUMERIC
    assert CLINICAL_VARIABLES["t_stage"].levels == ("T1", "T2", "T3", "T4")


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_row_found_by_accession_number(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "clinical.csv",
        "AccessionNumber,PatientID,t_stage,doi_mm,smoker\nA1,P1,t2,6.5,yes\nA2,P2,T3,,no\n",
    )

    assert read_clinical_csv(path, "A1") == {"t_stage": "T2", "doi_mm": 6.5, "smoker": "yes"}
    assert read_clinical_csv(path, "A2") == {"t_stage": "T3", "smoker": "no"}


def test_csv_row_found_by_patient_id(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clinical.csv", "PatientID,age,sex\nP1,61,F\n")

    assert read_clinical_csv(path, "P1") == {"age": 61.0, "sex": "F"}


def test_csv_unknown_key_gives_empty(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clinical.csv", "AccessionNumber,doi_mm\nA1,4\n")

    assert read_clinical_csv(path, "A9") == {}


def test_csv_without_key_column_raises(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clinical.csv", "case,doi_mm\nA1,4\n")

    with pytest.raises(ValueError, match="has no column AccessionNumber or PatientID"):
        read_clinical_csv(path, "A1")


def test_csv_non_numeric_value_raises(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clinical.csv", "AccessionNumber,doi_mm\nA1,deep\n")

    with pytest.raises(ValueError, match="column 'doi_mm' has 'deep', which is not a number"):
        read_clinical_csv(path, "A1")


@pytest.mark.parametrize(
    "text, level",
    [
        ("T2", "T2"),
        ("cT2", "T2"),
        ("pT4a", "T4"),
        ("ypT3", "T3"),
        ("t1", "T1"),
        ("3", "T3"),
        ("T4b", "T4"),
        ("Tis", "TIS"),
        ("TX", "TX"),
        ("T5", "T5"),
    ],
)
def test_t_stage_canonical_level(text: str, level: str) -> None:
    assert canonical_level("t_stage", text) == level


def test_csv_t_stage_written_with_prefix(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "clinical.csv", "AccessionNumber,t_stage,sex\nA1,pT4a,female\n")

    assert read_clinical_csv(path, "A1") == {"t_stage": "T4", "sex": "F"}

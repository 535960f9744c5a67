"""Clinical variables of the nomogram and where the node reads them from.

Age and sex come from the DICOM header of the study. T stage and depth of
invasion come from the clinic, through a CSV file or the node's clinical
source, keyed by AccessionNumber or PatientID.
"""

from __future__ import annotations

import csv
import datetime
import enum
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom

logger = logging.getLogger(__name__)


class VariableType(enum.Enum):
    """Type of a clinical variable, which sets how it enters the nomogram."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class ClinicalVariableDefinition:
    """A clinical variable that a nomogram may use."""

    name: str
    type: VariableType
    unit: str
    description: str
    levels: tuple[str, ...] = ()


CLINICAL_VARIABLES: dict[str, ClinicalVariableDefinition] = {
    definition.name: definition
    for definition in (
        ClinicalVariableDefinition(
            "age", VariableType.NUMERIC, "years", "Age at the date of the study"
        ),
        ClinicalVariableDefinition(
            "sex", VariableType.CATEGORICAL, "", "Sex as in PatientSex", ("M", "F")
        ),
        ClinicalVariableDefinition(
            "t_stage",
            VariableType.CATEGORICAL,
            "",
            "Clinical T category of the primary tumour (AJCC 8th edition)",
            ("T1", "T2", "T3", "T4"),
        ),
        ClinicalVariableDefinition(
            "doi_mm", VariableType.NUMERIC, "mm", "Depth of invasion of the primary tumour"
        ),
    )
}

# Forms of a T category that clinics write: an optional y/r prefix and c/p
# prefix, then T1-T4 with an optional subcategory letter (T4a, T4b).
_T_STAGE_PATTERN = re.compile(r"^(?:[YR]?[CP])?T([1-4])[A-D]?$")
_SEX_SYNONYMS = {"MALE": "M", "FEMALE": "F"}

# PatientAge (VR AS) is three digits and one of D, W, M, Y (PS3.5 section 6.2).
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}

# Column names that identify the study in a clinical CSV, in lookup order.
CSV_KEY_COLUMNS = ("AccessionNumber", "PatientID")


def canonical_level(name: str, value: object) -> str:
    """Return a categorical value in the form the nomogram's encoding uses.

    Values are stripped and upper-cased. A T stage such as ``"cT2"``,
    ``"pT4a"`` or ``"ypT3"`` becomes ``"T2"``, ``"T4"`` or ``"T3"``, and a bare
    ``"2"`` becomes ``"T2"``. Sex ``"male"`` and ``"female"`` become ``"M"`` and
    ``"F"``. Other values are only stripped and upper-cased.
    """
    level = str(value).strip().upper()
    if name == "t_stage":
        if level in ("1", "2", "3", "4"):
            return f"T{level}"
        match = _T_STAGE_PATTERN.match(level)
        return f"T{match.group(1)}" if match else level
    if name == "sex":
        return _SEX_SYNONYMS.get(level, level)
    return level


def clinical_from_header(ds: pydicom.Dataset) -> dict[str, object]:
    """Read age (years) and sex ('M', 'F' or None) from a study's DICOM header.

    Age comes from PatientAge where present and valid, and otherwise from
    PatientBirthDate and StudyDate; it is None when neither is usable.
    PatientSex 'O' or an absent value gives None.
    """
    return {"age": _age_from_header(ds), "sex": _sex_from_header(ds)}


def _age_from_header(ds: pydicom.Dataset) -> float | None:
    patient_age = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(patient_age) == 4 and patient_age[:3].isdigit() and patient_age[3] in _AGE_UNIT_YEARS:
        return int(patient_age[:3]) * _AGE_UNIT_YEARS[patient_age[3]]
    if patient_age:
        logger.warning("Ignoring PatientAge that is not in the AS format nnnD/W/M/Y")

    birth = _parse_da(ds.get("PatientBirthDate", ""))
    study = _parse_da(ds.get("StudyDate", ""))
    if birth is None or study is None or study < birth:
        return None
    had_birthday = (study.month, study.day) >= (birth.month, birth.day)
    return float(study.year - birth.year - (0 if had_birthday else 1))


def _sex_from_header(ds: pydicom.Dataset) -> str | None:
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return sex if sex in ("M", "F") else None


def _parse_da(value: object) -> datetime.date | None:
    """Parse a DA value (YYYYMMDD), returning None when it is empty or invalid."""
    text = str(value or "").strip()
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def read_clinical_csv(path: Path, key: str) -> dict[str, object]:
    """Return the clinical values of the study ``key`` from a CSV file.

    The file has a header row with an ``AccessionNumber`` or ``PatientID``
    column (or both) and one column per clinical variable, named as in
    :data:`CLINICAL_VARIABLES` (other columns are returned too). A row
    matches when its AccessionNumber equals ``key``; PatientID is tried
    only when no AccessionNumber matches. Empty cells are left out, so the
    nomogram treats them as missing. Numeric variables are returned as
    float and categorical ones as :func:`canonical_level` returns them.

    Returns
    -------
    dict
        The row's values without the key columns, or an empty dict when no
        row matches.

    Raises
    ------
    ValueError
        If the file has no key column, or a numeric cell is not a number.
    """
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        rows = list(reader)

    if not any(column in columns for column in CSV_KEY_COLUMNS):
        raise ValueError(
            f"clinical CSV {path} has no column {' or '.join(CSV_KEY_COLUMNS)}; "
            "add one that identifies each study"
        )
    for key_column in CSV_KEY_COLUMNS:
        for row in rows:
            if (row.get(key_column) or "").strip() == key:
                return _parse_row(row, path)
    return {}


def _parse_row(row: dict[str, str], path: Path) -> dict[str, object]:
    values: dict[str, object] = {}
    for column, cell in row.items():
        text = (cell or "").strip()
        if column in CSV_KEY_COLUMNS or not text:
            continue
        values[column] = _parse_cell(column, text, path)
    return values


def _parse_cell(column: str, text: str, path: Path) -> object:
    definition = CLINICAL_VARIABLES.get(column)
    if definition is None:
        return text
    if definition.type is VariableType.CATEGORICAL:
        return canonical_level(column, text)
    try:
        number = float(text)
    except ValueError as exc:
        raise ValueError(
            f"clinical CSV {path} column {column!r} has {text!r}, which is not a number; "
            f"write it in {definition.unit}"
        ) from exc
    if not math.isfinite(number):
        raise ValueError(f"clinical CSV {path} column {column!r} has the non-finite value {text!r}")
    return number

"""Cohort CSV files and the images of their cases.

A cohort CSV has one row per case and a header row. Paths are relative to
the CSV's folder unless absolute.

``case_id``
    Unique name of the case (required). Never a patient identifier.
``folder``
    Study folder. The series of role ``r`` (``ce_t1``, ``t2``, ``t1``) is
    the DICOM series in ``folder/r/`` or an image file ``folder/r.nii.gz``
    (also ``.nii``, ``.nrrd``, ``.mha``). The phantom generator writes
    this layout.
``ce_t1``, ``t2``, ``t1``
    Optional, override ``folder`` for one role: a DICOM series folder or
    an image file.
``mask_path``
    Tumour mask on the CE-T1 grid (non-zero inside the tumour). Defaults to
    ``folder/mask.nii.gz``.
label column
    0 or 1, by default ``ln_metastasis``. Rows with an empty label are
    skipped.
``split``
    Optional ``train`` or ``test``.
clinical columns
    Any of the clinical variables (``age``, ``sex``, ``t_stage``,
    ``doi_mm``); empty cells are missing values.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from inference.clinical import CLINICAL_VARIABLES, VariableType, canonical_level
from inference.result import SequenceRole
from inference.volume import load_series

logger = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "ln_metastasis"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SPLITS = ("train", "test")


@dataclass
class CohortCase:
    """One case of a training cohort.

    ``images`` maps each role to an image file or a DICOM series folder.
    """

    case_id: str
    images: dict[SequenceRole, Path]
    mask: Path
    clinical: dict[str, object] = field(default_factory=dict)
    label: int | None = None
    split: str | None = None


def read_cohort_csv(
    path: Path,
    *,
    roles: tuple[SequenceRole, ...] = tuple(SequenceRole),
    label_column: str = DEFAULT_LABEL_COLUMN,
    clinical_columns: tuple[str, ...] = tuple(CLINICAL_VARIABLES),
) -> list[CohortCase]:
    """Read a cohort CSV (format in the module docstring) into cases.

    Raises
    ------
    ValueError
        If a required column is missing, a case_id repeats, a label is not
        0 or 1, a split is not ``train`` or ``test``, or a series or mask
        cannot be found. Messages name the line, not the case_id.
    """
    path = Path(path)
    base = path.parent
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        rows = list(reader)

    for required in ("case_id", label_column):
        if required not in columns:
            raise ValueError(
                f"cohort CSV {path} has no {required!r} column; add it (see the format)"
            )

    cases: list[CohortCase] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        case_id = (row.get("case_id") or "").strip()
        if not case_id or case_id in seen:
            raise ValueError(
                f"cohort CSV {path} line {line}: case_id is empty or repeats an earlier one"
            )
        seen.add(case_id)
        label_text = (row.get(label_column) or "").strip()
        if not label_text:
            logger.warning("Skipping cohort CSV line %d: no label", line)
            continue
        cases.append(_case_from_row(row, line, base, roles, label_column, clinical_columns))
    return cases


def _case_from_row(
    row: dict[str, str],
    line: int,
    base: Path,
    roles: tuple[SequenceRole, ...],
    label_column: str,
    clinical_columns: tuple[str, ...],
) -> CohortCase:
    where = f"cohort CSV line {line}"
    folder_text = (row.get("folder") or "").strip()
    folder = base / folder_text if folder_text else None

    images = {role: _role_path(row, role, folder, base, where) for role in roles}
    mask_text = (row.get("mask_path") or row.get("mask") or "").strip()
    mask = None
    if mask_text:
        mask = base / mask_text
    elif folder is not None:
        mask = folder / "mask.nii.gz"
    if mask is None or not mask.is_file():
        raise ValueError(f"{where}: mask {mask} not found; set mask_path to the tumour mask file")

    label_text = row[label_column].strip()
    if label_text not in ("0", "1"):
        raise ValueError(f"{where}: {label_column} is {label_text!r}, expected 0 or 1")
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: split is {split!r}, expected one of {SPLITS} or empty")

    clinical = {
        name: _clinical_value(name, row.get(name), where)
        for name in clinical_columns
        if (row.get(name) or "").strip()
    }
    return CohortCase(
        case_id=row["case_id"].strip(),
        images=images,
        mask=mask,
        clinical=clinical,
        label=int(label_text),
        split=split,
    )


def _role_path(
    row: dict[str, str], role: SequenceRole, folder: Path | None, base: Path, where: str
) -> Path:
    explicit = (row.get(role.value) or "").strip()
    candidates = [base / explicit] if explicit else []
    if folder is not None and not explicit:
        candidates.append(folder / role.value)
        candidates.extend(folder / f"{role.value}{suffix}" for suffix in IMAGE_SUFFIXES)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ValueError(
        f"{where}: no {role.label} series found at {[str(c) for c in candidates]}. "
        f"Set the {role.value!r} or 'folder' column."
    )


def _clinical_value(name: str, text: str | None, where: str) -> object:
    value = (text or "").strip()
    definition = CLINICAL_VARIABLES.get(name)
    if definition is None:
        return value
    if definition.type is VariableType.CATEGORICAL:
        return canonical_level(name, value)
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {name} is {value!r}, which is not a number") from exc


def load_image(path: Path) -> sitk.Image:
    """Read an image file, or a folder holding one DICOM series, as float32.

    DICOM folders go through :func:`inference.volume.load_series`, the
    reader of the node, so training reads the same voxel values as the node.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        return load_series(files).image
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)

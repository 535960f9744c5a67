"""Cohort CSV reading and per-case feature extraction for training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.result import SequenceRole
from training.nomogram_train import cohort_tables
from training.phantom import make_study
from training.radiomics_cohort import CohortCase, read_cohort_csv
from training.radiomics_extraction import extract_case_features, extract_cohort_features
from tests.nomogram_cohort_helpers import write_image_cohort


@pytest.fixture(scope="module")
def image_cohort(tmp_path_factory) -> Path:
    return write_image_cohort(tmp_path_factory.mktemp("cohort"), 4)


def _rewrite(path: Path, change) -> Path:
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    change(rows)
    out = path.with_name("changed.csv")
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_cohort_csv_resolves_case_files(image_cohort: Path) -> None:
    cases = read_cohort_csv(image_cohort)

    assert [case.case_id for case in cases] == ["case_000", "case_001", "case_002", "case_003"]
    first = cases[0]
    assert first.images[SequenceRole.T2] == image_cohort.parent / "case_000" / "t2.nii.gz"
    assert first.mask == image_cohort.parent / "case_000" / "mask.nii.gz"
    assert first.split == "test"
    assert first.label in (0, 1)
    assert set(first.clinical) == {"age", "sex", "t_stage", "doi_mm"}
    assert isinstance(first.clinical["age"], float)
    assert first.clinical["sex"] == "M"


def test_cohort_csv_skips_unlabelled_rows(image_cohort: Path) -> None:
    def clear_label(rows: list[dict]) -> None:
        rows[1]["ln_metastasis"] = ""

    cases = read_cohort_csv(_rewrite(image_cohort, clear_label))

    assert [case.case_id for case in cases] == ["case_000", "case_002", "case_003"]


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("ln_metastasis", "yes", "line 3: ln_metastasis is 'yes', expected 0 or 1"),
        ("split", "validation", "line 3: split is 'validation'"),
        ("mask_path", "case_001/none.nii.gz", "line 3: mask .* not found"),
        ("folder", "nowhere", "line 3: no CE-T1 series found"),
        ("doi_mm", "deep", "line 3: doi_mm is 'deep', which is not a number"),
        ("case_id", "case_000", "line 3: case_id is empty or repeats"),
    ],
)
def test_cohort_csv_invalid_row_raises(
    image_cohort: Path, column: str, value: str, message: str
) -> None:
    def spoil(rows: list[dict]) -> None:
        rows[1][column] = value

    with pytest.raises(ValueError, match=message):
        read_cohort_csv(_rewrite(image_cohort, spoil))


def test_cohort_csv_without_label_column_raises(image_cohort: Path) -> None:
    with pytest.raises(ValueError, match="has no 'outcome' column"):
        read_cohort_csv(image_cohort, label_column="outcome")


def test_partial_split_column_raises(image_cohort: Path) -> None:
    cases = read_cohort_csv(image_cohort)
    cases[2].split = None

    with pytest.raises(ValueError, match="filled for some cases only"):
        cohort_tables(cases)


def test_case_features_from_phantom_dicom(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", seed=3, rows=64, columns=64, slices=10)
    mask_path = study.write_mask(tmp_path / "study" / "mask.nii.gz")
    case = CohortCase(
        case_id="phantom",
        images={role: tmp_path / "study" / role.value for role in SequenceRole},
        mask=mask_path,
        label=1,
    )

    outcome = extract_case_features(case)

    assert outcome.status == "ok"
    assert {name.split("_original_")[0] for name in outcome.features} == {"ce_t1", "t2", "t1"}
    assert np.isfinite(list(outcome.features.values())).all()


def test_series_off_grid_is_resampled(image_cohort: Path, tmp_path: Path) -> None:
    case = read_cohort_csv(image_cohort)[1]
    t2 = sitk.ReadImage(str(case.images[SequenceRole.T2]))
    finer = sitk.Resample(
        t2, [80, 80, 6], sitk.Transform(), sitk.sitkLinear, t2.GetOrigin(), [0.5, 0.5, 4.0]
    )
    sitk.WriteImage(finer, str(tmp_path / "t2_fine.nii.gz"))
    moved = CohortCase(
        case.case_id, {**case.images, SequenceRole.T2: tmp_path / "t2_fine.nii.gz"}, case.mask
    )

    outcome = extract_case_features(moved)
    reference = extract_case_features(case)

    assert outcome.status == "ok"
    shared = reference.features["t2_original_firstorder_Median"]
    assert outcome.features["t2_original_firstorder_Median"] == pytest.approx(shared, rel=0.05)


def test_unreadable_series_marks_case_failed(image_cohort: Path, tmp_path: Path) -> None:
    case = read_cohort_csv(image_cohort)[1]
    broken = tmp_path / "t1"
    broken.mkdir()
    (broken / "0001.dcm").write_bytes(b"not a DICOM file")
    failing = CohortCase("broken", {**case.images, SequenceRole.T1: broken}, case.mask)

    table, outcomes = extract_cohort_features([failing, case], workers=1, show_progress=False)

    assert outcomes[0].status == "failed"
    assert outcomes[1].status == "ok"
    assert table.index.tolist() == [case.case_id]


def test_cohort_extraction_in_worker_processes(image_cohort: Path) -> None:
    cases = read_cohort_csv(image_cohort)

    table, outcomes = extract_cohort_features(cases, workers=2, show_progress=False)
    serial = extract_case_features(cases[3])

    assert table.index.tolist() == [case.case_id for case in cases]
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert table.loc[cases[3].case_id].to_dict() == pytest.approx(serial.features)


def test_zero_workers_rejected(image_cohort: Path) -> None:
    with pytest.raises(ValueError, match="workers is 0"):
        extract_cohort_features(read_cohort_csv(image_cohort), workers=0)

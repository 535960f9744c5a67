"""``otscc-train nomogram`` on a small synthetic image cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from inference.nomogram import NomogramModel
from training.cli import main
from training.nomogram_train import add_arguments, config_from_args
from training.report import read_predictions_csv
from tests.nomogram_cohort_helpers import write_image_cohort

N_CASES = 24


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    cohort_csv = write_image_cohort(root / "cohort", N_CASES, seed=7)
    output = root / "model"
    status = main(
        [
            "nomogram",
            str(cohort_csv),
            "--output-directory",
            str(output),
            "--workers",
            "2",
            "--n-features",
            "2,3",
            "--cv-folds",
            "3",
            "--selection",
            "relief",
            "--impute",
            "t_stage=T2",
            "--demo",
            "--no-progress",
        ]
    )
    assert status == 0
    return cohort_csv, output


def test_cli_writes_model_and_tables(trained_run) -> None:
    _, output = trained_run

    model = NomogramModel.load(output / "nomogram.json")
    features = pd.read_csv(output / "features.csv", index_col="case_id")

    assert model.identity.is_demo is True
    assert model.training_data == "cohort cohort.csv"
    assert 2 <= len(model.features) <= 3
    assert set(model.feature_names) <= set(features.columns)
    assert len(features) == N_CASES
    rules = {v.name: v.imputation for v in model.clinical_variables}
    assert rules["t_stage"] == "T2"
    assert rules["doi_mm"] is None
    assert 35.0 <= rules["age"] <= 85.0
    assert rules["sex"] in ("M", "F")


def test_cli_predictions_read_by_report(trained_run) -> None:
    _, output = trained_run

    sets = read_predictions_csv(output / "predictions.csv")

    assert set(sets) == {"train", "test"}
    assert len(sets["test"].y_true) == N_CASES // 4
    assert set(sets["train"].scores) == {"radiomics", "clinical", "nomogram"}


def test_cli_reuses_features_csv(trained_run, tmp_path: Path) -> None:
    cohort_csv, output = trained_run

    status = main(
        [
            "nomogram",
            str(cohort_csv),
            "--output-directory",
            str(tmp_path),
            "--features-csv",
            str(output / "features.csv"),
            "--n-features",
            "2,3",
            "--cv-folds",
            "3",
            "--selection",
            "relief",
            "--impute",
            "t_stage=T2",
            "--demo",
        ]
    )

    assert status == 0
    assert not (tmp_path / "features.csv").exists()
    first = NomogramModel.load(output / "nomogram.json")
    second = NomogramModel.load(tmp_path / "nomogram.json")
    assert second.feature_names == first.feature_names
    assert [t.mean for t in second.features] == pytest.approx([t.mean for t in first.features])
    assert second.coefficients == pytest.approx(first.coefficients)
    assert second.cutoff == pytest.approx(first.cutoff)


def _parse(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["cohort.csv", "--output-directory", "out", *extra])


def test_impute_option_parses_rules() -> None:
    config = config_from_args(
        _parse("--impute", "doi_mm=median", "--impute", "age=65", "--impute", "sex=f")
    )

    assert config.imputation["doi_mm"] == "median"
    assert config.imputation["age"] == 65.0
    assert config.imputation["sex"] == "F"
    assert config.imputation["t_stage"] == "unavailable"


def test_impute_option_without_rule_raises() -> None:
    with pytest.raises(ValueError, match="--impute 'age' is invalid"):
        config_from_args(_parse("--impute", "age"))


def test_clinical_option_can_be_empty() -> None:
    config = config_from_args(_parse("--clinical", ""))

    assert config.clinical_variables == ()

"""HTML validation report and its predictions-CSV command line."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.nomogram_figure import NomogramCategory, NomogramSpec, NomogramVariable
from training.report import (
    DEMO_NOTICE,
    PredictionSet,
    add_arguments,
    read_predictions_csv,
    run_from_args,
    write_report,
)
from training.statistics import delong_test, youden_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("radiomics", "clinical", "nomogram")


def _logistic(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _prediction_set(rng: np.random.Generator, n_cases: int) -> PredictionSet:
    labels = rng.integers(0, 2, n_cases)
    radiomics = 1.2 * labels + rng.normal(size=n_cases)
    clinical = 0.8 * labels + rng.normal(size=n_cases)
    return PredictionSet(
        y_true=labels,
        scores={
            "radiomics": _logistic(radiomics - 0.6),
            "clinical": _logistic(clinical - 0.4),
            "nomogram": _logistic(radiomics + clinical - 1.0),
        },
    )


def _spec() -> NomogramSpec:
    return NomogramSpec(
        intercept=-2.0,
        variables=(
            NomogramVariable("rad_score", 1.5, "Rad-score", value_range=(-2.0, 2.0)),
            NomogramVariable(
                "sex", 0.4, "Sex", categories=(NomogramCategory("F", 0.0), NomogramCategory("M", 1.0))
            ),
        ),
    )


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    rng = np.random.default_rng(12)
    sets = {"train": _prediction_set(rng, 150), "test": _prediction_set(rng, 70)}
    out_dir = tmp_path_factory.mktemp("report")
    index = write_report(out_dir, sets, _spec(), "Demo <validation>", True, n_bootstrap=200)
    statistics = json.loads((out_dir / "statistics.json").read_text())
    return sets, index, index.read_text(encoding="utf-8"), statistics


def test_report_writes_index_and_figures(demo_report):
    _, index, _, _ = demo_report
    expected = ["nomogram.png"] + [
        f"{kind}_{split}.png"
        for kind in ("roc", "calibration", "decision_curve")
        for split in ("train", "test")
    ]

    assert index.name == "index.html"
    for name in expected:
        assert (index.parent / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_demo_report_states_demo_notice(demo_report):
    _, _, html, _ = demo_report

    assert DEMO_NOTICE == "Demo model trained on synthetic phantoms, not for clinical use"
    assert DEMO_NOTICE in html


def test_report_escapes_title(demo_report):
    _, _, html, _ = demo_report

    assert "Demo &lt;validation&gt;" in html
    assert "<validation>" not in html


def test_report_auc_matches_sklearn(demo_report):
    sets, _, html, statistics = demo_report
    for split, data in sets.items():
        for name in MODELS:
            expected = roc_auc_score(data.y_true, data.scores[name])
            reported = statistics["splits"][split]["auc_bootstrap"][name]

            assert reported["auc"] == pytest.approx(expected)
            assert reported["ci_low"] < expected < reported["ci_high"]
            assert f"{expected:.3f}" in html


def test_report_compares_nomogram_by_delong(demo_report):
    sets, _, html, statistics = demo_report
    test_set = sets["test"]
    expected = delong_test(test_set.y_true, test_set.scores["nomogram"], test_set.scores["clinical"])

    assert "nomogram vs radiomics" in html
    assert "nomogram vs clinical" in html
    assert statistics["splits"]["test"]["delong"]["clinical"]["p_value"] == pytest.approx(
        expected.p_value
    )
    assert set(statistics["splits"]["train"]["delong"]) == {"radiomics", "clinical"}


def test_report_applies_training_cutoff_to_test(demo_report):
    sets, _, _, statistics = demo_report
    train = sets["train"]
    for name in MODELS:
        training_cutoff = youden_metrics(train.y_true, train.scores[name]).cutoff

        assert statistics["cutoff_split"] == "train"
        assert statistics["splits"]["train"]["youden"][name]["cutoff"] == training_cutoff
        assert statistics["splits"]["test"]["youden"][name]["cutoff"] == training_cutoff


def test_report_includes_hosmer_lemeshow(demo_report):
    _, _, html, statistics = demo_report
    result = statistics["splits"]["test"]["hosmer_lemeshow"]["nomogram"]

    assert "Hosmer-Lemeshow" in html
    assert result["degrees_of_freedom"] == result["n_groups"] - 2
    assert 0.0 <= result["p_value"] <= 1.0


def test_report_without_demo_or_reference(tmp_path):
    rng = np.random.default_rng(4)
    data = _prediction_set(rng, 40)
    sets = {"test": PredictionSet(data.y_true, {"radiomics": data.scores["radiomics"]})}

    html = write_report(tmp_path, sets, title="Site A", n_bootstrap=50).read_text()

    assert DEMO_NOTICE not in html
    assert "No comparison: the reference model &#39;nomogram&#39;" in html
    assert "cutoff maximises Youden&#39;s J on the test set" in html
    assert not (tmp_path / "nomogram.png").exists()


def test_report_shows_uncomputable_hosmer_lemeshow(tmp_path):
    # Two distinct probabilities leave only two groups.
    sets = {"train": {"y_true": [0, 1, 0, 1, 1, 0], "scores": {"nomogram": [0.2, 0.2, 0.2, 0.7, 0.7, 0.7]}}}

    html = write_report(tmp_path, sets, n_bootstrap=50).read_text()
    statistics = json.loads((tmp_path / "statistics.json").read_text())

    assert "not computed: the Hosmer-Lemeshow test needs at least 3 non-empty groups" in html
    assert "at least 3 non-empty groups" in statistics["splits"]["train"]["hosmer_lemeshow"]["nomogram"]["error"]


def test_prediction_set_rejects_length_mismatch():
    with pytest.raises(ValueError, match="model 'clinical'.*one score per case"):
        PredictionSet(np.array([0, 1, 1]), {"clinical": np.array([0.1, 0.2])})


def test_prediction_set_rejects_non_probabilities():
    with pytest.raises(ValueError, match="model 'radiomics' has scores outside"):
        PredictionSet(np.array([0, 1, 1]), {"radiomics": np.array([-1.2, 0.4, 2.5])})


def _write_csv(path, rows, header=("case_id", "split", "label", "prob_radiomics", "prob_nomogram")):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _csv_rows(rng: np.random.Generator, split: str, n_cases: int) -> list[list[object]]:
    data = _prediction_set(rng, n_cases)
    return [
        [f"{split}-{k:03d}", split, int(label), f"{radiomics:.4f}", f"{nomogram:.4f}"]
        for k, (label, radiomics, nomogram) in enumerate(
            zip(data.y_true, data.scores["radiomics"], data.scores["nomogram"])
        )
    ]


def test_cli_builds_report_from_csv(tmp_path):
    rng = np.random.default_rng(8)
    rows = _csv_rows(rng, "train", 60) + _csv_rows(rng, "test", 40)
    predictions = _write_csv(tmp_path / "predictions.csv", rows)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--predictions", str(predictions),
            "--output-directory", str(tmp_path / "out"),
            "--demo",
            "--n-bootstrap", "50",
        ]
    )

    status = run_from_args(args)
    html = (tmp_path / "out" / "index.html").read_text()

    assert status == 0
    assert DEMO_NOTICE in html
    assert "nomogram vs radiomics" in html


def test_read_csv_groups_splits_and_models(tmp_path):
    rows = [
        ["a", "train", 1, "0.9", "0.8"],
        ["b", "train", 0, "0.2", "0.3"],
        ["c", "test", 1, "0.6", "0.7"],
    ]
    sets = read_predictions_csv(_write_csv(tmp_path / "p.csv", rows))

    assert list(sets) == ["train", "test"]
    assert sorted(sets["train"].scores) == ["nomogram", "radiomics"]
    np.testing.assert_array_equal(sets["train"].y_true, [1, 0])
    np.testing.assert_allclose(sets["test"].scores["nomogram"], [0.7])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["a", "train", "yes", "0.9", "0.8"]], "line 2: label must be 0 or 1"),
        ([["a", "train", 1, "0.9", "0.8"], ["b", "train", 0, "1.4", "0.3"]], r"line 3: prob_radiomics must lie in \[0, 1\]"),
        ([["a", "train", 1, "", "0.8"]], "line 2: prob_radiomics must be a number"),
        ([["a", "train", 1, "0.9", "0.8"], ["a", "train", 0, "0.1", "0.3"]], "line 3: repeats an earlier case_id"),
    ],
)
def test_read_csv_rejects_bad_rows(tmp_path, rows, message):
    path = _write_csv(tmp_path / "p.csv", rows)

    with pytest.raises(ValueError, match=message):
        read_predictions_csv(path)


def test_read_csv_rejects_missing_columns(tmp_path):
    path = _write_csv(tmp_path / "p.csv", [["a", "1", "0.5"]], header=("case_id", "label", "prob_x"))

    with pytest.raises(ValueError, match=r"missing \['split'\]"):
        read_predictions_csv(path)


def test_read_csv_errors_omit_case_id(tmp_path):
    path = _write_csv(tmp_path / "p.csv", [["PATIENT-SECRET-7", "train", 2, "0.5", "0.5"]])

    with pytest.raises(ValueError) as caught:
        read_predictions_csv(path)

    assert "PATIENT-SECRET-7" not in str(caught.value)


def test_otscc_train_report_command(tmp_path):
    from training.cli import main

    rng = np.random.default_rng(10)
    predictions = _write_csv(tmp_path / "predictions.csv", _csv_rows(rng, "test", 40))

    status = main(
        ["report", "--predictions", str(predictions), "-od", str(tmp_path / "out"), "--n-bootstrap", "50"]
    )

    assert status == 0
    assert (tmp_path / "out" / "roc_test.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_file_names_ignore_path_characters(tmp_path):
    rng = np.random.default_rng(6)
    sets = {"../outside": _prediction_set(rng, 40), ".._outside": _prediction_set(rng, 40)}

    write_report(tmp_path / "out", sets, n_bootstrap=50)

    assert (tmp_path / "out" / "roc____outside.png").is_file()
    assert (tmp_path / "out" / "roc____outside_1.png").is_file()
    assert not (tmp_path / "roc_.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

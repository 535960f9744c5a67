"""End-to-end training of the radiomics signature and nomogram on feature tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.nomogram import NomogramModel
from training.nomogram_clinical import build_clinical_variables, encode_clinical
from training.nomogram_train import NomogramTrainingConfig, train_nomogram
from training.radiomics_model import ClassifierKind, RadiomicsModelConfig
from training.radiomics_selection import SelectionMethod
from training.statistics import roc_auc

INFORMATIVE = ("ce_t1_original_firstorder_Mean", "t2_original_glcm_Contrast")


def _cohort(n_cases: int = 160, n_noise: int = 12, seed: int = 0):
    """Return features, labels and clinical values where the label depends on two features."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"case_{i:03d}" for i in range(n_cases)], name="case_id")
    noise = {
        f"t1_original_glszm_Noise{i}": rng.normal(100.0, 10.0, n_cases) for i in range(n_noise)
    }
    mean = rng.normal(300.0, 40.0, n_cases)
    contrast = rng.normal(5.0, 2.0, n_cases)
    features = pd.DataFrame({INFORMATIVE[0]: mean, INFORMATIVE[1]: contrast, **noise}, index=ids)
    # A near copy of an informative feature, which the correlation filter must remove.
    features["ce_t1_original_firstorder_Median"] = mean + rng.normal(0.0, 1.0, n_cases)

    logit = 2.0 * (mean - 300.0) / 40.0 - 2.0 * (contrast - 5.0) / 2.0
    labels = pd.Series((rng.random(n_cases) < 1.0 / (1.0 + np.exp(-logit))).astype(int), index=ids)
    clinical = pd.DataFrame(
        {
            "age": rng.integers(30, 85, n_cases).astype(float),
            "sex": rng.choice(["M", "F"], n_cases),
            "t_stage": rng.choice(["T1", "T2", "T3", "T4"], n_cases),
            "doi_mm": rng.uniform(1.0, 20.0, n_cases),
        },
        index=ids,
    )
    return features, labels, clinical


def _split(index: pd.Index, test_every: int = 3) -> pd.Series:
    return pd.Series(
        ["test" if i % test_every == 0 else "train" for i in range(len(index))], index=index
    )


@pytest.fixture(scope="module")
def trained():
    features, labels, clinical = _cohort()
    split = _split(features.index)
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(n_features_grid=(2, 4), cv_folds=4),
        name="tiny",
        is_demo=True,
        training_data="synthetic feature table",
    )
    return train_nomogram(features, labels, clinical, split, config), features, labels, clinical


def test_training_selects_informative_features(trained) -> None:
    result, *_ = trained

    selected = set(result.model.feature_names)
    # The filter keeps one of Mean and its near copy Median, whichever is less redundant.
    assert INFORMATIVE[1] in selected
    assert len(selected & {INFORMATIVE[0], "ce_t1_original_firstorder_Median"}) == 1
    assert not any("Noise" in name for name in selected)


def test_training_separates_test_cases(trained) -> None:
    result, *_ = trained
    test = result.predictions[result.predictions["split"] == "test"]

    assert roc_auc(test["label"], test["prob_radiomics"]) > 0.8
    assert roc_auc(test["label"], test["prob_nomogram"]) > 0.8
    assert result.radiomics.cv_auc_mean > 0.8


def test_predictions_table_has_report_columns(trained) -> None:
    result, features, *_ = trained
    predictions = result.predictions

    assert list(predictions.columns) == [
        "split",
        "label",
        "rad_score",
        "prob_radiomics",
        "prob_clinical",
        "prob_nomogram",
        "missing_inputs",
    ]
    assert predictions.index.tolist() == features.index.tolist()
    for column in ("prob_radiomics", "prob_clinical", "prob_nomogram"):
        assert predictions[column].between(0.0, 1.0).all()


def test_exported_model_reloads_and_scores(trained, tmp_path: Path) -> None:
    result, features, _, clinical = trained
    path = tmp_path / "nomogram.json"
    result.model.save(path)

    model = NomogramModel.load(path)

    assert model.identity.kind == "nomogram"
    assert model.identity.is_demo is True
    for case_id in features.index[:10]:
        scored = model.score(features.loc[case_id].to_dict(), clinical.loc[case_id].to_dict())
        assert scored.missing_inputs == []
        assert scored.probability == pytest.approx(
            result.predictions.loc[case_id, "prob_nomogram"], abs=1e-9
        )
        assert scored.radiomics_score == pytest.approx(
            result.predictions.loc[case_id, "rad_score"], abs=1e-9
        )
        assert scored.risk_group == ("high" if scored.probability >= model.cutoff else "low")


def test_logistic_signature_matches_radiomics_model(trained) -> None:
    result, *_ = trained
    predictions = result.predictions

    expected = 1.0 / (1.0 + np.exp(-predictions["rad_score"]))
    assert np.allclose(predictions["prob_radiomics"], expected)


def test_zscore_uses_training_rows_only() -> None:
    features, labels, clinical = _cohort(n_cases=90, n_noise=3, seed=1)
    split = _split(features.index)
    shifted = features.copy()
    # Test rows far from the training rows: any leak would move the stored means.
    shifted.loc[split == "test"] += 1000.0
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA, n_features_grid=(3,), cv_folds=3
        )
    )

    result = train_nomogram(shifted, labels, clinical, split, config)

    train_rows = shifted[split == "train"]
    for term in result.model.features:
        assert term.mean == pytest.approx(train_rows[term.name].mean())
        assert term.std == pytest.approx(train_rows[term.name].std(ddof=0))


def test_selection_inside_cv_keeps_noise_auc_low() -> None:
    # Labels independent of 300 noise features: choosing features before the
    # cross-validation would make the held-out folds look predictive.
    rng = np.random.default_rng(5)
    ids = pd.Index([f"case_{i:03d}" for i in range(60)])
    features = pd.DataFrame(
        rng.normal(size=(60, 300)),
        index=ids,
        columns=[f"ce_t1_original_firstorder_N{i}" for i in range(300)],
    )
    labels = pd.Series(np.tile([0, 1], 30), index=ids)
    clinical = pd.DataFrame({"age": rng.uniform(40, 80, 60)}, index=ids)
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA, n_features_grid=(5,), cv_folds=5
        ),
        clinical_variables=("age",),
    )

    result = train_nomogram(features, labels, clinical, pd.Series("train", index=ids), config)

    assert result.radiomics.cv_auc_mean < 0.7


@pytest.mark.parametrize(
    "classifier", [ClassifierKind.SVM, ClassifierKind.RANDOM_FOREST], ids=lambda k: k.value
)
def test_alternative_classifier_keeps_logistic_signature(classifier: ClassifierKind) -> None:
    features, labels, clinical = _cohort(n_cases=80, n_noise=3, seed=2)
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA,
            classifier=classifier,
            n_features_grid=(2,),
            cv_folds=3,
        )
    )

    result = train_nomogram(features, labels, clinical, _split(features.index), config)

    logistic = 1.0 / (1.0 + np.exp(-result.predictions["rad_score"]))
    assert not np.allclose(result.predictions["prob_radiomics"], logistic)
    assert len(result.model.features) == 2
    assert result.predictions["prob_radiomics"].between(0.0, 1.0).all()


def test_random_split_is_stratified() -> None:
    features, labels, clinical = _cohort(n_cases=100, n_noise=2, seed=3)
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA, n_features_grid=(2,), cv_folds=3
        ),
        test_fraction=0.3,
    )

    result = train_nomogram(features, labels, clinical, None, config)

    split = result.predictions["split"]
    assert (split == "test").sum() == 30
    positive_share = result.predictions.groupby("split")["label"].mean()
    assert abs(positive_share["train"] - positive_share["test"]) < 0.05


def test_missing_clinical_values_imputed_for_fit() -> None:
    features, labels, clinical = _cohort(n_cases=80, n_noise=2, seed=4)
    clinical.loc[clinical.index[:5], "doi_mm"] = np.nan
    clinical.loc[clinical.index[5], "sex"] = None
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA, n_features_grid=(2,), cv_folds=3
        ),
    )

    result = train_nomogram(features, labels, clinical, _split(features.index), config)

    assert result.predictions["prob_nomogram"].notna().all()
    assert result.predictions.loc[clinical.index[0], "missing_inputs"] == "doi_mm"
    assert result.predictions.loc[clinical.index[5], "missing_inputs"] == "sex"
    rules = {v.name: v.imputation for v in result.model.clinical_variables}
    assert rules["doi_mm"] is None
    assert rules["sex"] in ("M", "F")
    unavailable = result.model.score(features.iloc[0].to_dict(), clinical.iloc[0].to_dict())
    assert unavailable.probability is None
    assert unavailable.missing_inputs == ["doi_mm"]


def test_clinical_encoding_uses_training_rows() -> None:
    train = pd.DataFrame(
        {"age": [40.0, 50.0, 90.0], "sex": ["M", "F", "F"], "grade": ["g2", "g1", "g3"]}
    )
    clinical = pd.DataFrame(
        {"age": [np.nan, 70.0, 60.0], "sex": [None, "m", "X"], "grade": ["G3", None, "G9"]}
    )

    variables = build_clinical_variables(
        train, ("age", "sex", "grade"), {"age": "median", "sex": "mode", "grade": "unavailable"}
    )
    encoded = encode_clinical(clinical, variables, train)

    by_name = {v.name: v for v in variables}
    assert by_name["age"].imputation == 50.0
    assert by_name["sex"].imputation == "F"
    assert by_name["grade"].encoding == {"G1": 0.0, "G2": 1.0, "G3": 2.0}
    assert by_name["grade"].imputation is None
    assert encoded["age"].tolist() == [50.0, 70.0, 60.0]
    # An invalid level ("X", "G9") counts as missing.
    assert encoded["sex"].tolist() == [1.0, 0.0, 1.0]
    # "unavailable" is filled for fitting with the training mode of the codes (all tie: lowest).
    assert encoded["grade"].tolist() == [2.0, 0.0, 0.0]


def test_nomogram_without_clinical_variables(tmp_path: Path) -> None:
    features, labels, clinical = _cohort(n_cases=60, n_noise=2, seed=6)
    config = NomogramTrainingConfig(
        radiomics=RadiomicsModelConfig(
            selection_method=SelectionMethod.ANOVA, n_features_grid=(2,), cv_folds=3
        ),
        clinical_variables=(),
    )

    result = train_nomogram(features, labels, clinical, _split(features.index), config)
    result.model.save(tmp_path / "nomogram.json")
    model = NomogramModel.load(tmp_path / "nomogram.json")

    assert "prob_clinical" not in result.predictions.columns
    assert model.clinical_variables == []
    assert list(model.coefficients) == ["rad_score"]
    scored = model.score(features.iloc[0].to_dict(), {})
    assert scored.probability == pytest.approx(result.predictions["prob_nomogram"].iloc[0])
    assert scored.points["rad_score"] == pytest.approx(scored.total_points)


def test_invalid_labels_raise() -> None:
    features, labels, clinical = _cohort(n_cases=20, n_noise=1)
    labels.iloc[0] = 2

    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        train_nomogram(features, labels, clinical, None, NomogramTrainingConfig())


def test_invalid_split_raises() -> None:
    features, labels, clinical = _cohort(n_cases=20, n_noise=1)
    split = pd.Series("train", index=features.index)
    split.iloc[0] = "validation"

    with pytest.raises(ValueError, match="got \\['validation'\\]"):
        train_nomogram(features, labels, clinical, split, NomogramTrainingConfig())


def test_points_scale_gives_widest_term_hundred(trained) -> None:
    result, *_ = trained
    model = result.model

    spans = {
        name: abs(model.points(name, high) - model.points(name, low))
        for name, (low, high) in model.points_scale.ranges.items()
    }
    assert max(spans.values()) == pytest.approx(100.0)
    assert 0.0 < model.cutoff < 1.0

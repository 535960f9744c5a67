"""Scoring of a hand-written nomogram model file."""

from __future__ import annotations

import math

import pytest

from inference.nomogram import NomogramModel, build_points_scale, model_from_dict
from tests.nomogram_helpers import HAND_FEATURES, hand_model_document


@pytest.fixture
def model() -> NomogramModel:
    return model_from_dict(hand_model_document())


def test_score_matches_hand_computation(model: NomogramModel) -> None:
    # lp = -3 + 1.2 * 0.2 + 0.03 * 50 - 0.4 * 1 = -1.66
    result = model.score(HAND_FEATURES, {"age": 50, "sex": "F"})

    assert result.radiomics_score == pytest.approx(0.2)
    assert result.probability == pytest.approx(1.0 / (1.0 + math.exp(1.66)))
    assert result.probability == pytest.approx(0.159762, abs=1e-6)
    assert result.risk_group == "low"
    assert result.cutoff == 0.3
    assert result.missing_inputs == []
    assert result.imputed_inputs == []


def test_points_match_hand_computation(model: NomogramModel) -> None:
    result = model.score(HAND_FEATURES, {"age": 50, "sex": "F"})

    # rad_score: (0.24 + 2.4) * 100 / 6; age: (1.5 - 0.9) * 100 / 6; sex F is its lowest end.
    assert result.points["rad_score"] == pytest.approx(44.0)
    assert result.points["age"] == pytest.approx(10.0)
    assert result.points["sex"] == pytest.approx(0.0)
    assert result.total_points == pytest.approx(54.0)


def test_total_points_map_to_probability(model: NomogramModel) -> None:
    result = model.score(HAND_FEATURES, {"age": 71, "sex": "m"})

    scale = model.points_scale
    linear_predictor = scale.lp_at_zero_points + result.total_points / scale.points_per_lp_unit
    assert result.probability == pytest.approx(1.0 / (1.0 + math.exp(-linear_predictor)))


def test_widest_variable_spans_hundred_points(model: NomogramModel) -> None:
    assert model.points("rad_score", -2.0) == pytest.approx(0.0)
    assert model.points("rad_score", 3.0) == pytest.approx(100.0)
    assert model.points("age", 90.0) == pytest.approx(30.0)
    assert model.points("sex", 0.0) == pytest.approx(100.0 * 0.4 / 6.0)


def test_risk_group_high_at_cutoff(model: NomogramModel) -> None:
    probability = model.score(HAND_FEATURES, {"age": 50, "sex": "F"}).probability
    model.cutoff = probability

    assert model.score(HAND_FEATURES, {"age": 50, "sex": "F"}).risk_group == "high"


def test_missing_age_is_imputed(model: NomogramModel) -> None:
    result = model.score(HAND_FEATURES, {"sex": "F"})
    with_sixty = model.score(HAND_FEATURES, {"age": 60.0, "sex": "F"})

    assert result.missing_inputs == ["age"]
    assert result.imputed_inputs == ["age"]
    assert result.probability == pytest.approx(with_sixty.probability)
    assert result.total_points == pytest.approx(with_sixty.total_points)


@pytest.mark.parametrize("empty", [None, "", "  ", float("nan")])
def test_empty_values_count_as_missing(model: NomogramModel, empty: object) -> None:
    result = model.score(HAND_FEATURES, {"age": empty, "sex": "F"})

    assert result.missing_inputs == ["age"]
    assert result.imputed_inputs == ["age"]


def test_missing_sex_makes_score_unavailable(model: NomogramModel) -> None:
    result = model.score(HAND_FEATURES, {"age": 50})

    assert result.probability is None
    assert result.risk_group is None
    assert result.total_points is None
    assert result.missing_inputs == ["sex"]
    assert result.imputed_inputs == []
    assert result.radiomics_score == pytest.approx(0.2)
    assert result.points["age"] == pytest.approx(10.0)


def test_missing_feature_makes_score_unavailable(model: NomogramModel) -> None:
    features = {"ce_t1_original_firstorder_Mean": 12.0}

    result = model.score(features, {"sex": "M"})

    assert result.probability is None
    assert result.radiomics_score is None
    assert result.missing_inputs == ["t2_original_glcm_Contrast", "age"]
    assert result.imputed_inputs == ["age"]
    assert "rad_score" not in result.points


def test_nan_feature_counts_as_missing(model: NomogramModel) -> None:
    features = {**HAND_FEATURES, "t2_original_glcm_Contrast": float("nan")}

    result = model.score(features, {"age": 50, "sex": "F"})

    assert result.probability is None
    assert result.missing_inputs == ["t2_original_glcm_Contrast"]


def test_unknown_category_counts_as_invalid(model: NomogramModel, caplog) -> None:
    result = model.score(HAND_FEATURES, {"age": 50, "sex": "X"})

    assert result.probability is None
    assert result.invalid_inputs == ["sex"]
    assert result.missing_inputs == ["sex"]
    assert "sex" not in result.points
    assert "'X'" not in caplog.text


def test_non_numeric_age_is_imputed_as_invalid(model: NomogramModel) -> None:
    result = model.score(HAND_FEATURES, {"age": "fifty", "sex": "F"})
    with_sixty = model.score(HAND_FEATURES, {"age": 60.0, "sex": "F"})

    assert result.invalid_inputs == ["age"]
    assert result.missing_inputs == ["age"]
    assert result.imputed_inputs == ["age"]
    assert result.probability == pytest.approx(with_sixty.probability)


@pytest.mark.parametrize("sex", ["F", "f", " F ", "female", "Female"])
def test_sex_spellings_encode_alike(model: NomogramModel, sex: str) -> None:
    result = model.score(HAND_FEATURES, {"age": 50, "sex": sex})

    assert result.invalid_inputs == []
    assert result.probability == pytest.approx(0.159762, abs=1e-6)


def test_points_scale_needs_nonzero_effect() -> None:
    with pytest.raises(ValueError, match="zero effect"):
        build_points_scale(0.0, {"rad_score": 0.0}, {"rad_score": (0.0, 1.0)})

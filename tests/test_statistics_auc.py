"""ROC AUC, bootstrap CI and DeLong test against independent reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from training.statistics import (
    CiMethod,
    bootstrap_aucs,
    delong_components,
    delong_test,
    roc_auc,
    roc_auc_with_ci,
)

# Hand-worked case: 3 events (X) and 4 non-events (Y) scored by two models.
# Model A has a tie (0.4) between an event and a non-event.
LABELS = np.array([1, 1, 1, 0, 0, 0, 0])
SCORE_A = np.array([0.8, 0.6, 0.4, 0.7, 0.4, 0.3, 0.2])
SCORE_B = np.array([0.5, 0.9, 0.1, 0.2, 0.6, 0.3, 0.8])

# Placement of each event among the non-events (ties count 1/2):
#   A: X=0.8 beats 4 of 4 -> 1; X=0.6 beats 3 -> 3/4; X=0.4 beats 2, ties 1 -> 2.5/4 = 5/8
#   B: X=0.5 beats 0.2 and 0.3 -> 1/2; X=0.9 beats 4 -> 1; X=0.1 beats none -> 0
HAND_V10 = np.array([[1.0, 3 / 4, 5 / 8], [1 / 2, 1.0, 0.0]])
# Placement of each non-event below the events:
#   A: Y=0.7 under 0.8 -> 1/3; Y=0.4 under 0.8, 0.6, tie 0.4 -> 2.5/3 = 5/6; Y=0.3 -> 1; Y=0.2 -> 1
#   B: Y=0.2 under 0.5, 0.9 -> 2/3; Y=0.6 under 0.9 -> 1/3; Y=0.3 -> 2/3; Y=0.8 -> 1/3
HAND_V01 = np.array([[1 / 3, 5 / 6, 1.0, 1.0], [2 / 3, 1 / 3, 2 / 3, 1 / 3]])
# AUC_A = (1 + 3/4 + 5/8) / 3 = 19/24; AUC_B = (1/2 + 1 + 0) / 3 = 1/2.
HAND_AUC = np.array([19 / 24, 1 / 2])
# S10 (ddof 1 over the 3 events). A deviations from 19/24 in 24ths: 5, -1, -4,
# so var = (25 + 1 + 16) / 576 / 2 = 21/576. B deviations: 0, 1/2, -1/2, so
# var = (1/2) / 2 = 1/4. Cross products: 0 - 1/48 + 4/48 = 1/16, so cov = 1/32.
HAND_S10 = np.array([[21 / 576, 1 / 32], [1 / 32, 1 / 4]])
# S01 (ddof 1 over the 4 non-events). A deviations in 24ths: -11, 1, 5, 5, so
# var = 172/576/3 = 172/1728. B deviations: 1/6, -1/6, 1/6, -1/6, so
# var = (4/36) / 3 = 1/27. Cross products in 144ths: -11 - 1 + 5 - 5 = -12,
# so cov = (-1/12) / 3 = -1/36.
HAND_S01 = np.array([[172 / 1728, -1 / 36], [-1 / 36, 1 / 27]])
# var(AUC_A) = 21/576/3 + 172/1728/4 = 21/1728 + 43/1728 = 1/27
# var(AUC_B) = 1/4/3 + 1/27/4 = 1/12 + 1/108 = 5/54
# cov = 1/32/3 - 1/36/4 = 1/96 - 1/144 = 1/288
HAND_VARIANCE_A = 1 / 27
HAND_VARIANCE_B = 5 / 54
HAND_COVARIANCE = 1 / 288
# var(A - B) = 1/27 + 5/54 - 2/288 = 56/432 - 3/432 = 53/432
HAND_DIFFERENCE_VARIANCE = 53 / 432


def _binormal_sample(rng: np.random.Generator, n_per_class: int, separation: float):
    labels = np.repeat([1, 0], n_per_class)
    scores = np.concatenate(
        [rng.normal(separation, 1.0, n_per_class), rng.normal(0.0, 1.0, n_per_class)]
    )
    return labels, scores


def _hanley_mcneil_se(auc: float, n_positive: int, n_negative: int) -> float:
    """Analytic SE of Hanley and McNeil (Radiology 1982;143:29-36)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)
    ) / (n_positive * n_negative)
    return math.sqrt(variance)


def test_delong_components_match_hand_values():
    components = delong_components(LABELS, SCORE_A, SCORE_B)

    np.testing.assert_allclose(components.v10, HAND_V10)
    np.testing.assert_allclose(components.v01, HAND_V01)
    np.testing.assert_allclose(components.auc, HAND_AUC)
    np.testing.assert_allclose(components.s10, HAND_S10)
    np.testing.assert_allclose(components.s01, HAND_S01)


def test_delong_test_matches_hand_values():
    result = delong_test(LABELS, SCORE_A, SCORE_B)
    hand_z = (19 / 24 - 1 / 2) / math.sqrt(HAND_DIFFERENCE_VARIANCE)
    # Two-sided normal p-value written with erfc, independent of scipy.
    hand_p = math.erfc(abs(hand_z) / math.sqrt(2))

    assert result.auc_a == pytest.approx(19 / 24)
    assert result.auc_b == pytest.approx(0.5)
    assert result.difference == pytest.approx(7 / 24)
    assert result.variance_a == pytest.approx(HAND_VARIANCE_A)
    assert result.variance_b == pytest.approx(HAND_VARIANCE_B)
    assert result.covariance == pytest.approx(HAND_COVARIANCE)
    assert result.standard_error == pytest.approx(math.sqrt(HAND_DIFFERENCE_VARIANCE))
    assert result.z == pytest.approx(hand_z)
    assert result.z == pytest.approx(0.8327, abs=1e-4)
    assert result.p_value == pytest.approx(hand_p)


def test_delong_test_is_antisymmetric():
    forward = delong_test(LABELS, SCORE_A, SCORE_B)
    backward = delong_test(LABELS, SCORE_B, SCORE_A)

    assert backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value)


def test_delong_identical_scores_give_p_one():
    result = delong_test(LABELS, SCORE_A, SCORE_A)

    assert result.difference == 0.0
    assert result.z == 0.0
    assert result.p_value == 1.0


def test_delong_needs_two_of_each_class():
    with pytest.raises(ValueError, match="at least 2 events"):
        delong_test([1, 0, 0], [0.9, 0.1, 0.2], [0.5, 0.4, 0.3])


def test_delong_ci_uses_hand_variance():
    estimate = roc_auc_with_ci(LABELS, SCORE_A, method=CiMethod.DELONG)
    half_width = 1.959964 * math.sqrt(HAND_VARIANCE_A)

    assert estimate.method is CiMethod.DELONG
    assert estimate.standard_error == pytest.approx(math.sqrt(1 / 27))
    assert estimate.ci_low == pytest.approx(19 / 24 - half_width, abs=1e-6)
    # 19/24 + 1.96 * 0.192 exceeds 1, so the upper limit is clipped.
    assert estimate.ci_high == 1.0


def test_auc_equals_mann_whitney_u():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 150)
    # Rounding makes many ties between events and non-events.
    scores = np.round(labels * 0.5 + rng.normal(size=150), 1)
    events, non_events = scores[labels == 1], scores[labels == 0]
    u_statistic = stats.mannwhitneyu(events, non_events, alternative="two-sided").statistic

    assert roc_auc(labels, scores) == pytest.approx(u_statistic / (events.size * non_events.size))
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert delong_components(labels, scores).auc[0] == pytest.approx(roc_auc_score(labels, scores))


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="one score per case"):
        roc_auc([0, 1, 1], [0.1, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_bootstrap_se_agrees_with_analytic_se():
    rng = np.random.default_rng(11)
    labels, scores = _binormal_sample(rng, 300, separation=1.0)
    bootstrap = roc_auc_with_ci(labels, scores, n_bootstrap=1000, seed=3)
    delong = roc_auc_with_ci(labels, scores, method=CiMethod.DELONG)
    hanley_mcneil = _hanley_mcneil_se(bootstrap.auc, 300, 300)

    assert bootstrap.standard_error == pytest.approx(hanley_mcneil, rel=0.12)
    assert bootstrap.standard_error == pytest.approx(delong.standard_error, rel=0.12)
    assert bootstrap.ci_low < bootstrap.auc < bootstrap.ci_high
    assert bootstrap.ci_high - bootstrap.ci_low == pytest.approx(
        2 * 1.96 * hanley_mcneil, rel=0.15
    )


def test_bootstrap_ci_covers_binormal_auc():
    separation = 1.0
    # For unit-variance normals the AUC is Phi(d / sqrt(2)).
    true_auc = stats.norm.cdf(separation / math.sqrt(2))
    rng = np.random.default_rng(2026)
    trials = 60
    covered = 0
    for seed in range(trials):
        labels, scores = _binormal_sample(rng, 50, separation)
        estimate = roc_auc_with_ci(labels, scores, n_bootstrap=400, seed=seed)
        covered += estimate.ci_low <= true_auc <= estimate.ci_high

    # Expected 57 of 60; a 50% interval would cover about 30.
    assert covered >= 51
    assert true_auc == pytest.approx(0.7602, abs=1e-4)


def test_bootstrap_seed_reproducible():
    rng = np.random.default_rng(5)
    labels, scores = _binormal_sample(rng, 40, separation=0.8)

    first = roc_auc_with_ci(labels, scores, n_bootstrap=300, seed=42)
    again = roc_auc_with_ci(labels, scores, n_bootstrap=300, seed=42)
    other = roc_auc_with_ci(labels, scores, n_bootstrap=300, seed=43)

    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_plain_bootstrap_skips_one_class_resamples():
    # One event in 8 cases: a plain resample misses it with probability (7/8)^8 = 0.34.
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.95])
    aucs = bootstrap_aucs(labels, scores, n_bootstrap=1000, stratified=False, seed=9)
    estimate = roc_auc_with_ci(labels, scores, n_bootstrap=1000, stratified=False, seed=9)
    stratified = roc_auc_with_ci(labels, scores, n_bootstrap=1000, seed=9)

    assert estimate.n_skipped == int(np.sum(np.isnan(aucs)))
    assert 250 < estimate.n_skipped < 450
    assert estimate.stratified is False
    assert stratified.n_skipped == 0
    assert stratified.stratified is True


def test_roc_auc_with_ci_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence must lie strictly between 0 and 1"):
        roc_auc_with_ci(LABELS, SCORE_A, confidence=95)


def test_delong_difference_se_matches_paired_bootstrap():
    rng = np.random.default_rng(21)
    n_cases = 400
    labels = rng.integers(0, 2, n_cases)
    shared = rng.normal(size=n_cases)
    # Two correlated scores: both share a component, so their AUCs covary.
    score_a = 1.0 * labels + shared + 0.6 * rng.normal(size=n_cases)
    score_b = 0.7 * labels + shared + 0.9 * rng.normal(size=n_cases)
    # Paired resampling stratified by class; AUC = U / (m * n) from scipy, per resample row.
    events, non_events = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    event_rows = rng.choice(events, size=(800, events.size))
    non_event_rows = rng.choice(non_events, size=(800, non_events.size))
    pairs = events.size * non_events.size
    auc_a = stats.mannwhitneyu(score_a[event_rows], score_a[non_event_rows], axis=1).statistic / pairs
    auc_b = stats.mannwhitneyu(score_b[event_rows], score_b[non_event_rows], axis=1).statistic / pairs
    differences = auc_a - auc_b

    result = delong_test(labels, score_a, score_b)

    assert result.covariance > 0
    assert result.standard_error == pytest.approx(np.std(differences, ddof=1), rel=0.12)

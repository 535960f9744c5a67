"""Youden cutoff, Hosmer-Lemeshow test and decision curves on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.calibration import BinStrategy, calibration_curve, hosmer_lemeshow
from training.decision_curve import decision_curve, net_benefit
from training.statistics import metrics_at_cutoff, youden_metrics

# Youden hand case. J at each observed score used as cutoff (score >= cutoff positive):
#   0.1: 4/4 + 0/4 - 1 = 0      0.2: 1 + 1/4 - 1 = 0.25   0.3: 1 + 2/4 - 1 = 0.5
#   0.35: 1 + 3/4 - 1 = 0.75    0.4: 3/4 + 3/4 - 1 = 0.5  0.6: 3/4 + 4/4 - 1 = 0.75
#   0.7: 2/4 + 1 - 1 = 0.5      0.8: 1/4 + 1 - 1 = 0.25
# 0.35 and 0.6 tie at J = 0.75, and the lower cutoff (more sensitive) wins.
YOUDEN_LABELS = np.array([0, 0, 0, 1, 0, 1, 1, 1])
YOUDEN_SCORES = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8])


def test_youden_picks_lower_tied_cutoff():
    metrics = youden_metrics(YOUDEN_LABELS, YOUDEN_SCORES)

    # At 0.35, positives are 0.35, 0.4, 0.6, 0.7, 0.8: TP 4, FP 1 (0.4), TN 3, FN 0.
    assert metrics.cutoff == 0.35
    assert metrics.youden_j == pytest.approx(0.75)
    assert metrics.confusion.tp == 4
    assert metrics.confusion.fp == 1
    assert metrics.confusion.tn == 3
    assert metrics.confusion.fn == 0
    assert metrics.accuracy == pytest.approx(7 / 8)
    assert metrics.sensitivity == pytest.approx(1.0)
    assert metrics.recall == pytest.approx(1.0)
    assert metrics.specificity == pytest.approx(3 / 4)
    assert metrics.ppv == pytest.approx(4 / 5)
    assert metrics.precision == pytest.approx(4 / 5)
    assert metrics.npv == pytest.approx(1.0)
    # F1 = 2 TP / (2 TP + FP + FN) = 8 / 9
    assert metrics.f1 == pytest.approx(8 / 9)


def test_training_cutoff_applied_to_test():
    # Cutoff 0.35 from the training set: 0.5 (event) and 0.35 (non-event) are called positive.
    metrics = metrics_at_cutoff([1, 0, 1, 0], [0.5, 0.35, 0.2, 0.1], 0.35)

    assert metrics.cutoff == 0.35
    assert (metrics.confusion.tp, metrics.confusion.fp) == (1, 1)
    assert (metrics.confusion.tn, metrics.confusion.fn) == (1, 1)
    assert metrics.sensitivity == pytest.approx(0.5)
    assert metrics.specificity == pytest.approx(0.5)
    assert metrics.youden_j == pytest.approx(0.0)


def test_cutoff_above_all_scores_gives_nan_ppv():
    metrics = metrics_at_cutoff([1, 0, 1], [0.2, 0.1, 0.3], 0.9)

    assert metrics.confusion.tp == 0
    assert math.isnan(metrics.ppv)
    assert metrics.npv == pytest.approx(1 / 3)
    assert metrics.specificity == pytest.approx(1.0)


def test_metrics_at_cutoff_rejects_nan():
    with pytest.raises(ValueError, match="cutoff must be finite"):
        metrics_at_cutoff([1, 0], [0.2, 0.1], float("nan"))


# Hosmer-Lemeshow hand case: three groups of four tied probabilities.
#   group 0.1: E = 0.4, O = 1 -> (1 - 0.4)^2 / 0.4 + (3 - 3.6)^2 / 3.6 = 0.9 + 0.1 = 1.0
#   group 0.5: E = 2.0, O = 3 -> (3 - 2)^2 / 2 + (1 - 2)^2 / 2 = 1.0
#   group 0.8: E = 3.2, O = 3 -> (3 - 3.2)^2 / 3.2 + (1 - 0.8)^2 / 0.8 = 0.0125 + 0.05 = 0.0625
# statistic = 2.0625 with 3 - 2 = 1 degree of freedom.
HL_PROBABILITIES = np.repeat([0.1, 0.5, 0.8], 4)
HL_LABELS = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0])


def test_hosmer_lemeshow_hand_case():
    result = hosmer_lemeshow(HL_LABELS, HL_PROBABILITIES, n_groups=3)
    # Chi-square with 1 df: P(X > x) = erfc(sqrt(x / 2)), independent of scipy.
    hand_p = math.erfc(math.sqrt(2.0625 / 2))

    assert result.n_groups == 3
    assert result.degrees_of_freedom == 1
    assert result.statistic == pytest.approx(2.0625)
    assert result.p_value == pytest.approx(hand_p)
    assert result.p_value == pytest.approx(0.1510, abs=1e-4)
    np.testing.assert_array_equal(result.curve.n_events, [1, 3, 3])
    np.testing.assert_allclose(result.curve.expected_events, [0.4, 2.0, 3.2])


def test_hosmer_lemeshow_keeps_ties_together():
    # Ten requested deciles, but only three distinct probabilities exist.
    result = hosmer_lemeshow(HL_LABELS, HL_PROBABILITIES, n_groups=10)

    assert result.n_groups == 3
    assert result.degrees_of_freedom == 1
    assert result.statistic == pytest.approx(2.0625)


def test_hosmer_lemeshow_rejects_two_groups():
    with pytest.raises(ValueError, match="at least 3 non-empty groups"):
        hosmer_lemeshow([0, 1, 0, 1], [0.2, 0.2, 0.7, 0.7])


def test_calibration_rejects_scores_outside_unit_interval():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        calibration_curve([0, 1, 0], [0.2, 1.7, -0.3])


def test_calibration_curve_uniform_bins():
    # Uniform bins of width 0.5: (0, 0.5] holds 0.1, 0.3, 0.5; (0.5, 1] holds 0.7, 0.9.
    curve = calibration_curve(
        [0, 1, 0, 1, 1], [0.1, 0.3, 0.5, 0.7, 0.9], n_groups=2, strategy=BinStrategy.UNIFORM
    )

    np.testing.assert_array_equal(curve.n_cases, [3, 2])
    np.testing.assert_allclose(curve.mean_predicted, [0.3, 0.8])
    np.testing.assert_allclose(curve.observed_rate, [1 / 3, 1.0])


def test_calibration_deciles_have_equal_sizes():
    probabilities = np.linspace(0.01, 0.99, 100)
    labels = (np.arange(100) % 3 == 0).astype(int)
    curve = calibration_curve(labels, probabilities)

    np.testing.assert_array_equal(curve.n_cases, np.full(10, 10))
    assert np.all(np.diff(curve.mean_predicted) > 0)


# Decision curve hand case: 10 cases, 3 events (prevalence 0.3).
DCA_LABELS = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
DCA_PROBABILITIES = np.array([0.9, 0.6, 0.55, 0.3, 0.2, 0.15, 0.1, 0.05, 0.5, 0.4])


def test_net_benefit_hand_thresholds():
    # pt = 0.5: treated 0.9, 0.6 (events), 0.55, 0.5 -> TP 2, FP 2: 2/10 - 2/10 * 1 = 0
    assert net_benefit(DCA_LABELS, DCA_PROBABILITIES, 0.5) == pytest.approx(0.0)
    # pt = 0.2: treated all but 0.15, 0.1, 0.05 -> TP 2, FP 5: 0.2 - 0.5 * 0.25 = 0.075
    assert net_benefit(DCA_LABELS, DCA_PROBABILITIES, 0.2) == pytest.approx(0.075)


def test_decision_curve_reference_strategies():
    curve = decision_curve(DCA_LABELS, DCA_PROBABILITIES, thresholds=[0.2, 0.5])

    assert curve.prevalence == pytest.approx(0.3)
    # Treat all at 0.2: 0.3 - 0.7 * 0.25 = 0.125; at 0.5: 0.3 - 0.7 = -0.4
    np.testing.assert_allclose(curve.treat_all, [0.125, -0.4])
    np.testing.assert_allclose(curve.model, [0.075, 0.0])
    np.testing.assert_array_equal(curve.treat_none, [0.0, 0.0])


def test_decision_curve_rejects_threshold_one():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        decision_curve(DCA_LABELS, DCA_PROBABILITIES, thresholds=[0.5, 1.0])

"""Calibration of predicted probabilities: grouped calibration curve and Hosmer-Lemeshow test.

References
----------
Hosmer DW, Lemeshow S. Goodness of fit tests for the multiple logistic
regression model. Communications in Statistics - Theory and Methods
1980;9:1043-1069.

Figures are drawn on a bare :class:`matplotlib.figure.Figure`, which renders
with Agg and never touches pyplot's global state.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy import stats

from training.statistics import validate_binary_scores

logger = logging.getLogger(__name__)


class BinStrategy(enum.Enum):
    """Rule for grouping cases by predicted probability."""

    QUANTILE = "quantile"
    UNIFORM = "uniform"


@dataclass(frozen=True)
class CalibrationCurve:
    """Observed event rate against mean predicted probability, one entry per non-empty group."""

    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    n_cases: np.ndarray
    n_events: np.ndarray
    expected_events: np.ndarray
    strategy: BinStrategy


@dataclass(frozen=True)
class HosmerLemeshowResult:
    """Hosmer-Lemeshow goodness-of-fit test.

    ``n_groups`` is the number of non-empty groups actually used, which is
    below the requested number when tied probabilities fall on group edges.
    """

    statistic: float
    degrees_of_freedom: int
    p_value: float
    n_groups: int
    curve: CalibrationCurve


def _validate_probabilities(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels, probabilities = validate_binary_scores(y_true, y_prob)
    if probabilities.size == 0:
        raise ValueError("y_prob is empty; pass at least one case")
    if np.any((probabilities < 0.0) | (probabilities > 1.0)):
        raise ValueError(
            f"y_prob must lie in [0, 1], got values from {probabilities.min():.4g} to "
            f"{probabilities.max():.4g}; pass probabilities, not scores or logits"
        )
    return labels, probabilities


def assign_groups(y_prob: np.ndarray, n_groups: int, strategy: BinStrategy) -> np.ndarray:
    """Assign each probability a group index in ``0 .. n_groups - 1``.

    Groups are right-closed intervals ``(edge[k], edge[k + 1]]`` (the first
    one also contains its lower edge), as R's ``cut`` makes them. The quantile
    strategy puts the edges at the sample quantiles (deciles for 10 groups),
    so tied probabilities always share a group. The uniform strategy splits
    [0, 1] into equal widths.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be at least 1, got {n_groups}")
    quantiles = np.linspace(0.0, 1.0, n_groups + 1)
    if strategy is BinStrategy.QUANTILE:
        edges = np.quantile(y_prob, quantiles)
    else:
        edges = quantiles
    return np.searchsorted(edges[1:-1], y_prob, side="left")


def calibration_curve(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    *,
    n_groups: int = 10,
    strategy: BinStrategy = BinStrategy.QUANTILE,
) -> CalibrationCurve:
    """Group cases by predicted probability and compare observed and predicted risk.

    Empty groups are dropped.
    """
    labels, probabilities = _validate_probabilities(y_true, y_prob)
    groups = assign_groups(probabilities, n_groups, strategy)

    used = np.unique(groups)
    n_cases = np.array([np.sum(groups == g) for g in used])
    n_events = np.array([int(np.sum(labels[groups == g])) for g in used])
    expected = np.array([float(np.sum(probabilities[groups == g])) for g in used])
    return CalibrationCurve(
        mean_predicted=expected / n_cases,
        observed_rate=n_events / n_cases,
        n_cases=n_cases,
        n_events=n_events,
        expected_events=expected,
        strategy=strategy,
    )


def hosmer_lemeshow(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    *,
    n_groups: int = 10,
    strategy: BinStrategy = BinStrategy.QUANTILE,
) -> HosmerLemeshowResult:
    """Run the Hosmer-Lemeshow test with groups by deciles of risk (by default).

    The statistic sums ``(O - E)^2 / E`` over events and non-events of each
    group, and is referred to a chi-square distribution with ``g - 2``
    degrees of freedom, where g is the number of non-empty groups.

    Raises
    ------
    ValueError
        If fewer than three non-empty groups remain, or a group has an
        expected count of zero events or zero non-events.
    """
    curve = calibration_curve(y_true, y_prob, n_groups=n_groups, strategy=strategy)
    used_groups = int(curve.n_cases.size)
    if used_groups < 3:
        raise ValueError(
            f"the Hosmer-Lemeshow test needs at least 3 non-empty groups, got {used_groups}; "
            "pass more cases or more distinct probabilities"
        )

    expected_events = curve.expected_events
    expected_non_events = curve.n_cases - expected_events
    if np.any(expected_events <= 0.0) or np.any(expected_non_events <= 0.0):
        raise ValueError(
            "a group has an expected count of 0 events or 0 non-events, because its "
            "probabilities are all 0 or all 1; the Hosmer-Lemeshow statistic is undefined"
        )

    observed_non_events = curve.n_cases - curve.n_events
    statistic = float(
        np.sum((curve.n_events - expected_events) ** 2 / expected_events)
        + np.sum((observed_non_events - expected_non_events) ** 2 / expected_non_events)
    )
    degrees_of_freedom = used_groups - 2
    return HosmerLemeshowResult(
        statistic=statistic,
        degrees_of_freedom=degrees_of_freedom,
        p_value=float(stats.chi2.sf(statistic, degrees_of_freedom)),
        n_groups=used_groups,
        curve=curve,
    )


def plot_calibration(
    curves: dict[str, CalibrationCurve], path: Path, *, title: str = "Calibration"
) -> Path:
    """Draw observed against predicted risk for several models and save a PNG."""
    figure = Figure(figsize=(5.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="Ideal")
    for name, curve in curves.items():
        axes.plot(curve.mean_predicted, curve.observed_rate, marker="o", label=name)

    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("Mean predicted probability")
    axes.set_ylabel("Observed event rate")
    axes.set_title(title)
    axes.legend(loc="upper left")
    figure.savefig(path, dpi=150)
    return Path(path)

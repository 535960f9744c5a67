"""Decision curve analysis: net benefit of a model against treating all or none.

At threshold probability ``pt`` a case is treated when its predicted risk is
at least ``pt``, and ``net benefit = TP / n - FP / n * pt / (1 - pt)``.

References
----------
Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating
prediction models. Medical Decision Making 2006;26:565-574.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from training.statistics import validate_binary_scores

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit over a grid of threshold probabilities.

    ``treat_none`` is zero everywhere and is kept so that tables and plots
    can show all three strategies side by side.
    """

    thresholds: np.ndarray
    model: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray
    prevalence: float


def _validate_thresholds(thresholds: ArrayLike) -> np.ndarray:
    grid = np.asarray(thresholds, dtype=float)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array, got shape {grid.shape}")
    if np.any((grid <= 0.0) | (grid >= 1.0)):
        raise ValueError(
            "thresholds must lie strictly between 0 and 1, because pt / (1 - pt) is "
            f"undefined at 1; got values from {grid.min()} to {grid.max()}"
        )
    return grid


def net_benefit(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> float:
    """Compute the net benefit of treating cases whose predicted risk is at least ``threshold``."""
    labels, probabilities = validate_binary_scores(y_true, y_prob)
    grid = _validate_thresholds([threshold])
    return float(_net_benefit_grid(labels, probabilities, grid)[0])


def _net_benefit_grid(labels: np.ndarray, probabilities: np.ndarray, grid: np.ndarray) -> np.ndarray:
    n_cases = labels.size
    treated = probabilities[None, :] >= grid[:, None]
    tp = np.sum(treated & labels[None, :], axis=1)
    fp = np.sum(treated & ~labels[None, :], axis=1)
    return tp / n_cases - fp / n_cases * grid / (1.0 - grid)


def decision_curve(
    y_true: ArrayLike, y_prob: ArrayLike, thresholds: ArrayLike = DEFAULT_THRESHOLDS
) -> DecisionCurve:
    """Compute net benefit of the model, treat-all and treat-none over ``thresholds``."""
    labels, probabilities = validate_binary_scores(y_true, y_prob)
    if labels.size == 0:
        raise ValueError("y_true is empty; pass at least one case")
    grid = _validate_thresholds(thresholds)

    prevalence = float(labels.mean())
    treat_all = prevalence - (1.0 - prevalence) * grid / (1.0 - grid)
    return DecisionCurve(
        thresholds=grid,
        model=_net_benefit_grid(labels, probabilities, grid),
        treat_all=treat_all,
        treat_none=np.zeros_like(grid),
        prevalence=prevalence,
    )


def plot_decision_curves(
    curves: dict[str, DecisionCurve], path: Path, *, title: str = "Decision curve"
) -> Path:
    """Draw net benefit against threshold probability for several models and save a PNG.

    All curves must come from the same cases, so they share treat-all.
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one decision curve")
    reference = next(iter(curves.values()))

    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for name, curve in curves.items():
        axes.plot(curve.thresholds, curve.model, label=name)
    axes.plot(reference.thresholds, reference.treat_all, color="grey", label="Treat all")
    axes.plot(
        reference.thresholds, reference.treat_none, color="black", linestyle="--", label="Treat none"
    )

    # Treat-all falls steeply towards minus infinity, so clip the y axis just
    # below zero and just above the largest possible net benefit (the prevalence).
    axes.set_ylim(-0.05, max(0.05, reference.prevalence) * 1.1)
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("Threshold probability")
    axes.set_ylabel("Net benefit")
    axes.set_title(title)
    axes.legend(loc="upper right")
    figure.savefig(path, dpi=150)
    return Path(path)

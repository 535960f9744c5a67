"""Correlation filter and feature selectors of the radiomics signature."""

from __future__ import annotations

import numpy as np
import pytest

from training.radiomics_selection import (
    CorrelationFilter,
    LassoSelector,
    ReliefF,
    SelectionMethod,
    make_selector,
)


def _one_informative(
    n_cases: int = 80, n_noise: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return features where only column 2 depends on the class."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_cases // 2)
    X = rng.normal(size=(n_cases, n_noise + 1))
    X[:, [2, -1]] = X[:, [-1, 2]]
    X[:, 2] = y * 2.0 + rng.normal(scale=0.7, size=n_cases)
    return X, y


def test_relieff_ranks_informative_feature_first() -> None:
    X, y = _one_informative()

    relief = ReliefF(n_features_to_select=1, n_neighbors=10).fit(X, y)

    weights = relief.feature_importances_
    assert int(np.argmax(weights)) == 2
    assert weights[2] > 0.1
    assert np.max(np.abs(np.delete(weights, 2))) < 0.05
    assert relief.get_support().tolist() == [i == 2 for i in range(X.shape[1])]


def test_relieff_weight_matches_hand_computation() -> None:
    # Two cases per class on one feature: 0, 0.2 (class 0) and 0.8, 1.0 (class 1).
    # With one neighbour, every hit differs by 0.2, and the nearest misses
    # differ by 0.8, 0.6, 0.6 and 0.8, with miss weight 0.5 / (1 - 0.5) = 1.
    # The weight is (2.8 - 0.8) / 4 = 0.5.
    X = np.array([[0.0], [0.2], [0.8], [1.0]])
    y = np.array([0, 0, 1, 1])

    relief = ReliefF(n_features_to_select=1, n_neighbors=1).fit(X, y)

    assert relief.feature_importances_[0] == pytest.approx(0.5)


def test_correlation_filter_drops_redundant_copy() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=200)
    X = np.column_stack([base, base * 3 + rng.normal(scale=0.01, size=200), rng.normal(size=200)])

    kept = CorrelationFilter(threshold=0.9).fit(X).get_support()

    assert kept.sum() == 2
    assert kept[2]
    assert kept[0] != kept[1]


def test_spearman_filter_catches_monotonic_relation() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=300)
    X = np.column_stack([base, np.exp(3 * base)])

    pearson = CorrelationFilter(threshold=0.9, method="pearson").fit(X).get_support()
    spearman = CorrelationFilter(threshold=0.9, method="spearman").fit(X).get_support()

    assert pearson.sum() == 2
    assert spearman.sum() == 1


def test_correlation_filter_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="use 'pearson' or 'spearman'"):
        CorrelationFilter(method="kendall").fit(np.eye(3))


def test_lasso_selector_keeps_informative_feature() -> None:
    X, y = _one_informative()

    lasso = LassoSelector(n_features_to_select=3).fit(X, y)

    assert lasso.get_support()[2]
    assert 1 <= lasso.get_support().sum() <= 3


def test_lasso_selector_never_returns_empty() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    y = np.tile([0, 1], 20)

    lasso = LassoSelector(n_features_to_select=3, n_cs=3).fit(X, y)

    assert lasso.get_support().sum() >= 1


@pytest.mark.parametrize("method", list(SelectionMethod), ids=lambda m: m.value)
def test_selector_finds_informative_feature(method: SelectionMethod) -> None:
    X, y = _one_informative()

    selector = make_selector(method, 2).fit(X, y)

    assert selector.get_support()[2]
    assert selector.get_support().sum() <= 2


@pytest.mark.parametrize("method", list(SelectionMethod), ids=lambda m: m.value)
def test_selector_caps_at_available_features(method: SelectionMethod) -> None:
    X, y = _one_informative(n_noise=2)

    selector = make_selector(method, 10).fit(X, y)

    assert 1 <= selector.get_support().sum() <= 3

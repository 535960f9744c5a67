"""Feature filters and selectors for the radiomics signature, as sklearn estimators.

Each one is a :class:`~sklearn.feature_selection.SelectorMixin`, so it
fits inside a :class:`~sklearn.pipeline.Pipeline` and is refitted on the
training folds only when the pipeline runs inside cross-validation.
"""

from __future__ import annotations

import enum

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator
from sklearn.feature_selection import RFE, SelectorMixin, f_classif
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted, validate_data


class SelectionMethod(enum.Enum):
    """Method that chooses the signature's features from the decorrelated set."""

    ANOVA = "anova"
    RFE = "rfe"
    LASSO = "lasso"
    RELIEF = "relief"


class CorrelationFilter(SelectorMixin, BaseEstimator):
    """Remove redundant features whose absolute correlation exceeds a threshold.

    Of each pair above ``threshold``, the feature with the larger mean
    absolute correlation to the other remaining features is removed, and
    the search repeats until no pair is above the threshold (the rule of
    caret's ``findCorrelation`` in R).

    Parameters
    ----------
    threshold : float
        Largest absolute correlation allowed between two kept features.
    method : {"pearson", "spearman"}
        Correlation coefficient.
    """

    def __init__(self, threshold: float = 0.9, method: str = "pearson") -> None:
        self.threshold = threshold
        self.method = method

    def fit(self, X, y=None) -> CorrelationFilter:
        """Find the features to keep on ``X``."""
        if self.method not in ("pearson", "spearman"):
            raise ValueError(f"method is {self.method!r}; use 'pearson' or 'spearman'")
        X = validate_data(self, X)
        values = rankdata(X, axis=0) if self.method == "spearman" else X
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.abs(np.corrcoef(values, rowvar=False))
        correlation = np.atleast_2d(np.nan_to_num(correlation, nan=0.0))
        np.fill_diagonal(correlation, 0.0)

        n_features = X.shape[1]
        keep = np.ones(n_features, dtype=bool)
        # Sums over the kept features; both features of a pair share the
        # denominator of the mean, so comparing sums compares means.
        totals = correlation.sum(axis=1)
        remaining = correlation.copy()
        while n_features > 1:
            first, second = np.unravel_index(np.argmax(remaining), remaining.shape)
            if remaining[first, second] <= self.threshold:
                break
            drop = first if totals[first] >= totals[second] else second
            keep[drop] = False
            totals -= correlation[:, drop]
            remaining[drop, :] = -1.0
            remaining[:, drop] = -1.0

        self.support_ = keep
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


class ReliefF(SelectorMixin, BaseEstimator):
    """Select features by ReliefF weights (Kononenko 1994).

    Features are scaled to [0, 1] by their range, and distances between
    cases are Manhattan distances. For each case, the ``n_neighbors``
    nearest cases of its own class (hits) lower a feature's weight by their
    mean difference on it, and the nearest cases of each other class
    (misses) raise it, weighted by that class's prior. A feature that
    separates the classes therefore gets a positive weight, and a noise
    feature gets a weight near zero.

    Parameters
    ----------
    n_features_to_select : int
        Number of features with the largest weights to keep.
    n_neighbors : int
        Hits and misses per class for each case.
    """

    def __init__(self, n_features_to_select: int = 10, n_neighbors: int = 10) -> None:
        self.n_features_to_select = n_features_to_select
        self.n_neighbors = n_neighbors

    def fit(self, X, y) -> ReliefF:
        """Compute the feature weights on ``X`` and ``y``."""
        X, y = validate_data(self, X, y)
        n_cases, n_features = X.shape
        low = X.min(axis=0)
        span = X.max(axis=0) - low
        span[span == 0] = 1.0
        scaled = (X - low) / span

        classes, class_index = np.unique(y, return_inverse=True)
        priors = np.bincount(class_index) / n_cases
        weights = np.zeros(n_features)
        for case in range(n_cases):
            difference = np.abs(scaled - scaled[case])
            distance = difference.sum(axis=1)
            distance[case] = np.inf
            own = class_index[case]
            for other in range(len(classes)):
                members = np.flatnonzero((class_index == other) & (np.arange(n_cases) != case))
                if members.size == 0:
                    continue
                nearest = members[np.argsort(distance[members], kind="stable")[: self.n_neighbors]]
                contribution = difference[nearest].mean(axis=0)
                if other == own:
                    weights -= contribution
                else:
                    weights += priors[other] / (1.0 - priors[own]) * contribution

        self.feature_importances_ = weights / n_cases
        self.support_ = _top_k_mask(self.feature_importances_, self.n_features_to_select)
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


class LassoSelector(SelectorMixin, BaseEstimator):
    """Select the features that an L1-penalised logistic regression keeps.

    The penalty C is chosen by stratified cross-validation on ROC AUC
    within the data given to :meth:`fit`. Of the features with non-zero
    coefficients, the ``n_features_to_select`` with the largest absolute
    coefficients are kept. When the penalty removes every feature, the one
    with the largest ANOVA F-value is kept, so the signature is never empty.

    Parameters
    ----------
    n_features_to_select : int
        Maximum number of features to keep.
    cv : int
        Folds of the inner cross-validation that chooses C.
    n_cs : int
        Number of C values tried, spaced logarithmically from 1e-3 to 1e2.
        Larger C barely penalises and makes liblinear fail to converge
        when the classes are separable.
    random_state : int
        Seed of the inner fold split.
    """

    def __init__(
        self, n_features_to_select: int = 10, cv: int = 5, n_cs: int = 10, random_state: int = 0
    ) -> None:
        self.n_features_to_select = n_features_to_select
        self.cv = cv
        self.n_cs = n_cs
        self.random_state = random_state

    def fit(self, X, y) -> LassoSelector:
        """Fit the L1 logistic regression and choose the features."""
        X, y = validate_data(self, X, y)
        folds = min(self.cv, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        lasso = LogisticRegressionCV(
            Cs=np.logspace(-3, 2, self.n_cs),
            l1_ratios=(1.0,),
            solver="liblinear",
            cv=StratifiedKFold(max(folds, 2), shuffle=True, random_state=self.random_state),
            scoring="roc_auc",
            max_iter=1000,
            use_legacy_attributes=False,
        ).fit(X, y)
        magnitude = np.abs(lasso.coef_.ravel())
        self.coef_ = lasso.coef_.ravel()
        self.C_ = float(np.ravel(lasso.C_)[0])

        if np.any(magnitude > 0):
            magnitude[magnitude == 0] = -np.inf
            self.support_ = _top_k_mask(
                magnitude, min(self.n_features_to_select, int(np.sum(magnitude > 0)))
            )
        else:
            f_values = np.nan_to_num(f_classif(X, y)[0], nan=-np.inf)
            self.support_ = _top_k_mask(f_values, 1)
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


class AnovaSelector(SelectorMixin, BaseEstimator):
    """Keep the features with the largest ANOVA F-values (``f_classif``).

    Unlike :class:`~sklearn.feature_selection.SelectKBest`, it keeps every
    feature when fewer than ``n_features_to_select`` remain after the
    correlation filter, instead of raising.
    """

    def __init__(self, n_features_to_select: int = 10) -> None:
        self.n_features_to_select = n_features_to_select

    def fit(self, X, y) -> AnovaSelector:
        """Compute the F-values and choose the features."""
        X, y = validate_data(self, X, y)
        with np.errstate(invalid="ignore", divide="ignore"):
            f_values = f_classif(X, y)[0]
        self.scores_ = np.nan_to_num(f_values, nan=-np.inf)
        self.support_ = _top_k_mask(self.scores_, self.n_features_to_select)
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


class RfeSelector(SelectorMixin, BaseEstimator):
    """Recursive feature elimination with a logistic regression.

    It wraps :class:`~sklearn.feature_selection.RFE` and caps the number of
    features at the number available, which RFE only warns about.

    Parameters
    ----------
    n_features_to_select : int
        Number of features to keep.
    step : float
        Share of the remaining features removed per round. Removing one at
        a time took minutes for 860 features inside cross-validation.
    """

    def __init__(self, n_features_to_select: int = 10, step: float = 0.1) -> None:
        self.n_features_to_select = n_features_to_select
        self.step = step

    def fit(self, X, y) -> RfeSelector:
        """Run the elimination and keep the surviving features."""
        X, y = validate_data(self, X, y)
        n_keep = max(1, min(self.n_features_to_select, X.shape[1]))
        self.rfe_ = RFE(
            LogisticRegression(max_iter=1000), n_features_to_select=n_keep, step=self.step
        ).fit(X, y)
        self.support_ = self.rfe_.support_
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_


def make_selector(
    method: SelectionMethod, n_features: int, *, random_state: int = 0
) -> BaseEstimator:
    """Return an unfitted selector for ``method`` that keeps at most ``n_features``."""
    if method is SelectionMethod.ANOVA:
        return AnovaSelector(n_features_to_select=n_features)
    if method is SelectionMethod.RFE:
        return RfeSelector(n_features_to_select=n_features)
    if method is SelectionMethod.LASSO:
        return LassoSelector(n_features_to_select=n_features, random_state=random_state)
    if method is SelectionMethod.RELIEF:
        return ReliefF(n_features_to_select=n_features)
    raise ValueError(
        f"selection method {method!r} is not one of {[m.value for m in SelectionMethod]}"
    )


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Return a mask of the ``k`` largest scores (ties broken by column order)."""
    k = max(1, min(int(k), scores.size))
    order = np.argsort(-scores, kind="stable")[:k]
    mask = np.zeros(scores.size, dtype=bool)
    mask[order] = True
    return mask

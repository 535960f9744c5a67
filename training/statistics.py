"""Discrimination statistics for binary risk models: ROC AUC, DeLong and Youden.

All functions take ``y_true`` as 0/1 labels (1 = event, for example a nodal
metastasis) and ``y_score`` as a score that is higher for events. A case is
called positive at a cutoff when ``y_score >= cutoff``.

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
correlated receiver operating characteristic curves: a nonparametric approach.
Biometrics 1988;44:837-845.

Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas
under correlated receiver operating characteristic curves. IEEE Signal
Processing Letters 2014;21:1389-1393.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP_SEED = 20_261_204

# Bootstrap AUCs are computed this many resamples at a time, so memory stays
# at a few (chunk x n) arrays for n cases, whatever n_bootstrap is.
_BOOTSTRAP_CHUNK = 256


class CiMethod(enum.Enum):
    """Method of a confidence interval for an AUC."""

    PERCENTILE_BOOTSTRAP = "percentile bootstrap"
    DELONG = "DeLong"


@dataclass(frozen=True)
class AucEstimate:
    """An ROC AUC with its confidence interval.

    ``n_skipped`` counts bootstrap resamples that held a single class and so
    had no AUC. It is always 0 for stratified resampling, which keeps the
    number of events and non-events of the sample in every resample.
    """

    auc: float
    ci_low: float
    ci_high: float
    confidence: float
    method: CiMethod
    standard_error: float
    n_positive: int
    n_negative: int
    n_bootstrap: int = 0
    n_skipped: int = 0
    stratified: bool | None = None


@dataclass(frozen=True)
class DeLongComponents:
    """DeLong's structural components for k scores of the same cases.

    ``v10`` (k x m) contains the placement value of each of the m events among
    the non-events, and ``v01`` (k x n) that of each of the n non-events
    among the events. ``covariance`` is ``s10 / m + s01 / n``, the estimated
    covariance matrix of the k AUCs.
    """

    auc: np.ndarray
    v10: np.ndarray
    v01: np.ndarray
    s10: np.ndarray
    s01: np.ndarray
    covariance: np.ndarray


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated ROC AUCs measured on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    variance_a: float
    variance_b: float
    covariance: float
    standard_error: float
    z: float
    p_value: float


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of a binary classification at one cutoff."""

    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True)
class ThresholdMetrics:
    """Classification metrics at one cutoff.

    Ratios whose denominator is zero (for example the PPV when no case is
    called positive) are ``nan``.
    """

    cutoff: float
    youden_j: float
    accuracy: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    f1: float
    confusion: ConfusionMatrix

    @property
    def recall(self) -> float:
        """Recall, another name for sensitivity."""
        return self.sensitivity

    @property
    def precision(self) -> float:
        """Precision, another name for the positive predictive value."""
        return self.ppv


def validate_binary_scores(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and scores and return them as a boolean and a float array.

    Raises
    ------
    ValueError
        If the arrays are not 1-D, differ in length, contain labels other
        than 0 and 1, or contain non-finite scores.
    """
    labels = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=float)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(
            f"y_true and y_score must be 1-D, got shapes {labels.shape} and {scores.shape}; "
            "pass one label and one score per case"
        )
    if labels.shape != scores.shape:
        raise ValueError(
            f"y_true has {labels.size} cases but y_score has {scores.size}; "
            "pass one score per case"
        )

    unexpected = set(np.unique(labels).tolist()) - {0, 1, True, False}
    if unexpected:
        raise ValueError(
            f"y_true must contain only 0 and 1, got {sorted(unexpected)!r}; encode events as 1"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"y_score contains {int(np.sum(~np.isfinite(scores)))} non-finite values; "
            "remove or impute those cases first"
        )
    return labels.astype(bool), scores


def _require_both_classes(labels: np.ndarray, minimum: int = 1) -> tuple[int, int]:
    n_positive = int(labels.sum())
    n_negative = int(labels.size - n_positive)
    if n_positive < minimum or n_negative < minimum:
        raise ValueError(
            f"need at least {minimum} events and {minimum} non-events, got {n_positive} "
            f"and {n_negative}; an AUC needs both classes"
        )
    return n_positive, n_negative


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Compute the ROC AUC as the Mann-Whitney U statistic divided by m * n.

    Ties between an event and a non-event count one half.
    """
    labels, scores = validate_binary_scores(y_true, y_score)
    n_positive, n_negative = _require_both_classes(labels)
    ranks = stats.rankdata(scores)
    rank_sum = float(ranks[labels].sum())
    u_statistic = rank_sum - n_positive * (n_positive + 1) / 2.0
    return u_statistic / (n_positive * n_negative)


def _auc_of_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of each row of a (resamples x cases) score matrix; nan for one-class rows."""
    ranks = stats.rankdata(scores, axis=1)
    n_positive = labels.sum(axis=1).astype(float)
    n_negative = labels.shape[1] - n_positive
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)
    auc[(n_positive == 0) | (n_negative == 0)] = np.nan
    return auc


def _resample_indices(
    labels: np.ndarray, count: int, stratified: bool, rng: np.random.Generator
) -> np.ndarray:
    if not stratified:
        return rng.integers(0, labels.size, size=(count, labels.size))
    positives = np.flatnonzero(labels)
    negatives = np.flatnonzero(~labels)
    return np.concatenate(
        [
            rng.choice(positives, size=(count, positives.size), replace=True),
            rng.choice(negatives, size=(count, negatives.size), replace=True),
        ],
        axis=1,
    )


def bootstrap_aucs(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    n_bootstrap: int = 1000,
    stratified: bool = True,
    seed: int | np.random.Generator | None = DEFAULT_BOOTSTRAP_SEED,
) -> np.ndarray:
    """Draw bootstrap resamples of the cases and return the AUC of each.

    With ``stratified=True`` events and non-events are resampled separately,
    so each resample keeps the sample's class counts. With plain resampling a
    resample may hold one class only, and its AUC is ``nan``.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    labels, scores = validate_binary_scores(y_true, y_score)
    _require_both_classes(labels)
    rng = np.random.default_rng(seed)

    results = []
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        count = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
        indices = _resample_indices(labels, count, stratified, rng)
        results.append(_auc_of_rows(scores[indices], labels[indices]))
    return np.concatenate(results)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def roc_auc_with_ci(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = DEFAULT_BOOTSTRAP_SEED,
    stratified: bool = True,
    method: CiMethod = CiMethod.PERCENTILE_BOOTSTRAP,
) -> AucEstimate:
    """Estimate the ROC AUC with a confidence interval.

    Parameters
    ----------
    y_true, y_score : array-like
        0/1 labels and scores, one per case.
    n_bootstrap : int
        Number of bootstrap resamples for the percentile method.
    confidence : float
        Coverage of the interval, for example 0.95.
    seed : int, Generator or None
        Seed of the resampling, so equal seeds give equal intervals.
    stratified : bool
        Resample events and non-events separately, as pROC's ``ci.auc`` does
        by default.
        Plain resampling skips and counts resamples that hold one class.
    method : CiMethod
        The percentile bootstrap, or DeLong's variance with a normal
        approximation clipped to [0, 1].

    Returns
    -------
    AucEstimate
    """
    _check_confidence(confidence)
    labels, scores = validate_binary_scores(y_true, y_score)
    if method is CiMethod.DELONG:
        return _delong_ci(labels, scores, confidence)

    n_positive, n_negative = _require_both_classes(labels)
    auc = roc_auc(labels, scores)
    aucs = bootstrap_aucs(
        labels, scores, n_bootstrap=n_bootstrap, stratified=stratified, seed=seed
    )
    valid = aucs[np.isfinite(aucs)]
    n_skipped = int(aucs.size - valid.size)
    if valid.size < 2:
        raise ValueError(
            f"only {valid.size} of {n_bootstrap} bootstrap resamples held both classes; "
            "use stratified resampling or more cases"
        )
    if n_skipped:
        logger.warning("skipped %s of %s one-class bootstrap resamples", n_skipped, n_bootstrap)

    alpha = 1.0 - confidence
    ci_low, ci_high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return AucEstimate(
        auc=auc,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        confidence=confidence,
        method=CiMethod.PERCENTILE_BOOTSTRAP,
        standard_error=float(np.std(valid, ddof=1)),
        n_positive=n_positive,
        n_negative=n_negative,
        n_bootstrap=n_bootstrap,
        n_skipped=n_skipped,
        stratified=stratified,
    )


def _delong_ci(labels: np.ndarray, scores: np.ndarray, confidence: float) -> AucEstimate:
    components = delong_components(labels, scores)
    auc = float(components.auc[0])
    standard_error = float(np.sqrt(components.covariance[0, 0]))
    z_critical = float(stats.norm.ppf(0.5 + confidence / 2.0))
    n_positive = components.v10.shape[1]
    return AucEstimate(
        auc=auc,
        ci_low=max(0.0, auc - z_critical * standard_error),
        ci_high=min(1.0, auc + z_critical * standard_error),
        confidence=confidence,
        method=CiMethod.DELONG,
        standard_error=standard_error,
        n_positive=n_positive,
        n_negative=components.v01.shape[1],
    )


def delong_components(y_true: ArrayLike, *scores: ArrayLike) -> DeLongComponents:
    """Compute DeLong's structural components with the midrank method of Sun and Xu.

    For events X (m of them) and non-events Y (n), let ``tz`` be the midranks
    of all m + n scores, ``tx`` those of X among X and ``ty`` those of Y among
    Y. Then ``v10 = (tz[X] - tx) / n`` and ``v01 = 1 - (tz[Y] - ty) / m``.

    Raises
    ------
    ValueError
        If there are fewer than two events or non-events, because the
        covariances need at least two of each.
    """
    if not scores:
        raise ValueError("delong_components needs at least one score array")
    checked = [validate_binary_scores(y_true, score) for score in scores]
    labels = checked[0][0]
    n_positive, n_negative = _require_both_classes(labels, minimum=2)
    matrix = np.vstack([score for _, score in checked])

    positives = matrix[:, labels]
    negatives = matrix[:, ~labels]
    tz = stats.rankdata(np.hstack([positives, negatives]), axis=1)
    tx = stats.rankdata(positives, axis=1)
    ty = stats.rankdata(negatives, axis=1)

    v10 = (tz[:, :n_positive] - tx) / n_negative
    v01 = 1.0 - (tz[:, n_positive:] - ty) / n_positive
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return DeLongComponents(
        auc=v10.mean(axis=1),
        v10=v10,
        v01=v01,
        s10=s10,
        s01=s01,
        covariance=s10 / n_positive + s01 / n_negative,
    )


def delong_test(y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> DeLongResult:
    """Test whether two ROC AUCs measured on the same cases differ (two-sided).

    ``z`` and ``p_value`` are ``nan`` when the variance of the difference is
    zero but the AUCs differ, where the normal approximation does not hold.
    Identical AUCs with zero variance give ``z = 0`` and ``p = 1``.
    """
    components = delong_components(y_true, score_a, score_b)
    auc_a, auc_b = (float(value) for value in components.auc)
    covariance = components.covariance
    difference = auc_a - auc_b
    variance = float(covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1])

    if variance > 0.0:
        standard_error = float(np.sqrt(variance))
        z = difference / standard_error
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    elif difference == 0.0:
        standard_error, z, p_value = 0.0, 0.0, 1.0
    else:
        standard_error, z, p_value = 0.0, float("nan"), float("nan")

    return DeLongResult(
        auc_a=auc_a,
        auc_b=auc_b,
        difference=difference,
        variance_a=float(covariance[0, 0]),
        variance_b=float(covariance[1, 1]),
        covariance=float(covariance[0, 1]),
        standard_error=standard_error,
        z=z,
        p_value=p_value,
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _metrics_from_counts(cutoff: float, tp: int, fp: int, tn: int, fn: int) -> ThresholdMetrics:
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    return ThresholdMetrics(
        cutoff=float(cutoff),
        youden_j=sensitivity + specificity - 1.0,
        accuracy=_ratio(tp + tn, tp + fp + tn + fn),
        sensitivity=sensitivity,
        specificity=specificity,
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        confusion=ConfusionMatrix(tp=tp, fp=fp, tn=tn, fn=fn),
    )


def metrics_at_cutoff(y_true: ArrayLike, y_score: ArrayLike, cutoff: float) -> ThresholdMetrics:
    """Classify cases with ``y_score >= cutoff`` as positive and compute the metrics.

    Use this to apply a cutoff chosen on the training set to the test set.
    """
    if not np.isfinite(cutoff):
        raise ValueError(f"cutoff must be finite, got {cutoff}")
    labels, scores = validate_binary_scores(y_true, y_score)
    predicted = scores >= cutoff
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    return _metrics_from_counts(cutoff, tp, fp, tn, fn)


def youden_metrics(y_true: ArrayLike, y_score: ArrayLike) -> ThresholdMetrics:
    """Find the cutoff that maximises Youden's J and compute the metrics there.

    The candidate cutoffs are the observed scores. Where several give the
    same J, the lowest is taken, which favours sensitivity: for nodal
    metastasis a missed event costs more than a false alarm.
    """
    labels, scores = validate_binary_scores(y_true, y_score)
    n_positive, n_negative = _require_both_classes(labels)

    cutoffs = np.unique(scores)
    # For each candidate c, count events and non-events with score >= c.
    tp = n_positive - np.searchsorted(np.sort(scores[labels]), cutoffs, side="left")
    fp = n_negative - np.searchsorted(np.sort(scores[~labels]), cutoffs, side="left")
    youden_j = tp / n_positive - fp / n_negative

    # Equal J from different counts can differ in the last bits, so compare with a tolerance.
    best = int(np.flatnonzero(youden_j >= youden_j.max() - 1e-12)[0])
    return _metrics_from_counts(
        cutoffs[best],
        tp=int(tp[best]),
        fp=int(fp[best]),
        tn=int(n_negative - fp[best]),
        fn=int(n_positive - tp[best]),
    )

"""The radiomics model and signature fitted on a cohort's feature table.

:func:`fit_radiomics_model` fits the pipeline

    constant-feature removal -> Z-score -> correlation filter ->
    feature selection -> classifier

on the training rows only. The number of selected features is chosen by
stratified cross-validation (ROC AUC) over the whole pipeline, so the
Z-score, the correlation filter and the selection are refitted inside
each fold and never see that fold's held-out rows.

The radiomics signature (rad-score) is always the linear predictor of a
logistic regression over the selected, Z-scored features. With the
logistic classifier that is the pipeline's own final step. With the SVM
or random forest, the classifier's probabilities are reported as the
radiomics model, and a logistic regression is refitted on the same
selected features for the signature.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from training.radiomics_selection import CorrelationFilter, SelectionMethod, make_selector

logger = logging.getLogger(__name__)


class ClassifierKind(enum.Enum):
    """Classifier of the radiomics model."""

    LOGISTIC = "logistic"
    SVM = "svm"
    RANDOM_FOREST = "random_forest"


@dataclass(frozen=True)
class RadiomicsModelConfig:
    """Settings of the radiomics pipeline and its cross-validation."""

    selection_method: SelectionMethod = SelectionMethod.LASSO
    n_features_grid: tuple[int, ...] = (4, 8, 12)
    correlation_threshold: float = 0.9
    correlation_method: str = "pearson"
    classifier: ClassifierKind = ClassifierKind.LOGISTIC
    cv_folds: int = 5
    random_state: int = 0


@dataclass
class RadiomicsSignature:
    """The rad-score: ``intercept + sum(coefficient * (x - mean) / std)``."""

    feature_names: list[str]
    means: list[float]
    stds: list[float]
    coefficients: list[float]
    intercept: float

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """Return the rad-score of each row of ``features``."""
        values = features[self.feature_names].to_numpy(dtype=float)
        z = (values - np.asarray(self.means)) / np.asarray(self.stds)
        return self.intercept + z @ np.asarray(self.coefficients)


@dataclass
class FittedRadiomicsModel:
    """The fitted radiomics pipeline, its signature and cross-validated AUC."""

    pipeline: Pipeline
    signature: RadiomicsSignature
    n_features: int
    cv_auc_mean: float
    cv_auc_std: float
    cv_results: dict

    def predict_probability(self, features: pd.DataFrame) -> np.ndarray:
        """Return the radiomics model's probability of the positive class per row."""
        columns = list(self.pipeline.feature_names_in_)
        return self.pipeline.predict_proba(features[columns])[:, 1]


def make_classifier(kind: ClassifierKind, random_state: int = 0):
    """Return an unfitted classifier of ``kind`` that predicts probabilities."""
    if kind is ClassifierKind.LOGISTIC:
        return LogisticRegression(max_iter=1000)
    if kind is ClassifierKind.SVM:
        # Platt scaling fitted on cross-validated decision values, which is
        # what SVC(probability=True) did before scikit-learn 1.9 deprecated it.
        return CalibratedClassifierCV(
            SVC(random_state=random_state), method="sigmoid", ensemble=False
        )
    if kind is ClassifierKind.RANDOM_FOREST:
        return RandomForestClassifier(n_estimators=200, random_state=random_state)
    raise ValueError(f"classifier {kind!r} is not one of {[k.value for k in ClassifierKind]}")


def make_radiomics_pipeline(config: RadiomicsModelConfig, n_features: int) -> Pipeline:
    """Return the unfitted radiomics pipeline (steps in the module docstring)."""
    return Pipeline(
        [
            ("constant", VarianceThreshold(0.0)),
            ("scale", StandardScaler()),
            (
                "decorrelate",
                CorrelationFilter(config.correlation_threshold, config.correlation_method),
            ),
            (
                "select",
                make_selector(
                    config.selection_method, n_features, random_state=config.random_state
                ),
            ),
            ("classify", make_classifier(config.classifier, config.random_state)),
        ]
    )


def fit_radiomics_model(
    features: pd.DataFrame, labels: pd.Series, config: RadiomicsModelConfig
) -> FittedRadiomicsModel:
    """Fit the radiomics pipeline and signature on training rows.

    ``features`` and ``labels`` must hold the training rows only: every
    fitted quantity, the Z-score means and standard deviations included,
    comes from them.
    """
    y = labels.loc[features.index].to_numpy(dtype=int)
    folds = _fold_count(y, config.cv_folds)
    grid = sorted({max(1, min(k, features.shape[1])) for k in config.n_features_grid})
    search = GridSearchCV(
        make_radiomics_pipeline(config, grid[0]),
        {"select__n_features_to_select": grid},
        scoring="roc_auc",
        cv=StratifiedKFold(folds, shuffle=True, random_state=config.random_state),
        refit=True,
    )
    # Small fits run several times faster on one BLAS/OpenMP thread than
    # on many threads competing for two cores.
    with threadpool_limits(limits=1):
        search.fit(features, y)
    pipeline: Pipeline = search.best_estimator_
    best = search.best_index_
    logger.info(
        "Radiomics pipeline: %d features chosen, CV AUC %.3f",
        search.best_params_["select__n_features_to_select"],
        search.best_score_,
    )
    return FittedRadiomicsModel(
        pipeline=pipeline,
        signature=_signature_of(pipeline, features, y, config),
        n_features=int(search.best_params_["select__n_features_to_select"]),
        cv_auc_mean=float(search.best_score_),
        cv_auc_std=float(search.cv_results_["std_test_score"][best]),
        cv_results={
            key: np.asarray(value).tolist()
            for key, value in search.cv_results_.items()
            if key.startswith(("mean_test", "std_test", "param_"))
        },
    )


def _fold_count(y: np.ndarray, requested: int) -> int:
    smallest = int(np.bincount(y, minlength=2).min())
    if smallest < 2:
        raise ValueError(
            f"the training set has {smallest} case(s) of its smaller class; "
            "cross-validation needs at least 2 of each"
        )
    return max(2, min(requested, smallest))


def _signature_of(
    pipeline: Pipeline, features: pd.DataFrame, y: np.ndarray, config: RadiomicsModelConfig
) -> RadiomicsSignature:
    transform = pipeline[:-1]
    names = list(transform.get_feature_names_out())
    scaler: StandardScaler = pipeline.named_steps["scale"]
    # Names must come from the pipeline's start: the scaler alone only saw an array.
    scaled_names = list(pipeline[:2].get_feature_names_out())
    index = [scaled_names.index(name) for name in names]

    if config.classifier is ClassifierKind.LOGISTIC:
        regression: LogisticRegression = pipeline[-1]
    else:
        regression = LogisticRegression(max_iter=1000).fit(transform.transform(features), y)
    return RadiomicsSignature(
        feature_names=names,
        means=[float(scaler.mean_[i]) for i in index],
        stds=[float(scaler.scale_[i]) for i in index],
        coefficients=[float(c) for c in regression.coef_.ravel()],
        intercept=float(regression.intercept_[0]),
    )


def usable_feature_columns(features: pd.DataFrame) -> list[str]:
    """Return the columns that are finite in every row.

    A feature that pyradiomics could not compute for some case is left out
    of training. The check uses no label, so it leaks nothing.
    """
    finite = np.isfinite(features.to_numpy(dtype=float)).all(axis=0)
    dropped = int((~finite).sum())
    if dropped:
        logger.warning("Leaving out %d features that are not finite in every case", dropped)
    return [name for name, keep in zip(features.columns, finite) if keep]

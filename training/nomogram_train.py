"""Train the radiomics signature and the nomogram, and export the model file.

:func:`train_nomogram` takes a feature table, labels, clinical values and a
train/test split. It fits the radiomics pipeline on the training rows
(:mod:`training.radiomics_model`) and computes the rad-score of every case.
Two logistic regressions are then fitted on the training rows: the
clinical model over the clinical variables alone, and the nomogram over
the rad-score and the clinical variables. The Youden cutoff of the
nomogram is taken on the training rows. The result holds the :class:`~inference.nomogram.NomogramModel`
and the predictions of all three models for every case.

:func:`add_arguments` and :func:`run_from_args` run the same from a cohort
CSV (format in :mod:`training.radiomics_cohort`) for ``otscc-train
nomogram``. They write ``nomogram.json``, ``predictions.csv`` (columns
``case_id``, ``split``, ``label``, ``rad_score``, ``prob_radiomics``,
``prob_clinical``, ``prob_nomogram``, ``missing_inputs``) and
``features.csv`` (the extracted feature table, reusable with
``--features-csv``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from inference.clinical import CLINICAL_VARIABLES
from inference.nomogram import RAD_SCORE, NomogramModel, RadiomicsFeatureTerm, build_points_scale
from inference.result import SequenceRole
from training.nomogram_clinical import (
    DEFAULT_IMPUTATION,
    IMPUTATION_RULES,
    build_clinical_variables,
    encode_clinical,
    missing_inputs,
)
from training.radiomics_cohort import DEFAULT_LABEL_COLUMN, CohortCase, read_cohort_csv
from training.radiomics_extraction import extract_cohort_features
from training.radiomics_model import (
    ClassifierKind,
    FittedRadiomicsModel,
    RadiomicsModelConfig,
    fit_radiomics_model,
    usable_feature_columns,
)
from training.radiomics_selection import SelectionMethod
from training.statistics import youden_metrics

logger = logging.getLogger(__name__)

MODEL_FILE = "nomogram.json"
PREDICTIONS_FILE = "predictions.csv"
FEATURES_FILE = "features.csv"

# The cutoff is stored as a probability strictly inside (0, 1).
_CUTOFF_MARGIN = 1e-6


@dataclass(frozen=True)
class NomogramTrainingConfig:
    """Settings of one nomogram training run.

    ``nomogram_c`` is the inverse L2 penalty of the clinical and nomogram
    regressions. The default is weak enough to leave the coefficients of
    a few hundred cases practically unpenalised, but keeps them finite when
    the training classes are separable.
    """

    radiomics: RadiomicsModelConfig = field(default_factory=RadiomicsModelConfig)
    clinical_variables: tuple[str, ...] = tuple(CLINICAL_VARIABLES)
    imputation: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULT_IMPUTATION))
    test_fraction: float = 0.3
    random_state: int = 0
    nomogram_c: float = 1000.0
    name: str = "otscc-nomogram"
    version: str = "0.1.0"
    is_demo: bool = False
    training_data: str = ""
    intended_use: str = (
        "Research use only: probability of cervical lymph node metastasis in oral tongue "
        "squamous cell carcinoma from CE-T1, T2 and T1 MRI radiomics and clinical variables."
    )


@dataclass
class TrainedNomogram:
    """A trained nomogram, its component models and their predictions.

    ``predictions`` has one row per case, indexed by case_id, with the
    columns ``split``, ``label``, ``rad_score``, ``prob_radiomics``,
    ``prob_clinical`` (only with clinical variables), ``prob_nomogram`` and
    ``missing_inputs``.
    """

    model: NomogramModel
    predictions: pd.DataFrame
    radiomics: FittedRadiomicsModel
    clinical_model: LogisticRegression | None
    nomogram_regression: LogisticRegression


def train_nomogram(
    features: pd.DataFrame,
    labels: Mapping[str, int] | pd.Series,
    clinical: pd.DataFrame,
    split: Mapping[str, str] | pd.Series | None = None,
    config: NomogramTrainingConfig | None = None,
) -> TrainedNomogram:
    """Train the radiomics signature and the nomogram.

    Parameters
    ----------
    features : pandas.DataFrame
        Radiomics features, one row per case, indexed by case_id.
    labels : mapping or pandas.Series
        0 or 1 per case_id. Cases without a label are left out.
    clinical : pandas.DataFrame
        Clinical values indexed by case_id, one column per variable;
        missing values are None, NaN or empty.
    split : mapping or pandas.Series or None
        ``"train"`` or ``"test"`` per case_id. None draws a stratified
        split with ``config.test_fraction``.
    config : NomogramTrainingConfig or None
        Settings; None uses the defaults.

    Raises
    ------
    ValueError
        If labels are not 0/1, a split value is invalid, or the training
        set is too small for cross-validation.
    """
    config = config or NomogramTrainingConfig()
    labels = _clean_labels(labels, features.index)
    features = features.loc[labels.index, usable_feature_columns(features.loc[labels.index])]
    clinical = clinical.reindex(labels.index)
    split = _resolve_split(split, labels, config)
    train_ids = split.index[split == "train"]
    logger.info("Training on %d cases, testing on %d", len(train_ids), int((split == "test").sum()))

    radiomics = fit_radiomics_model(
        features.loc[train_ids], labels.loc[train_ids], config.radiomics
    )
    rad_score = pd.Series(radiomics.signature.score(features), index=features.index)

    variables = build_clinical_variables(
        clinical.loc[train_ids], config.clinical_variables, config.imputation
    )
    encoded = encode_clinical(clinical, variables, clinical.loc[train_ids])
    design = pd.concat([rad_score.rename(RAD_SCORE), encoded], axis=1)

    y_train = labels.loc[train_ids].to_numpy()
    nomogram_regression = _logistic(config).fit(design.loc[train_ids], y_train)
    clinical_model = _logistic(config).fit(encoded.loc[train_ids], y_train) if variables else None

    model = _export_model(
        config, radiomics, variables, nomogram_regression, design.loc[train_ids], y_train
    )
    predictions = pd.DataFrame(
        {
            "split": split,
            "label": labels,
            "rad_score": rad_score,
            "prob_radiomics": radiomics.predict_probability(features),
        },
        index=labels.index,
    )
    # Without clinical variables there is no clinical model, and the column
    # is left out: the report rejects empty probabilities.
    if clinical_model is not None:
        predictions["prob_clinical"] = clinical_model.predict_proba(encoded)[:, 1]
    predictions["prob_nomogram"] = nomogram_regression.predict_proba(design)[:, 1]
    predictions["missing_inputs"] = missing_inputs(clinical, config.clinical_variables)
    predictions.index.name = "case_id"
    return TrainedNomogram(model, predictions, radiomics, clinical_model, nomogram_regression)


def _logistic(config: NomogramTrainingConfig) -> LogisticRegression:
    return LogisticRegression(C=config.nomogram_c, max_iter=10000)


def _clean_labels(labels: Mapping[str, int] | pd.Series, index: pd.Index) -> pd.Series:
    series = pd.Series(labels, dtype=object) if not isinstance(labels, pd.Series) else labels
    series = series.reindex(index).dropna()
    values = set(series.astype(float).unique())
    if not values <= {0.0, 1.0}:
        raise ValueError(f"labels must be 0 or 1, got the values {sorted(values)}")
    if series.empty:
        raise ValueError("no case of the feature table has a label; check the case_ids")
    return series.astype(int)


def _resolve_split(
    split: Mapping[str, str] | pd.Series | None, labels: pd.Series, config: NomogramTrainingConfig
) -> pd.Series:
    if split is None:
        train_ids, test_ids = train_test_split(
            labels.index,
            test_size=config.test_fraction,
            stratify=labels,
            random_state=config.random_state,
        )
        resolved = pd.Series("train", index=labels.index)
        resolved.loc[test_ids] = "test"
        return resolved
    resolved = pd.Series(split, dtype=object).reindex(labels.index)
    invalid = sorted({str(v) for v in resolved.unique()} - {"train", "test"})
    if invalid:
        raise ValueError(
            f"split values must be 'train' or 'test' for every labelled case, got {invalid}"
        )
    return resolved


def _export_model(
    config: NomogramTrainingConfig,
    radiomics: FittedRadiomicsModel,
    variables: list,
    regression: LogisticRegression,
    train_design: pd.DataFrame,
    y_train: np.ndarray,
) -> NomogramModel:
    coefficients = dict(zip(train_design.columns, (float(c) for c in regression.coef_.ravel())))
    intercept = float(regression.intercept_[0])
    ranges = {
        name: (float(train_design[name].min()), float(train_design[name].max()))
        for name in train_design
    }
    for variable in variables:
        if variable.encoding:
            codes = list(variable.encoding.values())
            ranges[variable.name] = (min(codes), max(codes))

    train_probability = regression.predict_proba(train_design)[:, 1]
    cutoff = float(
        np.clip(
            youden_metrics(y_train, train_probability).cutoff, _CUTOFF_MARGIN, 1 - _CUTOFF_MARGIN
        )
    )
    signature = radiomics.signature
    return NomogramModel(
        name=config.name,
        version=config.version,
        is_demo=config.is_demo,
        training_data=config.training_data,
        intended_use=config.intended_use,
        features=[
            RadiomicsFeatureTerm(name, mean, std, coefficient)
            for name, mean, std, coefficient in zip(
                signature.feature_names, signature.means, signature.stds, signature.coefficients
            )
        ],
        signature_intercept=signature.intercept,
        clinical_variables=list(variables),
        intercept=intercept,
        coefficients=coefficients,
        cutoff=cutoff,
        points_scale=build_points_scale(intercept, coefficients, ranges),
        training_summary={
            "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "n_train": int(len(y_train)),
            "n_train_positive": int(np.sum(y_train)),
            "selection_method": config.radiomics.selection_method.value,
            "classifier": config.radiomics.classifier.value,
            "correlation_threshold": config.radiomics.correlation_threshold,
            "correlation_method": config.radiomics.correlation_method,
            "n_features_selected": len(signature.feature_names),
            "radiomics_cv_auc_mean": radiomics.cv_auc_mean,
            "radiomics_cv_auc_std": radiomics.cv_auc_std,
        },
    )


def write_predictions_csv(predictions: pd.DataFrame, path: Path) -> Path:
    """Write the predictions table in the format ``training.report`` reads."""
    predictions.reset_index().to_csv(path, index=False, float_format="%.6g")
    return Path(path)


def cohort_tables(cases: Sequence[CohortCase]) -> tuple[pd.Series, pd.DataFrame, pd.Series | None]:
    """Return the labels, clinical table and split (or None) of a cohort's cases."""
    index = pd.Index([case.case_id for case in cases], name="case_id")
    labels = pd.Series([case.label for case in cases], index=index)
    clinical = pd.DataFrame([case.clinical for case in cases], index=index)
    splits = [case.split for case in cases]
    if all(s is None for s in splits):
        return labels, clinical, None
    if any(s is None for s in splits):
        raise ValueError(
            "the cohort CSV's split column is filled for some cases only; fill it for all or none"
        )
    return labels, clinical, pd.Series(splits, index=index)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the nomogram training options to ``parser`` (``otscc-train nomogram``)."""
    _add_input_arguments(parser)
    _add_model_arguments(parser)
    _add_metadata_arguments(parser)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cohort_csv",
        type=Path,
        help="cohort CSV: case_id, folder or series paths, mask_path, label, split, clinical columns",
    )
    parser.add_argument(
        "--output-directory",
        type=Path,
        required=True,
        help="folder for nomogram.json, predictions.csv and features.csv",
    )
    parser.add_argument(
        "--features-csv",
        type=Path,
        help="reuse a features.csv from an earlier run instead of extracting",
    )
    parser.add_argument(
        "--params",
        type=Path,
        help="pyradiomics parameter file (default: the node's inference/params/radiomics.yaml)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes for feature extraction (default 2)"
    )
    parser.add_argument(
        "--label-column",
        default=DEFAULT_LABEL_COLUMN,
        help=f"0/1 outcome column (default {DEFAULT_LABEL_COLUMN})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clinical",
        default=",".join(CLINICAL_VARIABLES),
        help="comma-separated clinical variables of the nomogram; empty for none",
    )
    parser.add_argument(
        "--impute",
        action="append",
        default=[],
        metavar="NAME=RULE",
        help=f"imputation rule of a variable: one of {IMPUTATION_RULES} or a value (repeatable)",
    )
    parser.add_argument(
        "--selection",
        choices=[m.value for m in SelectionMethod],
        default=SelectionMethod.LASSO.value,
        help="feature selection method (default lasso)",
    )
    parser.add_argument(
        "--n-features",
        default="4,8,12",
        help="comma-separated numbers of features tried in cross-validation",
    )
    parser.add_argument(
        "--correlation-threshold",
        type=float,
        default=0.9,
        help="largest absolute correlation between kept features (default 0.9)",
    )
    parser.add_argument("--correlation-method", choices=["pearson", "spearman"], default="pearson")
    parser.add_argument(
        "--classifier",
        choices=[k.value for k in ClassifierKind],
        default=ClassifierKind.LOGISTIC.value,
        help="radiomics model classifier (default logistic)",
    )
    parser.add_argument(
        "--cv-folds", type=int, default=5, help="stratified cross-validation folds (default 5)"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.3,
        help="test share when the CSV has no split column (default 0.3)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split and the cross-validation folds"
    )


def _add_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="otscc-nomogram", help="model name in the model file")
    parser.add_argument("--model-version", default="0.1.0", help="model version in the model file")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="mark the model as a demo model (synthetic training data)",
    )
    parser.add_argument(
        "--training-data", default="", help="description of the training cohort for the model file"
    )


def config_from_args(args: argparse.Namespace) -> NomogramTrainingConfig:
    """Build the training settings from parsed command-line options."""
    clinical = tuple(name.strip() for name in args.clinical.split(",") if name.strip())
    imputation = dict(DEFAULT_IMPUTATION)
    for item in args.impute:
        name, separator, rule = item.partition("=")
        if not separator or not name.strip() or not rule.strip():
            raise ValueError(
                f"--impute {item!r} is invalid; write NAME=RULE, for example age=median"
            )
        imputation[name.strip()] = _parse_rule(rule.strip())
    radiomics = RadiomicsModelConfig(
        selection_method=SelectionMethod(args.selection),
        n_features_grid=tuple(int(k) for k in args.n_features.split(",") if k.strip()),
        correlation_threshold=args.correlation_threshold,
        correlation_method=args.correlation_method,
        classifier=ClassifierKind(args.classifier),
        cv_folds=args.cv_folds,
        random_state=args.seed,
    )
    return NomogramTrainingConfig(
        radiomics=radiomics,
        clinical_variables=clinical,
        imputation=imputation,
        test_fraction=args.test_fraction,
        random_state=args.seed,
        name=args.name,
        version=args.model_version,
        is_demo=args.demo,
        training_data=args.training_data or f"cohort {Path(args.cohort_csv).name}",
    )


def _parse_rule(rule: str) -> object:
    if rule in IMPUTATION_RULES:
        return rule
    try:
        return float(rule)
    except ValueError:
        return rule.upper()


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``otscc-train nomogram``; return the exit status."""
    config = config_from_args(args)
    cases = read_cohort_csv(
        args.cohort_csv, label_column=args.label_column, clinical_columns=config.clinical_variables
    )
    output = Path(args.output_directory)
    output.mkdir(parents=True, exist_ok=True)

    if args.features_csv:
        features = pd.read_csv(args.features_csv, index_col="case_id")
        features.index = features.index.astype(str)
    else:
        features, _ = extract_cohort_features(
            cases, params_path=args.params, workers=args.workers, show_progress=not args.no_progress
        )
        features.to_csv(output / FEATURES_FILE)

    labels, clinical, split = cohort_tables(cases)
    trained = train_nomogram(features, labels, clinical, split, config)
    trained.model.save(output / MODEL_FILE)
    write_predictions_csv(trained.predictions, output / PREDICTIONS_FILE)
    logger.info(
        "Wrote %s with %d radiomics features (CV AUC %.3f) to %s",
        MODEL_FILE,
        len(trained.model.features),
        trained.radiomics.cv_auc_mean,
        output,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the nomogram training alone, without the ``otscc-train`` dispatcher."""
    parser = argparse.ArgumentParser(
        prog="otscc-train nomogram", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""Clinical variables of a nomogram, encoded and imputed from the training rows.

Sex is coded M = 0, F = 1 and T stage T1-T4 as 1-4, so each enters the
logistic regression with one coefficient. A categorical variable that
:data:`inference.clinical.CLINICAL_VARIABLES` does not define gets codes
0, 1, ... in the sorted order of its training levels, which treats it as
ordinal. Numeric variables enter on their own scale.

The imputation rule of each variable is one of ``"median"`` (numeric),
``"mode"`` (any type), ``"unavailable"`` or a fixed value. Medians and modes
come from the training rows only. For fitting, every missing value is
replaced, so no training row is dropped: by the rule's value, or for
``"unavailable"`` by the training median or mode. The exported model
keeps ``"unavailable"``, so the node gives no score without that value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from inference.clinical import CLINICAL_VARIABLES, VariableType, canonical_level
from inference.errors import InputError
from inference.nomogram import UNAVAILABLE, ClinicalVariable

logger = logging.getLogger(__name__)

KNOWN_ENCODINGS: dict[str, dict[str, float]] = {
    "sex": {"M": 0.0, "F": 1.0},
    "t_stage": {"T1": 1.0, "T2": 2.0, "T3": 3.0, "T4": 4.0},
}

DEFAULT_IMPUTATION: dict[str, object] = {
    "age": "median",
    "sex": "mode",
    "t_stage": UNAVAILABLE,
    "doi_mm": UNAVAILABLE,
}

IMPUTATION_RULES = ("median", "mode", UNAVAILABLE)


def build_clinical_variables(
    train: pd.DataFrame,
    names: Sequence[str],
    imputation: Mapping[str, object],
) -> list[ClinicalVariable]:
    """Define each clinical variable from the training rows.

    Raises
    ------
    ValueError
        If a variable has no column or no value in the training rows, or its
        imputation rule does not fit its type.
    """
    variables = []
    for name in names:
        if name not in train.columns or train[name].isna().all():
            raise ValueError(
                f"clinical variable {name!r} has no value in the training rows; drop it or fill it in"
            )
        values = train[name].dropna()
        variable_type = _variable_type(name, values)
        encoding = _encoding(name, values) if variable_type is VariableType.CATEGORICAL else {}
        rule = imputation.get(name, DEFAULT_IMPUTATION.get(name, "mode"))
        definition = CLINICAL_VARIABLES.get(name)
        variables.append(
            ClinicalVariable(
                name=name,
                type=variable_type,
                imputation=_imputation_value(name, rule, values, variable_type),
                encoding=encoding,
                unit=definition.unit if definition else "",
            )
        )
    return variables


def _variable_type(name: str, values: pd.Series) -> VariableType:
    definition = CLINICAL_VARIABLES.get(name)
    if definition is not None:
        return definition.type
    numeric = pd.to_numeric(values, errors="coerce")
    return VariableType.NUMERIC if numeric.notna().all() else VariableType.CATEGORICAL


def _encoding(name: str, values: pd.Series) -> dict[str, float]:
    levels = sorted({canonical_level(name, value) for value in values})
    known = KNOWN_ENCODINGS.get(name)
    if known is None:
        return {level: float(code) for code, level in enumerate(levels)}
    unknown = sorted(set(levels) - set(known))
    if unknown:
        raise ValueError(f"clinical variable {name!r} has levels {unknown} outside {sorted(known)}")
    return dict(known)


def _imputation_value(
    name: str, rule: object, values: pd.Series, variable_type: VariableType
) -> float | str | None:
    if rule == UNAVAILABLE:
        return None
    if rule == "median":
        if variable_type is not VariableType.NUMERIC:
            raise ValueError(
                f"imputation 'median' needs a numeric variable, but {name!r} is categorical"
            )
        return float(np.median(values.astype(float)))
    if rule == "mode":
        if variable_type is VariableType.NUMERIC:
            return float(values.astype(float).mode().iloc[0])
        return str(values.map(lambda value: canonical_level(name, value)).mode().iloc[0])
    return rule if isinstance(rule, str) else float(rule)


def encode_clinical(
    clinical: pd.DataFrame,
    variables: Sequence[ClinicalVariable],
    train: pd.DataFrame,
) -> pd.DataFrame:
    """Return the encoded clinical matrix, with every missing value filled for fitting.

    A missing value takes the variable's imputation value, or for an
    ``"unavailable"`` variable the training median (numeric) or mode
    (categorical) of its encoded values. A value that cannot be encoded
    counts as missing, as :meth:`inference.nomogram.NomogramModel.score`
    treats it.
    """
    encoded = pd.DataFrame(index=clinical.index)
    for variable in variables:
        column = (
            clinical[variable.name]
            if variable.name in clinical.columns
            else pd.Series(index=clinical.index, dtype=object)
        )
        codes = column.map(lambda value: _code_or_nan(variable, value))
        encoded[variable.name] = codes.astype(float).fillna(_fill_code(variable, train))
    return encoded


def _code_or_nan(variable: ClinicalVariable, value: object) -> float:
    if _is_missing(value):
        return np.nan
    try:
        return variable.encode(value)
    except InputError:
        return np.nan


def _fill_code(variable: ClinicalVariable, train: pd.DataFrame) -> float:
    if variable.imputation is not None:
        return variable.encode(variable.imputation)
    codes = train[variable.name].dropna().map(variable.encode).astype(float)
    if variable.type is VariableType.NUMERIC:
        return float(codes.median())
    return float(codes.mode().iloc[0])


def missing_inputs(clinical: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """Return, per row, the names of missing clinical inputs joined by ``;``."""

    def row_missing(row: pd.Series) -> str:
        return ";".join(name for name in names if _is_missing(row.get(name)))

    return clinical.apply(row_missing, axis=1) if len(clinical) else pd.Series(dtype=str)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False

"""The nomogram model file and its scoring.

A nomogram model is one JSON file that training writes and the node loads.
It contains:

* the selected radiomics features with the Z-score mean and standard
  deviation fitted on the training set;
* the radiomics signature: ``rad_score = intercept + sum(coefficient * z)``;
* the clinical variables with their type, encoding and imputation rule;
* the nomogram, a logistic regression over ``rad_score`` and the encoded
  clinical variables;
* the Youden cutoff from training, which splits high from low risk;
* the points scale of a Harrell-style nomogram.

On the points scale, each variable's points are linear in its value and
are 0 at the end of its training range that contributes least to the
linear predictor. The variable whose ``|coefficient| * (high - low)`` is
largest gets 100 points across its range. Total points map back to the
linear predictor as ``lp = lp_at_zero_points + total_points /
points_per_lp_unit``. Values outside the training range give points below
0 or above the variable's maximum; they are not clipped, so the total
always matches the probability.

A categorical variable enters the regression as the number that its
``encoding`` gives each level (0/1 for sex, 1-4 for T stage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inference.clinical import VariableType, canonical_level
from inference.errors import InputError
from inference.result import ModelIdentity, NomogramResult

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_KIND = "nomogram"
RAD_SCORE = "rad_score"
UNAVAILABLE = "unavailable"
RISK_HIGH = "high"
RISK_LOW = "low"
MAX_VARIABLE_POINTS = 100.0

# Relative tolerance for the points scale stored in a file against the one
# its coefficients and ranges imply (JSON round trips keep 15-17 digits).
_SCALE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RadiomicsFeatureTerm:
    """One selected radiomics feature of the signature."""

    name: str
    mean: float
    std: float
    coefficient: float


@dataclass(frozen=True)
class ClinicalVariable:
    """A clinical input of the nomogram.

    ``imputation`` is the value used when the input is missing (a number,
    or a level of ``encoding``), or None when a missing value makes the
    score unavailable.
    """

    name: str
    type: VariableType
    imputation: float | str | None
    encoding: dict[str, float] = field(default_factory=dict)
    unit: str = ""

    def encode(self, value: object) -> float:
        """Return the number that enters the regression for ``value``.

        Raises
        ------
        InputError
            If a numeric value is not a finite number, or a categorical value
            is not one of the encoding's levels (code ``"clinical_value_invalid"``).
        """
        if self.type is VariableType.NUMERIC:
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"Clinical variable {self.name!r} has {value!r}, which is not a number.",
                    code="clinical_value_invalid",
                    hint=f"Send {self.name} as a number in {self.unit or 'its unit'}.",
                ) from exc
            if not math.isfinite(number):
                raise InputError(
                    f"Clinical variable {self.name!r} has the non-finite value {value!r}.",
                    code="clinical_value_invalid",
                )
            return number

        level = canonical_level(self.name, value)
        levels = {canonical_level(self.name, key): code for key, code in self.encoding.items()}
        if level not in levels:
            raise InputError(
                f"Clinical variable {self.name!r} has {value!r}, which is not one of "
                f"{sorted(self.encoding)}.",
                code="clinical_value_invalid",
                hint=f"Send {self.name} as one of {sorted(self.encoding)}.",
            )
        return levels[level]


@dataclass(frozen=True)
class PointsScale:
    """Mapping from linear-predictor contributions to nomogram points."""

    ranges: dict[str, tuple[float, float]]
    points_per_lp_unit: float
    lp_at_zero_points: float


@dataclass
class NomogramModel:
    """A nomogram model file in memory; see the module docstring for its content."""

    name: str
    version: str
    is_demo: bool
    training_data: str
    intended_use: str
    features: list[RadiomicsFeatureTerm]
    signature_intercept: float
    clinical_variables: list[ClinicalVariable]
    intercept: float
    coefficients: dict[str, float]
    cutoff: float
    points_scale: PointsScale
    training_summary: dict = field(default_factory=dict)
    sha256: str = ""

    @classmethod
    def load(cls, path: Path) -> NomogramModel:
        """Read and validate a model file.

        Raises
        ------
        ValueError
            If the file is not valid JSON or a field is missing or invalid;
            the message names the field.
        """
        raw = Path(path).read_bytes()
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"nomogram model file {path} is not valid JSON: {exc}") from exc
        model = model_from_dict(document)
        model.sha256 = hashlib.sha256(raw).hexdigest()
        return model

    def save(self, path: Path) -> None:
        """Write the model file and set :attr:`sha256` to the written bytes' digest."""
        data = self.to_json_bytes()
        Path(path).write_bytes(data)
        self.sha256 = hashlib.sha256(data).hexdigest()

    def to_json_bytes(self) -> bytes:
        """Return the model file's content as UTF-8 JSON."""
        return (json.dumps(model_to_dict(self), indent=2) + "\n").encode("utf-8")

    @property
    def identity(self) -> ModelIdentity:
        """The model's identity; ``sha256`` is the digest of its file content."""
        return ModelIdentity(
            name=self.name,
            version=self.version,
            kind=MODEL_KIND,
            sha256=self.sha256 or hashlib.sha256(self.to_json_bytes()).hexdigest(),
            is_demo=self.is_demo,
            training_data=self.training_data,
            intended_use=self.intended_use,
        )

    @property
    def feature_names(self) -> list[str]:
        """Names of the radiomics features the signature needs."""
        return [term.name for term in self.features]

    def radiomics_score(self, features: Mapping[str, float]) -> tuple[float | None, list[str]]:
        """Return the rad-score and the names of absent or non-finite features."""
        missing = [
            term.name for term in self.features if not _is_finite_number(features.get(term.name))
        ]
        if missing:
            return None, missing
        score = self.signature_intercept + sum(
            term.coefficient * (float(features[term.name]) - term.mean) / term.std
            for term in self.features
        )
        return score, []

    def points(self, name: str, encoded_value: float) -> float:
        """Return the nomogram points of ``name`` at ``encoded_value``."""
        coefficient = self.coefficients[name]
        low, high = self.points_scale.ranges[name]
        lowest_contribution = min(coefficient * low, coefficient * high)
        return (
            coefficient * encoded_value - lowest_contribution
        ) * self.points_scale.points_per_lp_unit

    def score(
        self, features: Mapping[str, float], clinical: Mapping[str, object]
    ) -> NomogramResult:
        """Score one study.

        A missing radiomics feature, or a missing clinical variable whose
        imputation rule is ``"unavailable"``, makes the probability None.
        Every absent input is listed in ``missing_inputs``, and those that
        were replaced by their imputation value also in ``imputed_inputs``.
        A clinical value that cannot be encoded (not a number, or not a
        level of the encoding) is treated as missing and also listed in
        ``invalid_inputs``, so one bad value from the clinic does not stop
        the study's other results.
        """
        rad_score, missing = self.radiomics_score(features)
        imputed: list[str] = []
        encoded: dict[str, float] = {}
        available = rad_score is not None
        if rad_score is not None:
            encoded[RAD_SCORE] = rad_score

        invalid: list[str] = []
        for variable in self.clinical_variables:
            value = clinical.get(variable.name)
            if not _is_missing(value):
                try:
                    encoded[variable.name] = variable.encode(value)
                    continue
                except InputError as exc:
                    # The value itself is not logged: it comes from the patient's record.
                    logger.warning(
                        "Clinical input %s is invalid (%s), treated as missing",
                        variable.name,
                        exc.code,
                    )
                    invalid.append(variable.name)
            missing.append(variable.name)
            if variable.imputation is None:
                available = False
                continue
            imputed.append(variable.name)
            encoded[variable.name] = variable.encode(variable.imputation)

        points = {name: self.points(name, value) for name, value in encoded.items()}
        result = NomogramResult(
            probability=None,
            risk_group=None,
            cutoff=self.cutoff,
            radiomics_score=rad_score,
            points=points,
            missing_inputs=missing,
            imputed_inputs=imputed,
            invalid_inputs=invalid,
        )
        if not available:
            logger.info("Nomogram score unavailable, %d inputs missing", len(missing))
            return result

        linear_predictor = self.intercept + sum(
            self.coefficients[name] * value for name, value in encoded.items()
        )
        result.probability = _logistic(linear_predictor)
        result.risk_group = RISK_HIGH if result.probability >= self.cutoff else RISK_LOW
        result.total_points = sum(points.values())
        return result


def build_points_scale(
    intercept: float,
    coefficients: Mapping[str, float],
    ranges: Mapping[str, tuple[float, float]],
) -> PointsScale:
    """Return the Harrell points scale for a fitted nomogram.

    Raises
    ------
    ValueError
        If a coefficient has no range, or every variable has zero effect
        over its range.
    """
    absent = sorted(set(coefficients) - set(ranges))
    if absent:
        raise ValueError(f"ranges lacks the variables {absent}; give a (low, high) for each")
    widths = {
        name: abs(coefficient) * (ranges[name][1] - ranges[name][0])
        for name, coefficient in coefficients.items()
    }
    widest = max(widths.values(), default=0.0)
    if not widest > 0:
        raise ValueError(
            f"every variable has zero effect over its range ({widths}); "
            "the nomogram has no points scale"
        )
    lp_at_zero = intercept + sum(
        min(coefficient * ranges[name][0], coefficient * ranges[name][1])
        for name, coefficient in coefficients.items()
    )
    return PointsScale(
        ranges={name: (float(low), float(high)) for name, (low, high) in ranges.items()},
        points_per_lp_unit=MAX_VARIABLE_POINTS / widest,
        lp_at_zero_points=lp_at_zero,
    )


def _logistic(linear_predictor: float) -> float:
    # The two branches avoid overflow of exp() for large |lp|.
    if linear_predictor >= 0:
        return 1.0 / (1.0 + math.exp(-linear_predictor))
    exp_lp = math.exp(linear_predictor)
    return exp_lp / (1.0 + exp_lp)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


def model_to_dict(model: NomogramModel) -> dict:
    """Return the JSON document of ``model`` (schema version 1)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": MODEL_KIND,
        "name": model.name,
        "version": model.version,
        "is_demo": model.is_demo,
        "training_data": model.training_data,
        "intended_use": model.intended_use,
        "radiomics_features": [
            {"name": term.name, "mean": term.mean, "std": term.std} for term in model.features
        ],
        "radiomics_signature": {
            "intercept": model.signature_intercept,
            "coefficients": {term.name: term.coefficient for term in model.features},
        },
        "clinical_variables": [
            {
                "name": variable.name,
                "type": variable.type.value,
                "unit": variable.unit,
                "encoding": (
                    dict(variable.encoding) if variable.type is VariableType.CATEGORICAL else None
                ),
                "imputation": UNAVAILABLE if variable.imputation is None else variable.imputation,
            }
            for variable in model.clinical_variables
        ],
        "nomogram": {"intercept": model.intercept, "coefficients": dict(model.coefficients)},
        "cutoff": model.cutoff,
        "points_scale": {
            "ranges": {name: list(bounds) for name, bounds in model.points_scale.ranges.items()},
            "points_per_lp_unit": model.points_scale.points_per_lp_unit,
            "lp_at_zero_points": model.points_scale.lp_at_zero_points,
        },
        "training_summary": model.training_summary,
    }


def model_from_dict(document: object) -> NomogramModel:
    """Validate a model file's JSON document and build the model.

    Raises
    ------
    ValueError
        If a field is missing or invalid; the message names the field.
    """
    doc = _mapping(document, "the model file")
    schema_version = _field(doc, "schema_version", int)
    if schema_version != SCHEMA_VERSION:
        raise ValueError(
            f"schema_version is {schema_version}, but this node reads version {SCHEMA_VERSION}; "
            "export the model again with the matching training tools"
        )
    kind = _field(doc, "kind", str)
    if kind != MODEL_KIND:
        raise ValueError(f"kind is {kind!r}, expected {MODEL_KIND!r}; load a nomogram model file")

    features = _read_features(doc)
    clinical_variables = _read_clinical_variables(doc)
    nomogram = _mapping(_field(doc, "nomogram", dict), "nomogram")
    coefficients = _number_map(nomogram, "coefficients", "nomogram.coefficients")
    expected_terms = [RAD_SCORE] + [variable.name for variable in clinical_variables]
    if sorted(coefficients) != sorted(expected_terms):
        raise ValueError(
            f"nomogram.coefficients has {sorted(coefficients)}, expected one per term {expected_terms}"
        )
    intercept = _number(nomogram, "intercept", "nomogram.intercept")

    cutoff = _number(doc, "cutoff", "cutoff")
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"cutoff is {cutoff}, expected a probability between 0 and 1")

    points_scale = _read_points_scale(doc, intercept, coefficients)
    signature = _mapping(_field(doc, "radiomics_signature", dict), "radiomics_signature")
    return NomogramModel(
        name=_field(doc, "name", str),
        version=_field(doc, "version", str),
        is_demo=_field(doc, "is_demo", bool),
        training_data=_field(doc, "training_data", str),
        intended_use=_field(doc, "intended_use", str),
        features=features,
        signature_intercept=_number(signature, "intercept", "radiomics_signature.intercept"),
        clinical_variables=clinical_variables,
        intercept=intercept,
        coefficients=coefficients,
        cutoff=cutoff,
        points_scale=points_scale,
        training_summary=dict(doc.get("training_summary") or {}),
    )


def _read_features(doc: Mapping) -> list[RadiomicsFeatureTerm]:
    entries = _field(doc, "radiomics_features", list)
    if not entries:
        raise ValueError("radiomics_features is empty; the signature needs at least one feature")
    signature = _mapping(_field(doc, "radiomics_signature", dict), "radiomics_signature")
    coefficients = _number_map(signature, "coefficients", "radiomics_signature.coefficients")

    features = []
    for index, entry in enumerate(entries):
        where = f"radiomics_features[{index}]"
        entry = _mapping(entry, where)
        name = _field(entry, "name", str, where)
        std = _number(entry, "std", f"{where}.std")
        if not std > 0:
            raise ValueError(
                f"{where}.std is {std} for {name!r}; a Z-score needs a positive standard deviation"
            )
        if name not in coefficients:
            raise ValueError(f"radiomics_signature.coefficients has no entry for feature {name!r}")
        features.append(
            RadiomicsFeatureTerm(
                name, _number(entry, "mean", f"{where}.mean"), std, coefficients[name]
            )
        )

    extra = sorted(set(coefficients) - {term.name for term in features})
    if extra:
        raise ValueError(
            f"radiomics_signature.coefficients names {extra}, which radiomics_features lacks"
        )
    return features


def _read_clinical_variables(doc: Mapping) -> list[ClinicalVariable]:
    variables = []
    for index, entry in enumerate(_field(doc, "clinical_variables", list)):
        where = f"clinical_variables[{index}]"
        entry = _mapping(entry, where)
        name = _field(entry, "name", str, where)
        type_text = _field(entry, "type", str, where)
        try:
            variable_type = VariableType(type_text)
        except ValueError as exc:
            raise ValueError(
                f"{where}.type is {type_text!r}, expected one of {[t.value for t in VariableType]}"
            ) from exc

        encoding: dict[str, float] = {}
        if variable_type is VariableType.CATEGORICAL:
            encoding = _number_map(entry, "encoding", f"{where}.encoding")
            if not encoding:
                raise ValueError(
                    f"{where}.encoding is empty; map each level of {name!r} to a number"
                )

        imputation = entry.get("imputation", UNAVAILABLE)
        variable = ClinicalVariable(
            name=name,
            type=variable_type,
            imputation=None if imputation == UNAVAILABLE else imputation,
            encoding=encoding,
            unit=str(entry.get("unit") or ""),
        )
        if variable.imputation is not None:
            try:
                variable.encode(variable.imputation)
            except InputError as exc:
                raise ValueError(
                    f"{where}.imputation is {imputation!r}, which is not a valid value of {name!r}; "
                    f"give a valid value or {UNAVAILABLE!r}"
                ) from exc
        variables.append(variable)

    names = [variable.name for variable in variables]
    if len(set(names)) != len(names) or RAD_SCORE in names:
        raise ValueError(
            f"clinical_variables names {names} must be unique and must not be {RAD_SCORE!r}"
        )
    return variables


def _read_points_scale(
    doc: Mapping, intercept: float, coefficients: Mapping[str, float]
) -> PointsScale:
    scale = _mapping(_field(doc, "points_scale", dict), "points_scale")
    raw_ranges = _mapping(_field(scale, "ranges", dict, "points_scale"), "points_scale.ranges")
    ranges: dict[str, tuple[float, float]] = {}
    for name in coefficients:
        bounds = raw_ranges.get(name)
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(_is_finite_number(bound) for bound in bounds)
            or not bounds[0] <= bounds[1]
        ):
            raise ValueError(
                f"points_scale.ranges[{name!r}] is {bounds!r}, expected [low, high] with low <= high"
            )
        ranges[name] = (float(bounds[0]), float(bounds[1]))

    stored = PointsScale(
        ranges=ranges,
        points_per_lp_unit=_number(scale, "points_per_lp_unit", "points_scale.points_per_lp_unit"),
        lp_at_zero_points=_number(scale, "lp_at_zero_points", "points_scale.lp_at_zero_points"),
    )
    implied = build_points_scale(intercept, coefficients, ranges)
    for name in ("points_per_lp_unit", "lp_at_zero_points"):
        if not math.isclose(
            getattr(stored, name), getattr(implied, name), rel_tol=_SCALE_TOLERANCE, abs_tol=1e-9
        ):
            raise ValueError(
                f"points_scale.{name} is {getattr(stored, name)}, but the coefficients and ranges "
                f"imply {getattr(implied, name)}; export the model again"
            )
    return stored


def _mapping(value: object, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _field(doc: Mapping, key: str, expected: type, where: str = "") -> object:
    path = f"{where}.{key}" if where else key
    if key not in doc:
        raise ValueError(f"{path} is missing from the nomogram model file")
    value = doc[key]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{path} must be a {expected.__name__}, got {value!r}")
    return value


def _number(doc: Mapping, key: str, path: str) -> float:
    if key not in doc:
        raise ValueError(f"{path} is missing from the nomogram model file")
    value = doc[key]
    if not _is_finite_number(value):
        raise ValueError(f"{path} must be a finite number, got {value!r}")
    return float(value)


def _number_map(doc: Mapping, key: str, path: str) -> dict[str, float]:
    if key not in doc:
        raise ValueError(f"{path} is missing from the nomogram model file")
    mapping = _mapping(doc[key], path)
    return {str(name): _number(mapping, name, f"{path}[{name!r}]") for name in mapping}

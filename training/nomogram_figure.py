"""Harrell-style nomogram figure for a logistic regression model.

The nomogram gives each variable an axis of points. The variable whose
linear-predictor contribution ``coefficient * value`` spans the widest range
gets ``max_points`` (100) points, and every other variable is scaled to it, as
in Harrell's nomograms. Reading off the points of each variable,
summing them to total points and dropping down to the probability axis gives
the model's predicted probability.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inference.nomogram import RAD_SCORE, model_from_dict

logger = logging.getLogger(__name__)

PROBABILITY_TICKS = (
    0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999,
)

# Axis labels for variable names of the model file that read poorly as they are.
_AXIS_LABELS = {RAD_SCORE: "Rad-score", "t_stage": "T stage", "doi": "Depth of invasion"}

# Category labels closer than this many points alternate above and below the axis.
_LABEL_CLEARANCE_POINTS = 4.0


@dataclass(frozen=True)
class NomogramCategory:
    """One level of a categorical variable and its encoded value in the model."""

    label: str
    value: float


@dataclass(frozen=True)
class NomogramVariable:
    """One model input: its coefficient and a value range, categories or both.

    Parameters
    ----------
    name : str
        Key of the variable in the model.
    coefficient : float
        Logistic regression coefficient per unit of the encoded value.
    label : str
        Axis label shown in the figure; the name is used when empty.
    value_range : tuple of float, optional
        Lowest and highest value drawn for a continuous variable.
    categories : tuple of NomogramCategory
        Levels of a categorical variable, with their encoded values. A
        categorical variable may also have a ``value_range``, which then
        fixes its points scale (as a model file's points scale does).
    """

    name: str
    coefficient: float
    label: str = ""
    value_range: tuple[float, float] | None = None
    categories: tuple[NomogramCategory, ...] = ()

    def __post_init__(self) -> None:
        if not math.isfinite(self.coefficient):
            raise ValueError(f"coefficient of {self.name!r} must be finite, got {self.coefficient}")
        if self.value_range is None and not self.categories:
            raise ValueError(
                f"variable {self.name!r} needs a value_range or categories; give a range "
                "for a continuous variable or levels for a categorical one"
            )
        if self.value_range is not None:
            low, high = self.value_range
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(
                    f"value_range of {self.name!r} must be finite with low <= high, got "
                    f"{self.value_range}"
                )

    @property
    def display_label(self) -> str:
        """Axis label, falling back to the name."""
        return self.label or self.name

    @property
    def is_categorical(self) -> bool:
        """Whether the variable has categories rather than a value range."""
        return bool(self.categories)

    def contribution_range(self) -> tuple[float, float]:
        """Lowest and highest ``coefficient * value`` over the range, or else over the categories."""
        if self.value_range is not None:
            values = self.value_range
        else:
            values = tuple(category.value for category in self.categories)
        contributions = [self.coefficient * value for value in values]
        return min(contributions), max(contributions)


@dataclass(frozen=True)
class NomogramSpec:
    """A logistic model in the form a nomogram needs."""

    intercept: float
    variables: tuple[NomogramVariable, ...]
    outcome_label: str = "Probability of nodal metastasis"
    max_points: float = 100.0
    _by_name: dict[str, NomogramVariable] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.variables:
            raise ValueError("a nomogram needs at least one variable")
        names = [variable.name for variable in self.variables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"variable names must be unique, got duplicates {duplicates}")
        if self.widest_span() <= 0.0:
            raise ValueError(
                "every variable has a zero contribution range; a nomogram needs a "
                "non-zero coefficient and a non-empty range on at least one variable"
            )
        object.__setattr__(self, "_by_name", {variable.name: variable for variable in self.variables})

    def widest_span(self) -> float:
        """Largest range of ``coefficient * value`` over all variables."""
        spans = [high - low for low, high in (v.contribution_range() for v in self.variables)]
        return max(spans)

    @property
    def points_per_unit(self) -> float:
        """Points per unit of the linear predictor."""
        return self.max_points / self.widest_span()

    def points(self, name: str, value: float) -> float:
        """Points of one variable at an encoded value."""
        try:
            variable = self._by_name[name]
        except KeyError as exc:
            raise ValueError(f"unknown nomogram variable {name!r}; known: {sorted(self._by_name)}") from exc
        lowest, _ = variable.contribution_range()
        return (variable.coefficient * value - lowest) * self.points_per_unit

    def max_total_points(self) -> float:
        """Total points when every variable sits at its highest-scoring value."""
        return sum(high - low for low, high in (v.contribution_range() for v in self.variables)) * (
            self.points_per_unit
        )

    def linear_predictor(self, total_points: float) -> float:
        """Linear predictor (log-odds) at a number of total points."""
        baseline = self.intercept + sum(v.contribution_range()[0] for v in self.variables)
        return baseline + total_points / self.points_per_unit

    def probability(self, total_points: float) -> float:
        """Predicted probability at a number of total points."""
        return float(1.0 / (1.0 + np.exp(-self.linear_predictor(total_points))))

    def total_points_for_probability(self, probability: float) -> float:
        """Total points at which the model predicts ``probability``."""
        log_odds = math.log(probability / (1.0 - probability))
        return (log_odds - self.linear_predictor(0.0)) * self.points_per_unit


@dataclass(frozen=True)
class AxisRow:
    """One axis of the drawn nomogram.

    ``positions`` are on the common horizontal scale of the figure, where the
    Points axis runs from 0 to ``max_points``. ``extent``, where set, is the
    position of both ends of a variable's value range, which the axis line
    covers even where no tick falls.
    """

    label: str
    positions: tuple[float, ...]
    tick_labels: tuple[str, ...]
    extent: tuple[float, float] | None = None

    @property
    def line_span(self) -> tuple[float, float]:
        """Left and right end of the axis line, covering the extent and every tick."""
        ends = list(self.positions) + list(self.extent or ())
        return min(ends), max(ends)


def _format_tick(value: float) -> str:
    return f"{value:g}"


def _pretty_values(low: float, high: float, bins: int = 6) -> list[float]:
    ticks = MaxNLocator(nbins=bins).tick_values(low, high)
    tolerance = 1e-9 * max(1.0, abs(high - low))
    inside = [float(t) for t in ticks if low - tolerance <= t <= high + tolerance]
    return inside if len(inside) >= 2 else [low, high]


def _variable_row(spec: NomogramSpec, variable: NomogramVariable) -> AxisRow:
    if variable.is_categorical:
        values = [category.value for category in variable.categories]
        labels = [category.label for category in variable.categories]
    else:
        low, high = variable.value_range
        span_low, span_high = variable.contribution_range()
        # About one tick per 10 points keeps labels of short axes apart.
        bins = int(min(6, max(1, (span_high - span_low) * spec.points_per_unit // 10)))
        values = _pretty_values(low, high, bins=bins)
        labels = [_format_tick(value) for value in values]
    positions = tuple(spec.points(variable.name, value) for value in values)
    extent = None
    if variable.value_range is not None:
        ends = sorted(spec.points(variable.name, value) for value in variable.value_range)
        extent = (ends[0], ends[1])
    return AxisRow(variable.display_label, positions, tuple(labels), extent)


def total_points_axis_max(spec: NomogramSpec) -> float:
    """Right end of the Total Points axis: the first pretty tick at or above the maximum."""
    maximum = spec.max_total_points()
    return float(MaxNLocator(nbins=8).tick_values(0.0, maximum)[-1])


def nomogram_layout(spec: NomogramSpec) -> list[AxisRow]:
    """Compute every axis of the nomogram: Points, one per variable, Total Points, probability.

    The Total Points and probability axes are compressed so that the whole
    Total Points axis spans the same width as the Points axis.
    """
    points_ticks = _pretty_values(0.0, spec.max_points, bins=10)
    rows = [AxisRow("Points", tuple(points_ticks), tuple(_format_tick(v) for v in points_ticks))]
    rows.extend(_variable_row(spec, variable) for variable in spec.variables)

    axis_max = total_points_axis_max(spec)
    scale = spec.max_points / axis_max
    total_ticks = _pretty_values(0.0, axis_max, bins=8)
    rows.append(
        AxisRow("Total Points", tuple(t * scale for t in total_ticks), tuple(_format_tick(t) for t in total_ticks))
    )

    reachable = spec.max_total_points()
    probabilities = [
        p for p in PROBABILITY_TICKS if 0.0 <= spec.total_points_for_probability(p) <= reachable
    ]
    rows.append(
        AxisRow(
            spec.outcome_label,
            tuple(spec.total_points_for_probability(p) * scale for p in probabilities),
            tuple(_format_tick(p) for p in probabilities),
        )
    )
    return rows


def _draw_row(axes: Any, row: AxisRow, y: float, max_points: float) -> None:
    axes.text(-0.04 * max_points, y, row.label, ha="right", va="center", fontsize=9)
    if not row.positions:
        return
    axes.plot(list(row.line_span), [y, y], color="black", linewidth=1.0)

    previous_position = -math.inf
    below = False
    for position, label in sorted(zip(row.positions, row.tick_labels)):
        below = (not below) if position - previous_position < _LABEL_CLEARANCE_POINTS else False
        previous_position = position
        axes.plot([position, position], [y, y + 0.12], color="black", linewidth=0.8)
        offset, alignment = (-0.12, "top") if below else (0.18, "bottom")
        axes.text(position, y + offset, label, ha="center", va=alignment, fontsize=7)


def plot_nomogram(model_like: NomogramSpec | Any, path: Path, *, title: str = "") -> Path:
    """Draw the nomogram of a :class:`NomogramSpec` or a nomogram model and save a PNG.

    Parameters
    ----------
    model_like : NomogramSpec or model
        The spec itself, or any object :func:`spec_from_model` can adapt.
    path : Path
        Where to write the PNG.
    title : str
        Figure title, for example the model name and version.
    """
    spec = model_like if isinstance(model_like, NomogramSpec) else spec_from_model(model_like)
    rows = nomogram_layout(spec)

    height = 0.6 * len(rows) + 0.8
    figure = Figure(figsize=(10.0, height), layout="constrained")
    axes = figure.add_subplot()
    for index, row in enumerate(rows):
        _draw_row(axes, row, -float(index), spec.max_points)

    axes.set_xlim(-0.35 * spec.max_points, 1.05 * spec.max_points)
    axes.set_ylim(-len(rows) + 0.4, 0.7)
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    figure.savefig(path, dpi=150)
    return Path(path)


def _read(source: Any, name: str, default: Any = None) -> Any:
    if isinstance(source, Mapping):
        return source.get(name, default)
    return getattr(source, name, default)


def _axis_label(name: str, unit: str = "") -> str:
    if unit and name.endswith(f"_{unit}"):
        name = name[: -len(unit) - 1]
    label = _AXIS_LABELS.get(name, name.replace("_", " "))
    label = label[:1].upper() + label[1:]
    return f"{label} ({unit})" if unit else label


def _is_nomogram_model(model: Any) -> bool:
    return all(hasattr(model, name) for name in ("points_scale", "coefficients", "clinical_variables"))


def _spec_from_nomogram_model(model: Any) -> NomogramSpec:
    """Build the spec from an ``inference.nomogram.NomogramModel``.

    The model's ``points_scale.ranges`` give every variable's range, so the
    figure's points equal the points the model reports when it scores a study.
    """
    ranges = model.points_scale.ranges
    clinical = {variable.name: variable for variable in model.clinical_variables}
    order = [RAD_SCORE] + [name for name in clinical if name != RAD_SCORE]
    order += [name for name in model.coefficients if name not in order]

    variables = []
    for name in order:
        if name not in model.coefficients:
            continue
        definition = clinical.get(name)
        encoding = dict(getattr(definition, "encoding", None) or {})
        levels = sorted(encoding.items(), key=lambda item: item[1])
        low, high = ranges[name]
        variables.append(
            NomogramVariable(
                name=name,
                coefficient=float(model.coefficients[name]),
                label=_axis_label(name, str(getattr(definition, "unit", "") or "")),
                value_range=(float(low), float(high)),
                categories=tuple(NomogramCategory(str(level), float(value)) for level, value in levels),
            )
        )
    return NomogramSpec(intercept=float(model.intercept), variables=tuple(variables))


def _variable_from_mapping(entry: Any) -> NomogramVariable:
    name = str(_read(entry, "name"))
    coefficient = float(_read(entry, "coefficient"))
    label = str(_read(entry, "label", "") or "")
    categories = _read(entry, "categories")
    if categories:
        if isinstance(categories, Mapping):
            levels = tuple(NomogramCategory(str(k), float(v)) for k, v in categories.items())
        else:
            levels = tuple(
                NomogramCategory(str(_read(c, "label")), float(_read(c, "value"))) for c in categories
            )
        return NomogramVariable(name, coefficient, label, categories=levels)

    value_range = _read(entry, "value_range") or _read(entry, "range")
    if value_range is None:
        value_range = (_read(entry, "minimum"), _read(entry, "maximum"))
    if value_range[0] is None or value_range[1] is None:
        raise ValueError(
            f"nomogram variable {name!r} has neither categories nor a value range; "
            "add 'categories' or 'minimum' and 'maximum'"
        )
    return NomogramVariable(
        name, coefficient, label, value_range=(float(value_range[0]), float(value_range[1]))
    )


def spec_from_model(model: Any) -> NomogramSpec:
    """Adapt a nomogram model to a :class:`NomogramSpec`.

    Accepts an ``inference.nomogram.NomogramModel``, the JSON document of
    its model file as a mapping, or a plain mapping with ``intercept`` and
    ``variables``. In the plain form each variable has ``name``,
    ``coefficient``, an optional ``label`` and either ``categories`` (a
    mapping of label to encoded value) or a range (``value_range``,
    ``range`` or ``minimum`` and ``maximum``).

    Raises
    ------
    ValueError
        If the model lacks the intercept, the variables or a variable's range.
    """
    if isinstance(model, Mapping) and "points_scale" in model:
        model = model_from_dict(model)
    if _is_nomogram_model(model):
        return _spec_from_nomogram_model(model)

    intercept = _read(model, "intercept")
    variables = _read(model, "variables")
    if intercept is None or not variables:
        raise ValueError(
            f"cannot draw a nomogram from {type(model).__name__}: it needs an 'intercept' "
            "and a non-empty 'variables' list"
        )
    if isinstance(variables, Mapping):
        variables = [dict(entry, name=key) for key, entry in variables.items()]
    outcome_label = _read(model, "outcome_label") or NomogramSpec.outcome_label
    return NomogramSpec(
        intercept=float(intercept),
        variables=tuple(_variable_from_mapping(entry) for entry in variables),
        outcome_label=str(outcome_label),
    )

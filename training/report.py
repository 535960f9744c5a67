"""HTML validation report for the radiomics, clinical and nomogram models.

:func:`write_report` writes ``index.html``, its PNG figures and
``statistics.json`` (undefined ratios as null) into one folder. The report
gives the ROC AUC with bootstrap and DeLong 95% CIs and compares the
reference model (the nomogram) with every other model by DeLong's test. It
lists metrics at the Youden cutoff chosen on the training set and applied
unchanged to the other splits, the Hosmer-Lemeshow test, and ROC,
calibration, decision curve and nomogram figures.

:func:`add_arguments` and :func:`run_from_args` build the same report from a
predictions CSV on the command line.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from training.calibration import (
    HosmerLemeshowResult,
    calibration_curve,
    hosmer_lemeshow,
    plot_calibration,
)
from training.decision_curve import decision_curve, plot_decision_curves
from training.nomogram_figure import NomogramSpec, plot_nomogram, spec_from_model
from training.statistics import (
    DEFAULT_BOOTSTRAP_SEED,
    AucEstimate,
    CiMethod,
    DeLongResult,
    ThresholdMetrics,
    delong_test,
    metrics_at_cutoff,
    roc_auc_with_ci,
    validate_binary_scores,
    youden_metrics,
)

logger = logging.getLogger(__name__)

DEMO_NOTICE = "Demo model trained on synthetic phantoms, not for clinical use"
PROBABILITY_PREFIX = "prob_"
REQUIRED_COLUMNS = ("case_id", "split", "label")
_TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class PredictionSet:
    """Labels and the predicted probability of every model for the cases of one split."""

    y_true: np.ndarray
    scores: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if not self.scores:
            raise ValueError("scores is empty; pass at least one model's probabilities")
        for name, score in self.scores.items():
            try:
                _, checked = validate_binary_scores(self.y_true, score)
            except ValueError as exc:
                raise ValueError(f"model {name!r}: {exc}") from exc
            # Calibration and decision curves read the scores as probabilities.
            if np.any((checked < 0.0) | (checked > 1.0)):
                raise ValueError(
                    f"model {name!r} has scores outside [0, 1]; pass predicted probabilities"
                )


@dataclass
class SplitAnalysis:
    """All statistics of one split.

    A Hosmer-Lemeshow entry is the error message where the test could not be
    computed, for example because too few groups remained.
    """

    n_cases: int
    n_events: int
    auc: dict[str, AucEstimate] = field(default_factory=dict)
    auc_delong: dict[str, AucEstimate] = field(default_factory=dict)
    delong: dict[str, DeLongResult] = field(default_factory=dict)
    youden: dict[str, ThresholdMetrics] = field(default_factory=dict)
    hosmer_lemeshow: dict[str, HosmerLemeshowResult | str] = field(default_factory=dict)


def _as_prediction_set(value: PredictionSet | Mapping) -> PredictionSet:
    if isinstance(value, PredictionSet):
        return value
    return PredictionSet(
        y_true=np.asarray(value["y_true"]),
        scores={name: np.asarray(score, dtype=float) for name, score in value["scores"].items()},
    )


def _format(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _format_p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _format_ci(estimate: AucEstimate) -> str:
    return f"{estimate.ci_low:.3f}-{estimate.ci_high:.3f}"


def plot_roc_curves(
    y_true: ArrayLike,
    scores: Mapping[str, ArrayLike],
    estimates: Mapping[str, AucEstimate],
    path: Path,
    *,
    title: str = "ROC",
) -> Path:
    """Draw the ROC curves of several models with AUC and CI in the legend, and save a PNG."""
    figure = Figure(figsize=(5.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey")
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(np.asarray(y_true), np.asarray(score))
        estimate = estimates[name]
        legend = f"{name}: AUC {estimate.auc:.3f} ({_format_ci(estimate)})"
        axes.plot(fpr, tpr, label=legend)

    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("Sensitivity")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=150)
    return Path(path)


def _analyse_split(
    data: PredictionSet,
    cutoffs: Mapping[str, float],
    reference_model: str,
    n_bootstrap: int,
    seed: int | None,
) -> SplitAnalysis:
    analysis = SplitAnalysis(n_cases=int(data.y_true.size), n_events=int(np.sum(data.y_true)))
    for name, score in data.scores.items():
        analysis.auc[name] = roc_auc_with_ci(data.y_true, score, n_bootstrap=n_bootstrap, seed=seed)
        analysis.auc_delong[name] = roc_auc_with_ci(data.y_true, score, method=CiMethod.DELONG)
        analysis.youden[name] = metrics_at_cutoff(data.y_true, score, cutoffs[name])
        try:
            analysis.hosmer_lemeshow[name] = hosmer_lemeshow(data.y_true, score)
        except ValueError as exc:
            # Shown in the report: a small split can leave too few groups.
            analysis.hosmer_lemeshow[name] = str(exc)

    if reference_model in data.scores:
        for name, score in data.scores.items():
            if name != reference_model:
                analysis.delong[name] = delong_test(
                    data.y_true, data.scores[reference_model], score
                )
    return analysis


def _file_stems(splits: list[str]) -> dict[str, str]:
    """Map split names, which come from a CSV, to distinct safe file-name stems."""
    stems: dict[str, str] = {}
    for index, split in enumerate(splits):
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", split) or "split"
        if stem in stems.values():
            stem = f"{stem}_{index}"
        stems[split] = stem
    return stems


def _figures_for_split(
    out_dir: Path, split: str, stem: str, data: PredictionSet, analysis: SplitAnalysis
) -> list[dict[str, str]]:
    roc_file = f"roc_{stem}.png"
    plot_roc_curves(
        data.y_true, data.scores, analysis.auc, out_dir / roc_file, title=f"ROC, {split}"
    )

    calibration_file = f"calibration_{stem}.png"
    curves = {name: calibration_curve(data.y_true, score) for name, score in data.scores.items()}
    plot_calibration(curves, out_dir / calibration_file, title=f"Calibration, {split}")

    dca_file = f"decision_curve_{stem}.png"
    decision = {name: decision_curve(data.y_true, score) for name, score in data.scores.items()}
    plot_decision_curves(decision, out_dir / dca_file, title=f"Decision curve, {split}")
    return [
        {"file": roc_file, "caption": f"ROC curves, {split} set", "css_class": ""},
        {"file": calibration_file, "caption": f"Calibration by deciles of predicted risk, {split} set", "css_class": ""},
        {"file": dca_file, "caption": f"Decision curve analysis, {split} set", "css_class": ""},
    ]


def _auc_rows(analyses: Mapping[str, SplitAnalysis]) -> list[list[str]]:
    return [
        [split, name, _format(estimate.auc), _format_ci(estimate), _format_ci(analysis.auc_delong[name])]
        for split, analysis in analyses.items()
        for name, estimate in analysis.auc.items()
    ]


def _delong_rows(analyses: Mapping[str, SplitAnalysis], reference_model: str) -> list[list[str]]:
    return [
        [
            split,
            f"{reference_model} vs {name}",
            _format(result.auc_a),
            _format(result.auc_b),
            _format(result.difference),
            _format(result.standard_error),
            _format(result.z, 2),
            _format_p(result.p_value),
        ]
        for split, analysis in analyses.items()
        for name, result in analysis.delong.items()
    ]


def _youden_rows(analyses: Mapping[str, SplitAnalysis]) -> list[list[str]]:
    rows = []
    for split, analysis in analyses.items():
        for name, metrics in analysis.youden.items():
            confusion = metrics.confusion
            rows.append(
                [split, name, _format(metrics.cutoff)]
                + [
                    _format(value)
                    for value in (
                        metrics.accuracy,
                        metrics.sensitivity,
                        metrics.specificity,
                        metrics.ppv,
                        metrics.npv,
                        metrics.f1,
                    )
                ]
                + [str(confusion.tp), str(confusion.fp), str(confusion.tn), str(confusion.fn)]
            )
    return rows


def _hl_rows(analyses: Mapping[str, SplitAnalysis]) -> list[list[str]]:
    rows = []
    for split, analysis in analyses.items():
        for name, result in analysis.hosmer_lemeshow.items():
            if isinstance(result, str):
                rows.append([split, name, "n/a", "n/a", "n/a", f"not computed: {result}"])
            else:
                rows.append(
                    [
                        split,
                        name,
                        str(result.n_groups),
                        _format(result.statistic, 2),
                        str(result.degrees_of_freedom),
                        _format_p(result.p_value),
                    ]
                )
    return rows


def _choose_cutoffs(sets: Mapping[str, PredictionSet], cutoff_split: str) -> tuple[str, dict[str, float]]:
    source = cutoff_split if cutoff_split in sets else next(iter(sets))
    if source != cutoff_split:
        logger.warning("split %r not found; choosing Youden cutoffs on %r", cutoff_split, source)
    data = sets[source]
    cutoffs = {name: youden_metrics(data.y_true, score).cutoff for name, score in data.scores.items()}
    return source, cutoffs


def _without_nan(value: object) -> object:
    """Replace non-finite floats by None, because strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _statistics_json(analyses: Mapping[str, SplitAnalysis], cutoff_source: str) -> dict:
    def encode(value: object) -> object:
        if isinstance(value, str):
            return {"error": value}
        data = asdict(value)
        data.pop("curve", None)
        if "method" in data:
            data["method"] = data["method"].value
        return _without_nan(data)

    return {
        "cutoff_split": cutoff_source,
        "splits": {
            split: {
                "n_cases": analysis.n_cases,
                "n_events": analysis.n_events,
                "auc_bootstrap": {k: encode(v) for k, v in analysis.auc.items()},
                "auc_delong": {k: encode(v) for k, v in analysis.auc_delong.items()},
                "delong": {k: encode(v) for k, v in analysis.delong.items()},
                "youden": {k: encode(v) for k, v in analysis.youden.items()},
                "hosmer_lemeshow": {k: encode(v) for k, v in analysis.hosmer_lemeshow.items()},
            }
            for split, analysis in analyses.items()
        },
    }


def write_report(
    out_dir: Path,
    sets: Mapping[str, PredictionSet | Mapping],
    nomogram_spec: NomogramSpec | None = None,
    title: str = "Nodal metastasis model validation",
    is_demo: bool = False,
    *,
    reference_model: str = "nomogram",
    cutoff_split: str = "train",
    n_bootstrap: int = 1000,
    seed: int | None = DEFAULT_BOOTSTRAP_SEED,
) -> Path:
    """Analyse every split and write ``index.html``, its figures and ``statistics.json``.

    Parameters
    ----------
    out_dir : Path
        Folder to write into; it is created if missing.
    sets : mapping of split name to PredictionSet
        For example ``{"train": ..., "test": ...}``. A plain mapping with
        ``y_true`` and ``scores`` (model name to probabilities) is accepted too.
    nomogram_spec : NomogramSpec, optional
        Adds the nomogram figure when given.
    title : str
        Report title.
    is_demo : bool
        Puts the demo-model notice at the top of the report.
    reference_model : str
        Model compared with every other one by DeLong's test.
    cutoff_split : str
        Split on which each model's Youden cutoff is chosen. If it is absent,
        the first split is used and the report names it.
    n_bootstrap, seed : int
        Bootstrap resamples and seed for the AUC confidence intervals.

    Returns
    -------
    Path
        Path of ``index.html``.
    """
    if not sets:
        raise ValueError("sets is empty; pass at least one split of predictions")
    checked = {str(split): _as_prediction_set(data) for split, data in sets.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    cutoff_source, cutoffs = _choose_cutoffs(checked, cutoff_split)
    analyses = {
        split: _analyse_split(data, cutoffs, reference_model, n_bootstrap, seed)
        for split, data in checked.items()
    }

    figures = []
    stems = _file_stems(list(checked))
    for split, data in checked.items():
        figures.extend(_figures_for_split(out_dir, split, stems[split], data, analyses[split]))
    if nomogram_spec is not None:
        plot_nomogram(nomogram_spec, out_dir / "nomogram.png", title=title)
        figures.append({"file": "nomogram.png", "caption": "Nomogram", "css_class": "wide"})

    (out_dir / "statistics.json").write_text(
        json.dumps(_statistics_json(analyses, cutoff_source), indent=2, allow_nan=False)
    )
    html = _render(
        title=title,
        is_demo=is_demo,
        reference_model=reference_model,
        analyses=analyses,
        cutoff_source=cutoff_source,
        n_bootstrap=n_bootstrap,
        figures=figures,
    )
    index = out_dir / "index.html"
    index.write_text(html, encoding="utf-8")
    logger.info("wrote validation report with %s splits to %s", len(checked), out_dir)
    return index


def _render(
    *,
    title: str,
    is_demo: bool,
    reference_model: str,
    analyses: Mapping[str, SplitAnalysis],
    cutoff_source: str,
    n_bootstrap: int,
    figures: list[dict[str, str]],
) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    case_rows = [
        [
            split,
            str(a.n_cases),
            str(a.n_events),
            str(a.n_cases - a.n_events),
            _format(a.n_events / a.n_cases if a.n_cases else float("nan")),
        ]
        for split, a in analyses.items()
    ]
    return environment.get_template("report.html").render(
        title=title,
        is_demo=is_demo,
        demo_notice=DEMO_NOTICE,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        reference_model=reference_model,
        case_rows=case_rows,
        auc_note=(
            f"Bootstrap CI: percentile method, {n_bootstrap} resamples stratified by outcome. "
            "DeLong CI: normal approximation with DeLong's variance, clipped to [0, 1]."
        ),
        auc_rows=_auc_rows(analyses),
        delong_rows=_delong_rows(analyses, reference_model),
        delong_missing=f"No comparison: the reference model {reference_model!r} is not in the predictions.",
        youden_note=(
            f"Each model's cutoff maximises Youden's J on the {cutoff_source} set and is applied "
            "unchanged to every split. A case is positive when its probability is at least the cutoff."
        ),
        youden_rows=_youden_rows(analyses),
        hl_note="Groups by deciles of predicted risk; chi-square with groups - 2 degrees of freedom.",
        hl_rows=_hl_rows(analyses),
        figures=figures,
    )


def _parse_label(text: str, line: int) -> int:
    if text.strip() not in ("0", "1"):
        raise ValueError(f"line {line}: label must be 0 or 1, got {text!r}; encode events as 1")
    return int(text)


def _parse_probability(text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(
            f"line {line}: {column} must be a number, got {text!r}; fill in every probability"
        ) from exc
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"line {line}: {column} must lie in [0, 1], got {value}")
    return value


def read_predictions_csv(path: Path) -> dict[str, PredictionSet]:
    """Read a predictions CSV into one :class:`PredictionSet` per split.

    The CSV has the columns ``case_id``, ``split``, ``label`` (0 or 1) and one
    ``prob_<model>`` column per model. Splits keep the order in which they
    first appear. Errors name the line number, never the case_id, because a
    case_id may identify a patient.
    """
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        columns = reader.fieldnames or []
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        models = [c for c in columns if c.startswith(PROBABILITY_PREFIX) and len(c) > len(PROBABILITY_PREFIX)]
        if missing or not models:
            raise ValueError(
                f"{path} needs the columns {list(REQUIRED_COLUMNS)} and at least one "
                f"'{PROBABILITY_PREFIX}<model>' column; missing {missing}, found {columns}"
            )

        labels: dict[str, list[int]] = {}
        scores: dict[str, dict[str, list[float]]] = {}
        seen: set[tuple[str, str]] = set()
        for line, row in enumerate(reader, start=2):
            split = row["split"].strip()
            key = (split, row["case_id"])
            if key in seen:
                raise ValueError(f"line {line}: repeats an earlier case_id of split {split!r}")
            seen.add(key)
            labels.setdefault(split, []).append(_parse_label(row["label"], line))
            split_scores = scores.setdefault(split, {c[len(PROBABILITY_PREFIX):]: [] for c in models})
            for column in models:
                split_scores[column[len(PROBABILITY_PREFIX):]].append(
                    _parse_probability(row[column], line, column)
                )

    if not labels:
        raise ValueError(f"{path} has a header but no cases")
    return {
        split: PredictionSet(
            y_true=np.array(labels[split]),
            scores={name: np.array(values) for name, values in scores[split].items()},
        )
        for split in labels
    }


def _read_model_json(path: Path) -> Mapping:
    with open(path, encoding="utf-8") as stream:
        try:
            return json.load(stream)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def load_nomogram_spec(path: Path) -> NomogramSpec:
    """Read a nomogram model JSON file and adapt it for the figure."""
    return spec_from_model(_read_model_json(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the report options to a command-line parser, for ``otscc-train report``."""
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="CSV with case_id, split, label and one prob_<model> column per model",
    )
    parser.add_argument(
        "--output-directory",
        "-od",
        type=Path,
        required=True,
        help="folder for index.html, the PNG figures and statistics.json",
    )
    parser.add_argument("--title", default="Nodal metastasis model validation", help="report title (default: %(default)s)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="mark the report as built from the synthetic-phantom demo model "
        "(implied by a nomogram model file with is_demo true)",
    )
    parser.add_argument(
        "--nomogram-model", type=Path, default=None, help="nomogram model JSON to draw the nomogram from"
    )
    parser.add_argument(
        "--reference-model",
        default="nomogram",
        help="model (the part after prob_) that DeLong's test compares with every other "
        "model (default: %(default)s)",
    )
    parser.add_argument(
        "--cutoff-split", default="train", help="split on which the Youden cutoffs are chosen (default: %(default)s)"
    )
    parser.add_argument(
        "--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC CIs (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_BOOTSTRAP_SEED, help="seed of the bootstrap resampling (default: %(default)s)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Build the report from parsed command-line arguments and return the exit status.

    The report carries the demo notice when ``--demo`` is given or the
    nomogram model file has ``"is_demo": true``.
    """
    sets = read_predictions_csv(args.predictions)
    spec = None
    is_demo = args.demo
    if args.nomogram_model is not None:
        document = _read_model_json(args.nomogram_model)
        spec = spec_from_model(document)
        is_demo = is_demo or document.get("is_demo") is True

    write_report(
        args.output_directory,
        sets,
        nomogram_spec=spec,
        title=args.title,
        is_demo=is_demo,
        reference_model=args.reference_model,
        cutoff_split=args.cutoff_split,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    return 0

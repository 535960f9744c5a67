"""The demo models: rebuilt from synthetic phantoms with one command.

:func:`run_demo` writes phantoms with fixed seeds, trains the multiparametric
segmentation package and one single-sequence package per sequence, scores
them on held-out phantoms, trains the demo nomogram on a phantom cohort
(through :mod:`training.nomogram_train`), and writes the report page. Every
model it writes is marked as a demo trained on synthetic phantoms and not for
clinical use.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inference.result import SequenceRole
from training.phantom import make_cohort, make_study
from training.seg_data import SegCase, load_case
from training.seg_eval import (
    CaseScore,
    Summary,
    evaluate_models,
    format_case_table,
    format_summary_table,
)
from training.seg_train import DEMO_INTENDED_USE, TrainConfig, TrainResult, train_segmentation

logger = logging.getLogger(__name__)

VENDORS = ("siemens", "ge", "philips")
SEGMENTATION_FOLDER = "segmentation"
NOMOGRAM_FILE = "nomogram.json"
DEMO_NOTICE = "DEMO MODEL trained on synthetic phantoms only. NOT FOR CLINICAL USE."


LIMITS_SECTION = (
    "## Limits",
    "",
    "- Phantom tumours enhance and brighten far more uniformly than real ones, and all",
    "  three series share one grid, so the node's registration is barely exercised.",
    "- The smallest phantom tumours (a few hundred mm3, a few dozen voxels at 128x128)",
    "  score lowest, and a Dice score on them moves by several points per voxel.",
    "- The single-sequence ranking reflects the contrasts chosen in",
    "  `training.phantom_anatomy.SIGNAL`, not the value of each sequence in patients.",
    "- The nomogram's labels come from a known formula, so its AUC only shows that the",
    "  workflow recovers a planted signal.",
)

# Static part of the report page: what the phantoms are and the cohort CSV format.
PHANTOM_SECTION = (
    "## Phantoms",
    "",
    "`training.phantom.make_study` writes one study as single-frame MR Image Storage",
    "files in `<folder>/ce_t1/`, `t2/` and `t1/` (`NNNN.dcm`). The three axial series share",
    "one frame of reference and follow Siemens, GE or Philips header styles. Options add",
    "GB18030 Chinese names and descriptions, JPEG-LS or RLE lossless compression and",
    "decoy series (localizer, coronal CE-T1, fat-saturated T1). The anatomy is a drawn",
    "head-and-neck slice stack (tongue, floor of mouth, mandible, fat, muscle, airway)",
    "with an irregular tumour at the lateral tongue, a smooth bias field and Rician noise.",
    "Every object is labelled `SYNTHETIC PHANTOM - NOT A PATIENT`, and the same seed",
    "gives the same study and UIDs.",
    "",
    "`training.phantom.make_cohort` writes `case_NNN/` folders with `mask.nii.gz` and a",
    "`cohort.csv` with these columns (paths relative to the CSV):",
    "",
    "| column | meaning |",
    "|---|---|",
    "| `case_id`, `folder`, `mask_path` | case name, study folder, tumour mask (NIfTI) |",
    "| `age`, `sex` | as in the DICOM header (years, `M`/`F`) |",
    "| `t_stage` | `T1`-`T4` from maximum diameter and depth of invasion (AJCC 8th edition "
    "size and DOI cut-offs for T1-T3; a DOI above 20 mm is used in place of T4 invasion) |",
    "| `doi_mm` | depth of invasion: deepest tumour voxel below the tongue surface |",
    "| `ln_metastasis` | 0/1 label drawn from a logistic model of log volume, DOI and "
    "heterogeneity plus noise |",
    "| `split` | `train` or `test` (30% test by default) |",
    "| `vendor`, `lesion_volume_mm3`, `max_diameter_mm`, `heterogeneity` | ground truth for checks |",
)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes, seeds and training settings of the demo build.

    The defaults were sized so that the whole build fits in about 30 minutes
    on a 2-core CPU; :meth:`quick` gives a seconds-long run that only checks
    the workflow.
    """

    train_cases: int = 24
    val_cases: int = 4
    test_cases: int = 10
    rows: int = 128
    slices: int = 24
    input_size: int = 128
    alpha: float = 0.35
    epochs: int = 25
    batch_size: int = 8
    negative_slices: int = 4
    learning_rate: float = 2e-3
    single_sequence_epochs: int = 10
    nomogram_cases: int = 90
    nomogram_rows: int = 128
    seed: int = 20260101

    @classmethod
    def quick(cls) -> DemoSettings:
        """Return tiny settings for tests: small phantoms, one epoch, a small cohort."""
        return cls(
            train_cases=2,
            val_cases=1,
            test_cases=1,
            rows=64,
            slices=12,
            input_size=64,
            epochs=1,
            batch_size=4,
            single_sequence_epochs=1,
            nomogram_cases=24,
            nomogram_rows=48,
        )


@dataclass
class DemoResult:
    """Measurements of one demo build, for the report page."""

    settings: DemoSettings
    segmentation: TrainResult
    scores: dict[tuple[str, str], list[CaseScore]]
    seconds: dict[str, float]
    nomogram_auc: dict[str, str]
    nomogram_note: str = ""


def make_segmentation_phantoms(settings: DemoSettings, root: Path) -> dict[str, list[SegCase]]:
    """Write and load the train, validation and test phantoms with fixed seeds."""
    counts = {"train": settings.train_cases, "val": settings.val_cases, "test": settings.test_cases}
    seed_base = {"train": 1000, "val": 2000, "test": 3000}
    cases: dict[str, list[SegCase]] = {}
    for split, count in counts.items():
        cases[split] = []
        for index in range(count):
            folder = root / split / f"{split}_{index:03d}"
            study = make_study(
                folder,
                seed=settings.seed + seed_base[split] + index,
                vendor=VENDORS[index % 3],
                rows=settings.rows,
                columns=settings.rows,
                slices=settings.slices,
            )
            study.write_mask(folder / "mask.nii.gz")
            cases[split].append(load_case(folder))
    return cases


def run_demo(
    settings: DemoSettings,
    models_dir: Path,
    docs_path: Path | None,
    *,
    work_dir: Path | None = None,
) -> str:
    """Build the demo models and the report page; return the page as Markdown."""
    started = time.perf_counter()
    models_dir = Path(models_dir)
    temporary = None
    if work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="otscc-demo-")
        work_dir = Path(temporary.name)
    work_dir = Path(work_dir)
    seconds: dict[str, float] = {}

    try:
        step = time.perf_counter()
        cases = make_segmentation_phantoms(settings, work_dir / "phantoms")
        seconds["phantoms"] = time.perf_counter() - step

        step = time.perf_counter()
        package = models_dir / SEGMENTATION_FOLDER
        segmentation = train_segmentation(cases["train"], cases["val"], _config(settings), package)
        seconds["segmentation model"] = time.perf_counter() - step

        step = time.perf_counter()
        packages = {"CE-T1 + T2 + T1": package}
        for role in SequenceRole:
            single = work_dir / f"single_{role.value}"
            config = dataclasses.replace(
                _config(settings),
                channels=(role,),
                epochs=settings.single_sequence_epochs,
                name=f"otscc-tongue-seg-{role.value}",
            )
            train_segmentation(cases["train"], cases["val"], config, single)
            packages[f"{role.label} only"] = single
        seconds["single-sequence models"] = time.perf_counter() - step

        step = time.perf_counter()
        scores = evaluate_models(packages, {"train": cases["train"], "test": cases["test"]})
        seconds["evaluation"] = time.perf_counter() - step

        step = time.perf_counter()
        nomogram_auc, nomogram_note = _train_demo_nomogram(
            settings, work_dir / "cohort", models_dir
        )
        seconds["nomogram"] = time.perf_counter() - step
    finally:
        if temporary is not None:
            temporary.cleanup()

    seconds["total"] = time.perf_counter() - started
    result = DemoResult(settings, segmentation, scores, seconds, nomogram_auc, nomogram_note)
    page = render_report(result)
    if docs_path is not None:
        Path(docs_path).parent.mkdir(parents=True, exist_ok=True)
        Path(docs_path).write_text(page, encoding="utf-8")
    return page


def _config(settings: DemoSettings) -> TrainConfig:
    return TrainConfig(
        input_size=settings.input_size,
        alpha=settings.alpha,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        negative_slices=settings.negative_slices,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        name="otscc-tongue-seg-demo",
        version="0.1.0",
        is_demo=True,
    )


def _train_demo_nomogram(
    settings: DemoSettings, cohort_dir: Path, models_dir: Path
) -> tuple[dict[str, str], str]:
    """Train the nomogram on a phantom cohort; return AUC texts per split and a note."""
    try:
        from training import nomogram_train  # noqa: PLC0415 (owned by the nomogram tools)
    except ImportError as exc:
        note = (
            f"The nomogram was not trained: training.nomogram_train could not be imported ({exc})."
        )
        logger.warning(note)
        return {}, note

    make_cohort(
        cohort_dir,
        settings.nomogram_cases,
        settings.seed,
        rows=settings.nomogram_rows,
        columns=settings.nomogram_rows,
        slices=settings.slices,
    )
    output = cohort_dir / "nomogram"
    parser = argparse.ArgumentParser()
    nomogram_train.add_arguments(parser)
    args = parser.parse_args(
        [
            str(cohort_dir / "cohort.csv"),
            "--output-directory",
            str(output),
            "--demo",
            "--training-data",
            f"{settings.nomogram_cases} synthetic phantoms (training.phantom.make_cohort)",
            "--seed",
            str(settings.seed % 10_000),
            "--no-progress",
            # A demo node has no clinical source, so T stage and depth of
            # invasion are imputed (and listed as missing in every result)
            # instead of leaving the demo without a probability.
            "--impute",
            "t_stage=mode",
            "--impute",
            "doi_mm=median",
        ]
    )
    status = nomogram_train.run_from_args(args)
    if status != 0:
        raise RuntimeError(f"nomogram training failed with exit status {status}")

    models_dir.mkdir(parents=True, exist_ok=True)
    write_demo_nomogram(output / nomogram_train.MODEL_FILE, models_dir / NOMOGRAM_FILE)
    return _nomogram_aucs(output / nomogram_train.PREDICTIONS_FILE), ""


def write_demo_nomogram(source: Path, target: Path) -> None:
    """Copy a trained nomogram file, with an intended use that states it is a synthetic demo."""
    from inference.nomogram import NomogramModel  # noqa: PLC0415

    model = NomogramModel.load(source)
    if not model.is_demo:
        raise ValueError(f"nomogram {source} is not marked is_demo; train it with --demo")
    model = dataclasses.replace(model, intended_use=DEMO_INTENDED_USE)
    model.save(target)


def _nomogram_aucs(predictions_csv: Path) -> dict[str, str]:
    import pandas as pd  # noqa: PLC0415

    from training.statistics import roc_auc_with_ci  # noqa: PLC0415

    predictions = pd.read_csv(predictions_csv)
    texts = {}
    for split, rows in predictions.groupby("split"):
        for column in ("prob_nomogram", "prob_radiomics", "prob_clinical"):
            valid = rows[["label", column]].dropna()
            if valid["label"].nunique() < 2:
                texts[f"{split} {column}"] = "n/a (one class only)"
                continue
            estimate = roc_auc_with_ci(valid["label"].to_numpy(), valid[column].to_numpy())
            texts[f"{split} {column}"] = (
                f"{estimate.auc:.3f} (95% CI {estimate.ci_low:.3f}-{estimate.ci_high:.3f}, "
                f"{estimate.n_positive} events / {estimate.n_negative} non-events)"
            )
    return texts


def render_report(result: DemoResult) -> str:
    """Return the Markdown report page of a demo build."""
    settings = result.settings
    test_scores = result.scores[("CE-T1 + T2 + T1", "test")]
    summary = Summary.of(test_scores)
    lines = [
        "# Demo model",
        "",
        f"> **{DEMO_NOTICE}** Every manifest and model file it writes sets `is_demo: true`.",
        "",
        "The demo models let the node run end to end without a clinical model. They",
        "were trained only on synthetic phantoms from `training.phantom`, whose tumours",
        "are far easier to see than real tongue cancer, so their scores say nothing",
        "about performance on patients.",
        "",
        "## Rebuild",
        "",
        "```",
        "otscc-train demo",
        "```",
        "",
        "writes `models/demo/segmentation/` (`model.keras` and `manifest.json`),",
        "`models/demo/nomogram.json` and this page. Seeds are fixed, but TensorFlow on",
        "CPU does not promise bit-identical weights between runs.",
        "",
        "## Segmentation",
        "",
        f"MobileNetV2 U-Net (`inference.unet.build_unet`, alpha {settings.alpha}, input "
        f"{settings.input_size}x{settings.input_size}, channels CE-T1, T2, T1), trained on "
        f"{settings.train_cases} phantoms ({settings.rows}x{settings.rows}x{settings.slices}, "
        f"Siemens, GE and Philips header styles in turn), {settings.epochs} epochs, batch "
        f"size {settings.batch_size}, every tumour slice plus {settings.negative_slices} "
        f"tumour-free slices per case. The epoch with the best DSC on {settings.val_cases} "
        f"validation phantoms was kept (epoch {result.segmentation.best_epoch}, validation DSC "
        f"{result.segmentation.best_val_dsc:.3f}).",
        "",
        f"Held-out test phantoms ({settings.test_cases}), segmented with "
        "`inference.segment.predict_mask` as the node does: "
        f"mean DSC **{summary.dsc_mean:.3f}** ± {summary.dsc_sd:.3f} (median "
        f"{summary.dsc_median:.3f}), mean IoU {summary.iou_mean:.3f}.",
        "",
        format_case_table(test_scores),
        "",
        "### Single-sequence models",
        "",
        f"The same network trained on one sequence at a time ({settings.single_sequence_epochs} "
        "epochs each, not shipped), against the multiparametric model:",
        "",
        format_summary_table(result.scores),
        "",
        "## Nomogram",
        "",
    ]
    lines.extend(_nomogram_lines(result))
    lines.extend(["", *LIMITS_SECTION, "", *PHANTOM_SECTION])
    lines.extend(
        [
            "",
            "## Training time",
            "",
            f"Measured by `otscc-train demo` on {platform.machine()} with "
            f"{_cpu_count()} CPU cores (shared with other work at the time):",
            "",
            "| step | seconds |",
            "|---|---|",
            *[f"| {name} | {value:.0f} |" for name, value in result.seconds.items()],
            "",
        ]
    )
    return "\n".join(lines)


def _nomogram_lines(result: DemoResult) -> list[str]:
    if result.nomogram_note:
        return [result.nomogram_note]
    settings = result.settings
    lines = [
        f"Trained by `training.nomogram_train` on a phantom cohort of {settings.nomogram_cases} "
        f"cases ({settings.nomogram_rows}x{settings.nomogram_rows}x{settings.slices}, ground-truth "
        "masks) whose metastasis label follows a logistic model of lesion volume, depth of "
        "invasion and heterogeneity plus noise (`training.phantom.make_cohort`). ROC AUC "
        "with stratified percentile-bootstrap 95% CI (`training.statistics.roc_auc_with_ci`):",
        "",
        "| split and model | AUC |",
        "|---|---|",
    ]
    lines.extend(f"| {name} | {text} |" for name, text in sorted(result.nomogram_auc.items()))
    return lines


def _cpu_count() -> int:
    import os  # noqa: PLC0415

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


"""Evaluation of segmentation model packages: DSC and IoU per case and in summary.

Cases are segmented by :func:`inference.segment.predict_mask`, the function the
node runs, so the scores include its resizing and post-processing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.model_package import load_segmentation_model
from inference.segment import predict_mask
from training.seg_data import SegCase

logger = logging.getLogger(__name__)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Return the Dice similarity coefficient of two binary masks.

    Two empty masks agree perfectly, so their DSC is 1.
    """
    predicted = np.asarray(prediction, dtype=bool)
    expected = np.asarray(truth, dtype=bool)
    if predicted.shape != expected.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} and {expected.shape}")
    total = int(predicted.sum()) + int(expected.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted, expected).sum()) / total


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Return the intersection over union (Jaccard index) of two binary masks.

    Two empty masks agree perfectly, so their IoU is 1.
    """
    predicted = np.asarray(prediction, dtype=bool)
    expected = np.asarray(truth, dtype=bool)
    if predicted.shape != expected.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} and {expected.shape}")
    union = int(np.logical_or(predicted, expected).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(predicted, expected).sum()) / union


@dataclass(frozen=True)
class CaseScore:
    """Scores of one model on one case."""

    case_id: str
    dsc: float
    iou: float
    true_volume_voxels: int
    predicted_volume_voxels: int


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation and median DSC and IoU over cases."""

    cases: int
    dsc_mean: float
    dsc_sd: float
    dsc_median: float
    iou_mean: float
    iou_sd: float

    @classmethod
    def of(cls, scores: Sequence[CaseScore]) -> Summary:
        """Summarise per-case scores."""
        if not scores:
            raise ValueError("no case scores to summarise; evaluate at least one case")
        dscs = np.array([s.dsc for s in scores])
        ious = np.array([s.iou for s in scores])
        return cls(
            cases=len(scores),
            dsc_mean=float(dscs.mean()),
            dsc_sd=float(dscs.std(ddof=1)) if len(scores) > 1 else 0.0,
            dsc_median=float(np.median(dscs)),
            iou_mean=float(ious.mean()),
            iou_sd=float(ious.std(ddof=1)) if len(scores) > 1 else 0.0,
        )


def evaluate_package(package: Path, cases: Sequence[SegCase]) -> list[CaseScore]:
    """Segment each case with the package as the node does and score it against its mask."""
    model = load_segmentation_model(Path(package))
    scores = []
    for case in cases:
        predicted = predict_mask(model, case.volumes)
        scores.append(
            CaseScore(
                case_id=case.case_id,
                dsc=dice(predicted, case.mask),
                iou=iou(predicted, case.mask),
                true_volume_voxels=int(case.mask.sum()),
                predicted_volume_voxels=int(predicted.sum()),
            )
        )
        logger.debug("Case %s: DSC %.3f", case.case_id, scores[-1].dsc)
    return scores


def evaluate_models(
    packages: Mapping[str, Path], splits: Mapping[str, Sequence[SegCase]]
) -> dict[tuple[str, str], list[CaseScore]]:
    """Score every package on every split; keys are ``(model name, split name)``."""
    return {
        (name, split): evaluate_package(package, cases)
        for name, package in packages.items()
        for split, cases in splits.items()
    }


def format_case_table(scores: Sequence[CaseScore]) -> str:
    """Return a Markdown table of per-case DSC and IoU with a summary row."""
    lines = ["| case | DSC | IoU | true voxels | predicted voxels |", "|---|---|---|---|---|"]
    for score in scores:
        lines.append(
            f"| {score.case_id} | {score.dsc:.3f} | {score.iou:.3f} | "
            f"{score.true_volume_voxels} | {score.predicted_volume_voxels} |"
        )
    summary = Summary.of(scores)
    lines.append(
        f"| **mean ± SD** | {summary.dsc_mean:.3f} ± {summary.dsc_sd:.3f} | "
        f"{summary.iou_mean:.3f} ± {summary.iou_sd:.3f} | | |"
    )
    return "\n".join(lines)


def format_summary_table(results: Mapping[tuple[str, str], Sequence[CaseScore]]) -> str:
    """Return a Markdown table with one row per model and split: cases, DSC and IoU."""
    lines = [
        "| model | split | cases | DSC mean ± SD | DSC median | IoU mean ± SD |",
        "|---|---|---|---|---|---|",
    ]
    for (model, split), scores in results.items():
        summary = Summary.of(scores)
        lines.append(
            f"| {model} | {split} | {summary.cases} | {summary.dsc_mean:.3f} ± {summary.dsc_sd:.3f} | "
            f"{summary.dsc_median:.3f} | {summary.iou_mean:.3f} ± {summary.iou_sd:.3f} |"
        )
    return "\n".join(lines)

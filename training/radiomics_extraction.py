"""Radiomics features of a cohort's cases, extracted as the node extracts them.

:func:`extract_cohort_features` runs
:func:`inference.radiomics.extract_tumour_features` on every case, in
parallel worker processes. This module imports no scikit-learn, so the
workers start quickly.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from inference.errors import InputError
from inference.radiomics import GEOMETRY_TOLERANCE, STATUS_OK, extract_tumour_features
from training.radiomics_cohort import CohortCase, load_image

logger = logging.getLogger(__name__)


@dataclass
class CaseFeatures:
    """Extraction outcome of one case: status ``"ok"``, ``"roi_too_small"`` or ``"failed"``."""

    case_id: str
    status: str
    features: dict[str, float] = field(default_factory=dict)
    message: str = ""


def extract_case_features(case: CohortCase, params_path: Path | None = None) -> CaseFeatures:
    """Extract one case's features with the node's extraction.

    Series that are not on the mask's grid are resampled onto it through
    patient coordinates (linear interpolation, identity transform), which
    assumes that all series share one frame of reference.
    """
    try:
        mask = sitk.ReadImage(str(case.mask))
        images = {role: _on_grid(load_image(path), mask) for role, path in case.images.items()}
        result = extract_tumour_features(images, mask, params_path=params_path)
    except InputError as exc:
        return CaseFeatures(case.case_id, "failed", message=f"{exc.code}: {exc}")
    return CaseFeatures(case.case_id, result.status, result.features, result.message)


def _on_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=GEOMETRY_TOLERANCE)
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=GEOMETRY_TOLERANCE)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=GEOMETRY_TOLERANCE)
    )
    if same:
        return image
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def extract_cohort_features(
    cases: Sequence[CohortCase],
    *,
    params_path: Path | None = None,
    workers: int = 2,
    show_progress: bool = True,
) -> tuple[pd.DataFrame, list[CaseFeatures]]:
    """Extract the features of every case, in ``workers`` processes.

    Worker processes are spawned, not forked: a forked child inherits the
    locks of threads that the parent has started (TensorFlow, BLAS) and can
    deadlock on them. The calling script therefore needs the usual
    ``if __name__ == "__main__":`` guard.

    Returns
    -------
    features : pandas.DataFrame
        One row per case with status ``"ok"``, indexed by case_id, in the
        order of ``cases``.
    outcomes : list of CaseFeatures
        The outcome of every case, including those left out of the table.
    """
    if workers < 1:
        raise ValueError(f"workers is {workers}; use 1 or more processes")
    progress = tqdm(total=len(cases), desc="Radiomics", unit="case", disable=not show_progress)
    outcomes: dict[str, CaseFeatures] = {}
    with progress:
        if workers == 1:
            for case in cases:
                outcomes[case.case_id] = extract_case_features(case, params_path)
                progress.update()
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = [pool.submit(extract_case_features, case, params_path) for case in cases]
                for future in concurrent.futures.as_completed(futures):
                    outcome = future.result()
                    outcomes[outcome.case_id] = outcome
                    progress.update()

    ordered = [outcomes[case.case_id] for case in cases]
    for outcome in ordered:
        if outcome.status != STATUS_OK:
            logger.warning(
                "Case left out of the feature table (%s): %s", outcome.status, outcome.message
            )
    rows = {o.case_id: o.features for o in ordered if o.status == STATUS_OK}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "case_id"
    return table, ordered

"""Small synthetic image cohorts written as NIfTI files, for the training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.result import SequenceRole

SHAPE_ZYX = (6, 40, 40)
SPACING = (1.0, 1.0, 4.0)


def write_image_cohort(root: Path, n_cases: int, seed: int = 0) -> Path:
    """Write ``n_cases`` cases and a cohort CSV; return the CSV's path.

    Each case has a spherical lesion whose radius and CE-T1 enhancement set
    the log-odds of the label, and ``ce_t1.nii.gz``, ``t2.nii.gz``,
    ``t1.nii.gz`` and ``mask.nii.gz`` in its folder. The CSV uses the
    phantom generator's columns.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE_ZYX)
    rows = []
    for index in range(n_cases):
        case_id = f"case_{index:03d}"
        folder = root / case_id
        folder.mkdir(parents=True)
        radius = rng.uniform(5.0, 11.0)
        enhancement = rng.uniform(50.0, 250.0)
        distance = np.sqrt((x - 20.0) ** 2 + (y - 20.0) ** 2 + ((z - 2.5) * SPACING[2]) ** 2)
        mask = (distance < radius).astype(np.uint8)
        _write(mask, folder / "mask.nii.gz")
        for offset, role in enumerate(SequenceRole):
            lift = enhancement if role is SequenceRole.CE_T1 else 80.0 * offset
            image = rng.normal(300.0, 30.0, SHAPE_ZYX) + mask * (
                lift + rng.normal(0.0, 25.0, SHAPE_ZYX)
            )
            _write(image.astype(np.float32), folder / f"{role.value}.nii.gz")

        logit = (radius - 8.0) / 1.2 + (enhancement - 150.0) / 40.0
        label = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
        rows.append(
            {
                "case_id": case_id,
                "folder": case_id,
                "mask_path": f"{case_id}/mask.nii.gz",
                "age": int(rng.integers(35, 85)),
                "sex": "MF"[index % 2],
                "t_stage": f"T{1 + index % 4}",
                "doi_mm": f"{rng.uniform(1.0, 18.0):.1f}",
                "ln_metastasis": label,
                "split": "test" if index % 4 == 0 else "train",
            }
        )
    path = root / "cohort.csv"
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin((-20.0, -20.0, 0.0))
    sitk.WriteImage(image, str(path))

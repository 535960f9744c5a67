"""Tests of the shipped demo models in models/demo/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.model_package import load_segmentation_model
from inference.result import SequenceRole
from training.phantom import make_study
from training.seg_data import load_case
from training.seg_eval import evaluate_package

DEMO_DIR = Path(__file__).resolve().parents[1] / "models" / "demo"
SEGMENTATION = DEMO_DIR / "segmentation"


def test_demo_manifest_says_synthetic_demo():
    manifest = json.loads((SEGMENTATION / "manifest.json").read_text(encoding="utf-8"))

    assert manifest["is_demo"] is True
    assert "NOT FOR CLINICAL USE" in manifest["intended_use"]
    assert "synthetic" in manifest["training_data"]
    assert manifest["channels"] == ["ce_t1", "t2", "t1"]
    assert manifest["input_size"] == [128, 128]


def test_demo_package_is_small():
    size = sum(p.stat().st_size for p in SEGMENTATION.iterdir())

    assert size < 6 * 1024 * 1024


def test_demo_nomogram_says_demo():
    path = DEMO_DIR / "nomogram.json"
    if not path.is_file():
        pytest.skip("models/demo/nomogram.json has not been built; run otscc-train demo")

    document = json.loads(path.read_text(encoding="utf-8"))

    assert document["is_demo"] is True
    assert "NOT FOR CLINICAL USE" in document["intended_use"]


@pytest.mark.slow
def test_demo_model_segments_unseen_phantoms(tmp_path):
    # Seeds far from the demo build's (20260101 plus offsets), so these phantoms were never seen.
    cases = []
    for seed, vendor in ((424242, "ge"), (434343, "philips")):
        folder = tmp_path / str(seed)
        study = make_study(folder, seed=seed, vendor=vendor)
        study.write_mask(folder / "mask.nii.gz")
        cases.append(load_case(folder))

    model = load_segmentation_model(SEGMENTATION)
    scores = evaluate_package(SEGMENTATION, cases)

    assert model.roles == (SequenceRole.CE_T1, SequenceRole.T2, SequenceRole.T1)
    for score in scores:
        assert score.dsc >= 0.7, f"{score.case_id}: DSC {score.dsc:.3f}"

"""Tests of segmentation training data, a tiny end-to-end training run and the scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.model_package import load_segmentation_model
from inference.result import SequenceRole
from training.cli import main as cli_main
from training.phantom import make_study
from training.seg_data import iterate_batches, load_case, stack_slices, training_target
from training.seg_eval import Summary, dice, evaluate_package, format_case_table, format_summary_table, iou
from training.seg_train import TrainConfig, train_segmentation

TINY = {"rows": 32, "columns": 32, "slices": 8}


@pytest.fixture(scope="module")
def tiny_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_cases")
    cases = []
    for index, vendor in enumerate(("siemens", "ge")):
        folder = root / f"case_{index}"
        study = make_study(folder, seed=40 + index, vendor=vendor, **TINY)
        study.write_mask(folder / ("mask.nii.gz" if index == 0 else "mask.nrrd"))
        cases.append(load_case(folder))
    return cases


def test_dice_and_iou_hand_cases():
    truth = np.zeros((1, 4, 4), dtype=np.uint8)
    truth[0, :2, :2] = 1
    half = np.zeros_like(truth)
    half[0, :2, :1] = 1
    disjoint = np.zeros_like(truth)
    disjoint[0, 3, 3] = 1
    empty = np.zeros_like(truth)

    assert dice(truth, truth) == 1.0
    assert iou(truth, truth) == 1.0
    assert dice(half, truth) == pytest.approx(2 * 2 / (2 + 4))
    assert iou(half, truth) == pytest.approx(2 / 4)
    assert dice(disjoint, truth) == 0.0
    assert iou(disjoint, truth) == 0.0
    assert dice(empty, empty) == 1.0
    assert iou(empty, truth) == 0.0


def test_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mask shapes differ"):
        dice(np.zeros((2, 2)), np.zeros((3, 3)))


def test_trimap_border_lies_outside_tumour():
    mask = np.zeros((1, 9, 9), dtype=np.uint8)
    mask[0, 3:6, 3:6] = 1
    ids = {"background": 0, "tumour": 1, "border": 2}

    target = training_target(mask, 1, ids)

    assert np.array_equal(target == 1, mask.astype(bool))
    assert (target == 2).sum() > 0
    assert not np.any((target == 2) & mask.astype(bool))
    assert target[0, 0, 0] == 0


def test_case_loads_on_ce_t1_grid(tiny_cases):
    case = tiny_cases[1]

    assert set(case.volumes) == set(SequenceRole)
    assert case.mask.shape == sitk.GetArrayViewFromImage(case.reference).shape
    assert case.mask.any()
    for image in case.volumes.values():
        assert image.GetSize() == case.reference.GetSize()


def test_slices_and_flipped_batches(tiny_cases):
    config = TrainConfig(input_size=64, epochs=1)
    arrays = stack_slices(tiny_cases, config.manifest(), border_px=1, negative_slices=2)

    assert arrays.inputs.shape[1:] == (64, 64, 3)
    assert arrays.inputs.dtype == np.float32
    assert arrays.targets.shape == arrays.inputs.shape[:3]
    assert set(np.unique(arrays.targets)) == {0, 1, 2}

    batches = list(iterate_batches(arrays, 3, np.random.default_rng(0)))
    assert sum(len(b[0]) for b in batches) == len(arrays)
    assert sum(int((b[1] == 1).sum()) for b in batches) == int((arrays.targets == 1).sum())


@pytest.mark.slow
def test_tiny_unet_trains_to_loadable_package(tiny_cases, tmp_path, capsys):
    config = TrainConfig(input_size=32, epochs=2, batch_size=4, negative_slices=2, seed=1, run_eagerly=True)
    single = TrainConfig(
        channels=("t2",), input_size=32, epochs=1, batch_size=4, negative_slices=1, run_eagerly=True
    )

    result = train_segmentation(tiny_cases[:1], tiny_cases[1:], config, tmp_path / "all", progress=False)
    single_result = train_segmentation(tiny_cases[:1], tiny_cases[1:], single, tmp_path / "t2", progress=False)

    assert len(result.history) == 2
    assert 1 <= result.best_epoch <= 2
    assert all(np.isfinite(r.loss) for r in result.history)
    assert all(0.0 <= r.val_dsc <= 1.0 for r in result.history)

    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert manifest["is_demo"] is True
    assert "NOT FOR CLINICAL USE" in manifest["intended_use"]
    assert manifest["channels"] == ["ce_t1", "t2", "t1"]
    assert manifest["metrics"]["best_epoch"] == result.best_epoch

    loaded = load_segmentation_model(tmp_path / "t2")
    assert loaded.roles == (SequenceRole.T2,)
    assert single_result.package == tmp_path / "t2"

    scores = evaluate_package(tmp_path / "all", tiny_cases)
    assert [s.case_id for s in scores] == ["case_0", "case_1"]
    table = format_summary_table({("all", "train"): scores, ("t2", "train"): evaluate_package(tmp_path / "t2", tiny_cases)})
    assert "| all | train | 2 |" in table
    assert "| t2 | train | 2 |" in table
    assert "mean ± SD" in format_case_table(scores)


def test_summary_of_scores():
    from training.seg_eval import CaseScore

    scores = [CaseScore("a", 0.8, 0.67, 10, 9), CaseScore("b", 0.6, 0.43, 10, 12)]
    summary = Summary.of(scores)

    assert summary.cases == 2
    assert summary.dsc_mean == pytest.approx(0.7)
    assert summary.dsc_median == pytest.approx(0.7)
    assert summary.dsc_sd == pytest.approx(np.std([0.8, 0.6], ddof=1))


def test_cli_writes_phantom_cases(tmp_path, capsys):
    status = cli_main(["phantoms", "--output-directory", str(tmp_path), "--count", "2",
                       "--rows", "32", "--columns", "32", "--slices", "4"])

    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_000", "case_001"]
    assert (tmp_path / "case_001" / "mask.nii.gz").is_file()
    assert len(list((tmp_path / "case_000" / "ce_t1").glob("*.dcm"))) == 4
    assert "case_001" in capsys.readouterr().out


def test_dicom_seg_mask_loads_like_nifti(tmp_path):
    import highdicom
    import pydicom

    folder = tmp_path / "case"
    study = make_study(folder, seed=77, **TINY)
    sources = [pydicom.dcmread(p) for p in study.files[SequenceRole.CE_T1]]
    segment = highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumour",
        segmented_property_category=highdicom.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=highdicom.sr.CodedConcept("86049000", "SCT", "Neoplasm, Primary"),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=study.mask.astype(bool),
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=highdicom.UID(),
        series_number=99,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="otscc-node tests",
        manufacturer_model_name="phantom",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(folder / "seg.dcm")

    case = load_case(folder)

    assert np.array_equal(case.mask, study.mask)


def test_demo_report_marks_synthetic_demo():
    from training.demo import DemoResult, DemoSettings, render_report
    from training.seg_eval import CaseScore
    from training.seg_train import TrainResult

    scores = [CaseScore("test_000", 0.9, 0.82, 100, 98), CaseScore("test_001", 0.8, 0.67, 50, 60)]
    result = DemoResult(
        settings=DemoSettings(),
        segmentation=TrainResult(package=Path("models/demo/segmentation"), best_epoch=7, best_val_dsc=0.88),
        scores={("CE-T1 + T2 + T1", "test"): scores, ("T2 only", "test"): scores[:1]},
        seconds={"segmentation model": 300.0, "total": 900.0},
        nomogram_auc={"test prob_nomogram": "0.800 (95% CI 0.700-0.900)"},
    )

    page = render_report(result)

    assert "NOT FOR CLINICAL USE" in page
    assert "synthetic phantoms" in page
    assert "otscc-train demo" in page
    assert "mean DSC **0.850**" in page
    assert "| test_001 | 0.800 | 0.670 | 50 | 60 |" in page
    assert "| T2 only | test | 1 |" in page
    assert "| test prob_nomogram | 0.800 (95% CI 0.700-0.900) |" in page
    assert "| total | 900 |" in page


def test_cli_finds_requested_command():
    from training.cli import _requested_command, build_parser

    assert _requested_command(["--log-level", "debug", "nomogram", "x.csv"]) == "nomogram"
    assert _requested_command(["eval-seg", "--data", "d"]) == "eval-seg"
    assert _requested_command(["--help"]) is None
    args = build_parser("eval-seg").parse_args(["eval-seg", "--data", "cohort.csv", "--package", "all=pkg"])
    assert args.package == ["all=pkg"]
    assert args.summary_only is False


@pytest.mark.slow
def test_cli_trains_and_scores_cohort(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    package = tmp_path / "package"
    options = ["--rows", "32", "--columns", "32", "--slices", "6"]

    assert cli_main(["phantoms", "--cohort", "--output-directory", str(cohort), "--count", "3", *options]) == 0
    assert cli_main([
        "train-seg", "--data", str(cohort / "cohort.csv"), "--output", str(package),
        "--input-size", "32", "--epochs", "1", "--batch-size", "4", "--run-eagerly",
    ]) == 0
    assert cli_main(["eval-seg", "--data", str(cohort / "cohort.csv"), "--package", f"all={package}"]) == 0

    output = capsys.readouterr().out
    assert (package / "manifest.json").is_file()
    assert "| all | train | 2 |" in output
    assert "| all | test | 1 |" in output
    assert "all on test" in output

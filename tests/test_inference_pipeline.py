"""Tests for the whole inference pipeline on synthetic phantom studies."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.errors import InputError, ModelPackageError
from inference.pipeline import PipelineOptions, run_pipeline
from inference.result import SequenceRole
from tests.inference_helpers import threshold_model, write_enhanced_mr, write_mr_series
from tests.nomogram_helpers import hand_model_document
from training.phantom import make_study

# Labels only voxels 2 standard deviations above the CE-T1 mean, a few
# hundred voxels of the phantom, so radiomics stays fast. The mask need not
# match the lesion, because these tests check how the stages fit together.
BRIGHT_ONLY = 2.0


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return make_study(tmp_path_factory.mktemp("study"), seed=3, rows=64, columns=64, slices=12)


@pytest.fixture(scope="module")
def nomogram_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nomogram") / "nomogram.json"
    path.write_text(json.dumps(hand_model_document()))
    return path


def test_pipeline_runs_every_stage(study, nomogram_path: Path) -> None:
    model = threshold_model(("ce_t1", "t2", "t1"), background_bias=BRIGHT_ONLY)
    result = run_pipeline(
        study.files,
        segmentation_model=model,
        nomogram_model=nomogram_path,
        options=PipelineOptions(min_component_mm3=1.0),
    )

    assert set(result.stage_seconds) == {"load", "align", "segment", "radiomics", "nomogram"}
    assert result.study_instance_uid == study.study_instance_uid
    assert result.series[SequenceRole.T2].series_instance_uid == study.series_instance_uids[SequenceRole.T2]
    assert result.segmentation.source_sop_instance_uids == tuple(study.sop_instance_uids[SequenceRole.CE_T1])
    assert result.segmentation.source_frame_numbers == (None,) * len(study.sop_instance_uids[SequenceRole.CE_T1])
    assert result.segmentation.mask.shape == study.mask.shape
    np.testing.assert_allclose(result.segmentation.geometry.origin, study.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(result.segmentation.geometry.spacing, study.geometry.spacing, atol=1e-4)
    assert not result.segmentation.is_empty
    assert result.segmentation.volume_mm3 > 0
    assert result.segmentation.max_diameter_mm > 0

    assert result.radiomics.status == "ok"
    assert "ce_t1_original_firstorder_Mean" in result.radiomics.features
    assert "t2_original_glcm_Contrast" in result.radiomics.features
    assert result.nomogram is not None
    assert result.nomogram.probability is not None
    assert 0.0 <= result.nomogram.probability <= 1.0
    assert result.nomogram.radiomics_score is not None
    assert result.nomogram.missing_inputs == []
    assert [m.kind for m in result.models] == ["segmentation", "nomogram"]
    assert result.is_demo
    assert {r.role for r in result.alignment} == {SequenceRole.T2, SequenceRole.T1}
    assert all(r.method == "same_grid" for r in result.alignment)


def test_pipeline_caller_clinical_overrides_header(study, nomogram_path: Path) -> None:
    header_sex = pydicom.dcmread(study.files[SequenceRole.CE_T1][0]).PatientSex
    other_sex = "M" if header_sex == "F" else "F"
    model = threshold_model(("ce_t1", "t2", "t1"), background_bias=BRIGHT_ONLY)
    options = PipelineOptions(min_component_mm3=1.0)

    from_header = run_pipeline(study.files, segmentation_model=model, nomogram_model=nomogram_path, options=options)
    overridden = run_pipeline(
        study.files,
        segmentation_model=model,
        nomogram_model=nomogram_path,
        clinical={"sex": other_sex, "age": None},
        options=options,
    )
    assert from_header.nomogram.points["sex"] != overridden.nomogram.points["sex"]
    assert from_header.nomogram.points["age"] == overridden.nomogram.points["age"]


def test_pipeline_empty_mask_skips_scores(study, nomogram_path: Path) -> None:
    model = threshold_model(("ce_t1", "t2", "t1"), background_bias=1000.0)
    result = run_pipeline(study.files, segmentation_model=model, nomogram_model=nomogram_path)
    assert result.segmentation.is_empty
    assert result.segmentation.volume_mm3 == 0.0
    assert result.radiomics.status == "no_tumour"
    assert result.nomogram is None
    assert any("No tumour was found" in note for note in result.notes)


def test_pipeline_single_sequence_model_uses_its_role(study) -> None:
    model = threshold_model(("t2",))
    files = {SequenceRole.T2: study.files[SequenceRole.T2]}
    result = run_pipeline(files, segmentation_model=model, options=PipelineOptions(min_component_mm3=1.0))
    assert set(result.series) == {SequenceRole.T2}
    assert result.segmentation.source_sop_instance_uids == tuple(study.sop_instance_uids[SequenceRole.T2])
    assert result.radiomics.status == "not_computed"
    assert result.nomogram is None


def test_pipeline_missing_series_rejected(study) -> None:
    model = threshold_model(("ce_t1", "t2", "t1"), background_bias=BRIGHT_ONLY)
    files = {role: study.files[role] for role in (SequenceRole.CE_T1, SequenceRole.T2)}
    with pytest.raises(InputError, match=r"lacks series \['t1'\]") as info:
        run_pipeline(files, segmentation_model=model)
    assert info.value.code == "missing_series"


def test_pipeline_invalid_nomogram_rejected(study, tmp_path: Path) -> None:
    document = hand_model_document()
    del document["cutoff"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ModelPackageError, match="nomogram model file .* is invalid"):
        run_pipeline(study.files, segmentation_model=threshold_model(("ce_t1",)), nomogram_model=path)


def test_pipeline_options_are_frozen() -> None:
    options = PipelineOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.register = True


def test_pipeline_sagittal_series_gets_note(tmp_path: Path) -> None:
    pixels = np.zeros((10, 32, 32), np.uint16)
    pixels[3:7, 10:20, 12:22] = 3000
    paths = write_mr_series(tmp_path, pixels, spacing=(1.0, 1.0, 1.0), row=(0.0, 1.0, 0.0), column=(0.0, 0.0, -1.0))
    result = run_pipeline(
        {SequenceRole.CE_T1: paths},
        segmentation_model=threshold_model(("ce_t1",)),
        options=PipelineOptions(min_component_mm3=1.0),
    )
    assert any("series is not axial (orientation PIR)" in note for note in result.notes)
    assert result.segmentation.mask.shape == (10, 32, 32)
    assert result.segmentation.mask[5, 15, 17] == 1
    assert result.segmentation.mask[0, 0, 0] == 0


def test_pipeline_enhanced_mr_keeps_frame_numbers(tmp_path: Path) -> None:
    pixels = np.zeros((6, 32, 32), np.uint16)
    pixels[2:5, 10:20, 12:22] = 3000
    path = write_enhanced_mr(tmp_path / "enhanced.dcm", pixels, frame_order=[5, 4, 3, 2, 1, 0])
    result = run_pipeline(
        {SequenceRole.CE_T1: [path]},
        segmentation_model=threshold_model(("ce_t1",)),
        options=PipelineOptions(min_component_mm3=1.0),
    )
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert result.segmentation.source_sop_instance_uids == (uid,) * 6
    assert result.segmentation.source_frame_numbers == (6, 5, 4, 3, 2, 1)
    assert result.segmentation.mask[3].any()

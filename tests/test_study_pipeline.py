"""The node's pipeline step turns a phantom study into validated SEG and SR objects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest

from config.settings import DestinationSettings, load_settings
from db.states import OutputKind
from dicom_node.pipeline_step import JobContext, RoleSeries
from dicom_node.study_pipeline import StudyPipeline
from inference.model_package import write_package
from inference.result import SequenceRole
from tests.inference_helpers import threshold_model
from training.phantom import make_study

INPUT_SIZE = 64


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory):
    return make_study(tmp_path_factory.mktemp("phantom"), seed=11, rows=64, columns=64, slices=12)


@pytest.fixture(scope="module")
def threshold_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A 1 x 1 convolution that labels tumour where the z-scored CE-T1 is
    # bright: enough to find the enhancing phantom lesion without training.
    loaded = threshold_model(["ce_t1", "t2", "t1"], input_size=INPUT_SIZE, background_bias=2.0)
    manifest = dataclasses.replace(loaded.manifest, name="threshold-test", version="1.0.0")
    return write_package(loaded.model, tmp_path_factory.mktemp("model") / "seg", manifest)


def _settings(tmp_path: Path, model: Path, *, destinations: list[DestinationSettings]):
    settings = load_settings(
        environ={},
        overrides={
            "storage": {"data_dir": str(tmp_path)},
            "inference": {"segmentation_model": str(model), "nomogram_model": None},
        },
    )
    settings.destinations = destinations
    return settings


def _context(phantom, settings, roles) -> JobContext:
    series = {
        role.value: RoleSeries(role.value, phantom.series_instance_uids[role], tuple(phantom.files[role]))
        for role in roles
    }
    return JobContext(
        job_id=1,
        run_number=1,
        study_instance_uid=phantom.study_instance_uid,
        series=series,
        settings=settings,
    )


PACS = DestinationSettings(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)


def test_complete_study_gives_seg_and_sr(tmp_path: Path, phantom, threshold_package: Path) -> None:
    settings = _settings(tmp_path, threshold_package, destinations=[PACS])
    step = StudyPipeline(settings)

    outcome = step.run(_context(phantom, settings, list(SequenceRole)))

    kinds = [output.kind for output in outcome.outputs]
    assert outcome.input_error is None
    assert kinds == [OutputKind.SEG, OutputKind.SR]
    seg = outcome.outputs[0].dataset
    assert seg.StudyInstanceUID == phantom.study_instance_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == phantom.series_instance_uids[SequenceRole.CE_T1]
    assert outcome.result_summary["tumour_found"] is True
    assert outcome.result_summary["outputs"]["seg"] == seg.SOPInstanceUID
    assert set(outcome.stage_seconds) >= {"load", "align", "segment", "radiomics", "write"}


def test_rerun_gives_same_uids(tmp_path: Path, phantom, threshold_package: Path) -> None:
    settings = _settings(tmp_path, threshold_package, destinations=[PACS])
    step = StudyPipeline(settings)

    first = step.run(_context(phantom, settings, list(SequenceRole)))
    second = step.run(_context(phantom, settings, list(SequenceRole)))

    assert [o.dataset.SOPInstanceUID for o in first.outputs] == [o.dataset.SOPInstanceUID for o in second.outputs]


def test_missing_t2_sends_failure_report(tmp_path: Path, phantom, threshold_package: Path) -> None:
    settings = _settings(tmp_path, threshold_package, destinations=[PACS])
    step = StudyPipeline(settings)

    outcome = step.run(_context(phantom, settings, [SequenceRole.CE_T1, SequenceRole.T1]))

    assert outcome.input_error is not None
    assert outcome.input_error.code == "missing_role"
    assert "T2" in str(outcome.input_error)
    assert [output.kind for output in outcome.outputs] == [OutputKind.FAILURE_SR]
    report = outcome.outputs[0].dataset
    assert report.StudyInstanceUID == phantom.study_instance_uid
    assert "T2" in str(pydicom.Dataset(report).to_json_dict())


def test_failure_report_skipped_without_destinations(tmp_path: Path, phantom, threshold_package: Path) -> None:
    settings = _settings(tmp_path, threshold_package, destinations=[])
    step = StudyPipeline(settings)

    outcome = step.run(_context(phantom, settings, [SequenceRole.CE_T1]))

    assert outcome.input_error is not None
    assert outcome.outputs == []

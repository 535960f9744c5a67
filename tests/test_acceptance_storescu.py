"""Acceptance: DCMTK ``storescu`` sends studies to ``otscc-node serve``, DCMTK ``storescp`` receives the results.

One node and one ``storescp`` serve the whole module. ``storescp`` writes
every object it receives to its own file (``+uf``), so a result sent twice
shows up as two files.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from dicom_node.runner import FAILURE_REPORT_CHECKED
from inference.result import SequenceRole
from tests.acceptance_helpers import (
    NODE_AE,
    NONE_SUCCEEDED_CODE,
    PROBABILITY_CODE,
    RESULTS_AE,
    Destination,
    NodeDatabase,
    NodeProcess,
    acceptance_models,
    jobs_from_cli,
    read_received,
    received_results,
    results_by_study,
    sr_code_values,
    storescp_args,
    wait_for_job_state,
    write_node_config,
)
from tests.conftest import free_port
from tests.peers import parse_store_statuses, start_storescp, storescu, storescu_command, wait_until
from training.phantom import make_study

pytestmark = pytest.mark.peers

PARALLEL_STUDIES = 10
JOB_TIMEOUT_S = 120.0
PARALLEL_TIMEOUT_S = 240.0
# A study that lacks a role fails this long after its last instance.
FORCE_COMPLETE_S = 3.0
TERMINAL_STATES = ("done", "failed", "failed_input", "delivery_failed")
PHILIPS_SERIES = Path("mr_dicom_series") / "philips_3T_T1_mprage_sag3d"
ADC_SERIES = Path("mr_dicom_series") / "dcmqi_qin_prostate_adc" / "701-ADCb500"


@dataclass
class NodeAndArchive:
    node: NodeProcess
    database: NodeDatabase
    archive: Path
    folder: Path


@pytest.fixture(scope="module")
def node_and_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAndArchive]:
    folder = tmp_path_factory.mktemp("acceptance_storescu")
    models = acceptance_models(folder / "models")
    node_port, archive_port = free_port(), free_port()
    archive = folder / "archive"
    config = write_node_config(
        folder,
        port=node_port,
        models=models,
        destinations=[Destination("archive", RESULTS_AE, archive_port)],
        force_complete_s=FORCE_COMPLETE_S,
    )

    with start_storescp(archive, archive_port, ae_title=RESULTS_AE, extra_args=storescp_args()):
        node = NodeProcess(config, node_port, folder / "node.log")
        node.start()
        database = NodeDatabase(folder / "data" / "otscc-node.db")
        try:
            yield NodeAndArchive(node, database, archive, folder)
        finally:
            database.close()
            node.stop()


def _study_files(phantom) -> list[Path]:
    return [path for role in SequenceRole for path in phantom.files[role]]


def _wait_for_results(archive: Path, study_uid: str) -> None:
    def arrived() -> bool:
        results = received_results(archive, study_uid)
        return bool(results.seg) and bool(results.sr)

    wait_until(arrived, 30, f"SEG and SR of study {study_uid} at storescp", 0.2)


def test_jpegls_chinese_names_kept_in_results(node_and_archive):
    phantom = make_study(
        node_and_archive.folder / "chinese", seed=3301, chinese=True, rows=64, columns=64, slices=12, transfer_syntax=JPEGLSLossless
    )
    files = _study_files(phantom)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)

    sent = storescu(files, node_and_archive.node.port, called_ae=NODE_AE, extra_args=["-xt"])
    job = wait_for_job_state(node_and_archive.database, phantom.study_instance_uid, ["done"], JOB_TIMEOUT_S, node_and_archive.node)
    _wait_for_results(node_and_archive.archive, phantom.study_instance_uid)
    results = received_results(node_and_archive.archive, phantom.study_instance_uid)

    assert str(source.file_meta.TransferSyntaxUID) == JPEGLSLossless
    assert "GB18030" in source.SpecificCharacterSet
    assert len(sent.succeeded_files) == len(files), sent.output
    assert node_and_archive.database.transfer_syntaxes(phantom.study_instance_uid) == {JPEGLSLossless}
    assert job.reason_code is None
    assert len(results.seg) == 1
    assert len(results.sr) == 1
    for result in (*results.seg, *results.sr):
        assert result.SpecificCharacterSet == source.SpecificCharacterSet
        assert str(result.PatientName) == str(source.PatientName)
        assert result.PatientName.original_string == source.PatientName.original_string


def test_empty_procedure_code_sequence_gets_results(node_and_archive):
    # The Philips T1 MPRAGE series in the public test data carries a
    # ProcedureCodeSequence with no items. dciodvfy rejects a Type 3 sequence
    # without items, so the node must not copy it into its own objects.
    phantom = make_study(node_and_archive.folder / "procedure_code", seed=3302, rows=64, columns=64, slices=12)
    files = _study_files(phantom)
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.ProcedureCodeSequence = pydicom.Sequence([])
        dataset.save_as(path)

    sent = storescu(files, node_and_archive.node.port, called_ae=NODE_AE)
    job = wait_for_job_state(node_and_archive.database, phantom.study_instance_uid, TERMINAL_STATES, JOB_TIMEOUT_S, node_and_archive.node)

    assert len(sent.succeeded_files) == len(files), sent.output
    assert job.error_message is None, job.error_message
    assert job.state == "done"


def _gunzip_series(source: Path, target: Path) -> list[Path]:
    target.mkdir(parents=True)
    files = []
    for packed in sorted(source.glob("*.dcm.gz")):
        unpacked = target / packed.name.removesuffix(".gz")
        with gzip.open(packed, "rb") as reader, unpacked.open("wb") as writer:
            shutil.copyfileobj(reader, writer)
        files.append(unpacked)
    return files


@pytest.mark.parametrize(
    ("series", "why_not_matched"),
    [
        pytest.param(PHILIPS_SERIES, "sagittal slices", id="philips-t1-mprage"),
        pytest.param(ADC_SERIES, "contains DERIVED", id="prostate-adc"),
    ],
)
def test_real_series_fail_naming_missing_roles(node_and_archive, test_data_dir, tmp_path, series, why_not_matched):
    source = test_data_dir / series
    if not source.is_dir():
        pytest.skip(f"{series} is not in the public test data at {test_data_dir}")
    files = _gunzip_series(source, tmp_path / "series") if any(source.glob("*.dcm.gz")) else sorted(source.glob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    sent = storescu(files, node_and_archive.node.port, called_ae=NODE_AE)
    job = wait_for_job_state(node_and_archive.database, study_uid, ["failed_input"], 60 + FORCE_COMPLETE_S, node_and_archive.node)
    # The runner makes the failure SR of an assembly failure after the job
    # failed, and marks the job when it has decided whether to send one.
    wait_until(
        lambda: FAILURE_REPORT_CHECKED in node_and_archive.database.jobs(study_uid)[-1].result_summary,
        30,
        f"the failure report of job {job.id} to be made or skipped",
        0.2,
    )
    wait_until(
        lambda: all(state in ("delivered", "failed", "cancelled") for state, _ in node_and_archive.database.deliveries(job.id)),
        30,
        f"deliveries of job {job.id} to settle",
        0.2,
    )
    deliveries = node_and_archive.database.deliveries(job.id)
    results = received_results(node_and_archive.archive, study_uid)

    assert len(sent.succeeded_files) == len(files), sent.output
    assert node_and_archive.database.instance_count(study_uid) == len(files)
    assert job.reason_code == "missing_role"
    assert job.error_message.startswith("Required series CE-T1, T2, T1 not received")
    assert why_not_matched in job.error_message
    assert node_and_archive.node.process.poll() is None
    assert all(set(kinds) <= {"failure_sr"} for _, kinds in deliveries)
    assert [state for state, _ in deliveries] in ([], ["delivered"])
    assert results.seg == []
    assert results.other == []
    assert len(results.sr) <= 1
    for report in results.sr:
        assert PROBABILITY_CODE not in sr_code_values(report)
        assert NONE_SUCCEEDED_CODE in sr_code_values(report)


def test_parallel_senders_each_study_once(node_and_archive):
    folder = node_and_archive.folder / "parallel"
    phantoms = [make_study(folder / str(index), seed=5100 + index, rows=64, columns=64, slices=12) for index in range(PARALLEL_STUDIES)]
    senders = [
        subprocess.Popen(
            storescu_command(_study_files(phantom), node_and_archive.node.port, called_ae=NODE_AE, calling_ae=f"MODALITY{index}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index, phantom in enumerate(phantoms)
    ]
    outputs = [sender.communicate(timeout=120)[0] for sender in senders]

    for sender, output, phantom in zip(senders, outputs, phantoms):
        statuses = parse_store_statuses(output)
        assert sender.returncode == 0, output
        assert [status for _, status in statuses] == ["Success"] * len(_study_files(phantom)), output
    for phantom in phantoms:
        wait_for_job_state(node_and_archive.database, phantom.study_instance_uid, ["done"], PARALLEL_TIMEOUT_S, node_and_archive.node)
    for phantom in phantoms:
        _wait_for_results(node_and_archive.archive, phantom.study_instance_uid)
    grouped = results_by_study(read_received(node_and_archive.archive))
    listed = {job["study_instance_uid"]: job for job in jobs_from_cli(node_and_archive.node.config, "--limit", "100")}

    for phantom in phantoms:
        study_uid = phantom.study_instance_uid
        assert node_and_archive.database.instance_count(study_uid) == len(_study_files(phantom))
        assert node_and_archive.database.job_states(study_uid) == ["done"]
        assert len(grouped[study_uid].seg) == 1
        assert len(grouped[study_uid].sr) == 1
    for index, phantom in enumerate(phantoms):
        assert listed[phantom.study_instance_uid]["state"] == "done"
        assert listed[phantom.study_instance_uid]["calling_ae_title"] == f"MODALITY{index}"

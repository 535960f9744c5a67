"""Acceptance: results arrive exactly once after the PACS is down for a while, and after the node is killed.

The PACS is a DCMTK ``storescp`` that writes every object it receives to
its own file (``+uf``), so a result sent twice shows up as two files. Both
tests share one node, whose destination port stays the same while the
``storescp`` behind it is stopped and started.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference.result import SequenceRole
from tests.acceptance_helpers import (
    NODE_AE,
    RESULTS_AE,
    Destination,
    NodeDatabase,
    NodeProcess,
    acceptance_models,
    received_results,
    storescp_args,
    wait_for_job_state,
    write_node_config,
)
from tests.conftest import free_port
from tests.peers import start_storescp, storescu, wait_until
from training.phantom import make_study

pytestmark = pytest.mark.peers

JOB_TIMEOUT_S = 120.0


@dataclass
class RecoveryNode:
    node: NodeProcess
    database: NodeDatabase
    pacs_port: int
    folder: Path


@pytest.fixture(scope="module")
def recovery_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecoveryNode]:
    folder = tmp_path_factory.mktemp("acceptance_recovery")
    models = acceptance_models(folder / "models")
    node_port, pacs_port = free_port(), free_port()
    config = write_node_config(
        folder, port=node_port, models=models, destinations=[Destination("pacs", RESULTS_AE, pacs_port)], backoff_initial_s=0.5
    )
    node = NodeProcess(config, node_port, folder / "node.log")
    node.start()
    database = NodeDatabase(folder / "data" / "otscc-node.db")
    try:
        yield RecoveryNode(node, database, pacs_port, folder)
    finally:
        database.close()
        node.stop()


def _send_phantom(recovery: RecoveryNode, name: str, seed: int) -> str:
    phantom = make_study(recovery.folder / name, seed=seed, rows=64, columns=64, slices=12)
    files = [path for role in SequenceRole for path in phantom.files[role]]
    sent = storescu(files, recovery.node.port, called_ae=NODE_AE)
    assert len(sent.succeeded_files) == len(files), sent.output
    return phantom.study_instance_uid


def _assert_results_once(archive: Path, study_uid: str) -> None:
    def arrived() -> bool:
        results = received_results(archive, study_uid)
        return bool(results.seg) and bool(results.sr)

    wait_until(arrived, 30, f"SEG and SR of study {study_uid} at storescp", 0.2)
    results = received_results(archive, study_uid)

    assert len(results.seg) == 1
    assert len(results.sr) == 1
    assert results.other == []


def test_pacs_outage_results_arrive_once(recovery_node):
    archive = recovery_node.folder / "archive_outage"

    with start_storescp(archive, recovery_node.pacs_port, ae_title=RESULTS_AE, extra_args=storescp_args()):
        study_uid = _send_phantom(recovery_node, "outage", seed=6201)
        running = wait_for_job_state(recovery_node.database, study_uid, ["running"], JOB_TIMEOUT_S, recovery_node.node)
    job = wait_for_job_state(recovery_node.database, study_uid, ["delivering"], JOB_TIMEOUT_S, recovery_node.node)
    wait_until(
        lambda: len(recovery_node.database.delivery_attempts(job.id)) >= 2,
        30,
        f"two failed delivery attempts of job {job.id} while the PACS is down",
        0.1,
    )
    failed_attempts = recovery_node.database.delivery_attempts(job.id)
    with start_storescp(archive, recovery_node.pacs_port, ae_title=RESULTS_AE, extra_args=storescp_args()):
        done = wait_for_job_state(recovery_node.database, study_uid, ["done"], JOB_TIMEOUT_S, recovery_node.node)
        _assert_results_once(archive, study_uid)
    attempts = recovery_node.database.delivery_attempts(done.id)

    assert job.id == running.id
    assert [outcome for outcome, _ in failed_attempts] == ["transient"] * len(failed_attempts)
    assert attempts[-1][0] == "delivered"
    assert [outcome for outcome, _ in attempts].count("delivered") == 1


def test_sigkill_while_running_finishes_once(recovery_node):
    archive = recovery_node.folder / "archive_sigkill"

    with start_storescp(archive, recovery_node.pacs_port, ae_title=RESULTS_AE, extra_args=storescp_args()):
        study_uid = _send_phantom(recovery_node, "sigkill", seed=6202)
        running = wait_for_job_state(recovery_node.database, study_uid, ["running"], JOB_TIMEOUT_S, recovery_node.node)
        recovery_node.node.kill()
        state_after_kill = recovery_node.database.jobs(study_uid)[-1].state

        recovery_node.node.start()
        done = wait_for_job_state(recovery_node.database, study_uid, ["done"], JOB_TIMEOUT_S, recovery_node.node)
        _assert_results_once(archive, study_uid)

    assert state_after_kill == "running"
    assert done.id == running.id
    assert recovery_node.database.job_states(study_uid) == ["done"]
    assert "queued 1 interrupted job(s) again" in recovery_node.node.log_tail(200_000)

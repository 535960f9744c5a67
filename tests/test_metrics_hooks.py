"""The metric hooks in the SCP, the job runner and the outbox."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from config.settings import AllowedPeer
from db.models import utcnow
from dicom_node.metrics import EVENT_REGISTRY
from dicom_node.outbox import OutboxWorker
from dicom_node.runner import JobRunner
from tests.conftest import free_port
from tests.receive_helpers import (
    MR_IMAGE_STORAGE,
    NODE_AE,
    SeriesSpec,
    make_mr_slice,
    node_settings,
    running_scp,
    sqlite_session_factory,  # noqa: F401 - a pytest fixture
)
from tests.runner_helpers import ReportStep, make_settings, queue_study

T1 = SeriesSpec(1, "T1 TSE axial", 500.0, 10.0)


def counter(name: str, **labels: str) -> float:
    return EVENT_REGISTRY.get_sample_value(name, labels) or 0.0


def test_scp_counts_instances_and_rejections(tmp_path: Path, sqlite_session_factory: sessionmaker[Session]) -> None:
    settings = node_settings(allowed_peers=[AllowedPeer(ae_title="PACS")])
    dataset = make_mr_slice(generate_uid(), generate_uid(), T1, 0)
    stored_before = counter("otscc_instances_received_total", outcome="stored")
    duplicate_before = counter("otscc_instances_received_total", outcome="duplicate")
    rejected_before = counter("otscc_associations_rejected_total", reason="calling_ae_not_recognised")

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        pacs = AE(ae_title="PACS")
        pacs.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)
        assoc = pacs.associate("127.0.0.1", scp.port, ae_title=NODE_AE)
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(dataset).Status) for _ in range(2)]
        assoc.release()

        intruder = AE(ae_title="INTRUDER")
        intruder.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)
        refused = intruder.associate("127.0.0.1", scp.port, ae_title=NODE_AE)
        assert refused.is_rejected

    assert statuses == [0, 0]
    assert counter("otscc_instances_received_total", outcome="stored") == stored_before + 1
    assert counter("otscc_instances_received_total", outcome="duplicate") == duplicate_before + 1
    assert counter("otscc_associations_rejected_total", reason="calling_ae_not_recognised") == rejected_before + 1


def test_runner_and_outbox_record_metrics(tmp_path: Path, sqlite_session_factory: sessionmaker[Session]) -> None:
    down_port = free_port()
    destination = {"name": "down_pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": down_port}
    settings = make_settings(tmp_path / "node", destinations=[destination], max_attempts=2)
    job_id = queue_study(sqlite_session_factory, settings)
    other_before = counter("otscc_stage_duration_seconds_count", stage="other")
    deliver_before = counter("otscc_stage_duration_seconds_count", stage="deliver")
    transient_before = counter("otscc_delivery_failures_total", destination="down_pacs", permanent="false")
    permanent_before = counter("otscc_delivery_failures_total", destination="down_pacs", permanent="true")

    # The test step reports one stage, "read", which is not a pipeline stage name.
    JobRunner(settings, sqlite_session_factory, ReportStep()).run_one(job_id)
    outbox = OutboxWorker(settings, sqlite_session_factory)
    start = utcnow()
    assert outbox.process_due(start) == 1
    assert outbox.process_due(start + dt.timedelta(hours=1)) == 1

    assert counter("otscc_stage_duration_seconds_count", stage="other") == other_before + 1
    assert counter("otscc_stage_duration_seconds_count", stage="deliver") == deliver_before + 2
    assert counter("otscc_delivery_failures_total", destination="down_pacs", permanent="false") == transient_before + 1
    assert counter("otscc_delivery_failures_total", destination="down_pacs", permanent="true") == permanent_before + 1

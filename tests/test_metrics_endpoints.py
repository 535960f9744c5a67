"""The /metrics exposition and the /healthz checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.session import make_session_factory
from dicom_node import metrics
from dicom_node.dashboard import create_app
from tests.dashboard_helpers import seed_database

LOOPBACK = "http://127.0.0.1"


def settings_for(folder: Path, **storage: object) -> Settings:
    return Settings.model_validate({"storage": {"data_dir": str(folder), "min_free_mb": 0, **storage}})


def scrape(client: TestClient) -> dict[str, dict]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = {
            "type": family.type,
            "samples": {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples},
        }
    return families


def sample(families: dict[str, dict], family: str, name: str, **labels: str) -> float:
    return families[family]["samples"][(name, tuple(sorted(labels.items())))]


def test_metrics_expose_every_family(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    ids = seed_database(session_factory, settings.storage.resolved_spool_dir, settings.storage.outputs_dir, filler=4)
    client = TestClient(create_app(settings, session_factory), base_url=LOOPBACK)
    before = scrape(client)

    metrics.record_instance_received()
    metrics.record_instance_received("duplicate")
    metrics.record_association_rejected("calling_ae_not_allowed")
    metrics.observe_stages({"load": 0.3, "segment": 4.0})
    metrics.observe_stage("deliver", 0.2)
    metrics.observe_stage("unheard_of", 1.0)
    metrics.record_delivery_failure("pacs", permanent=True)
    after = scrape(client)

    received = "otscc_instances_received"
    stored_before = before.get(received, {"samples": {}})["samples"].get((received + "_total", (("outcome", "stored"),)), 0.0)
    assert sample(after, received, received + "_total", outcome="stored") == stored_before + 1
    assert sample(after, received, received + "_total", outcome="duplicate") >= 1
    assert sample(after, "otscc_associations_rejected", "otscc_associations_rejected_total", reason="calling_ae_not_allowed") >= 1
    assert after["otscc_stage_duration_seconds"]["type"] == "histogram"
    assert sample(after, "otscc_stage_duration_seconds", "otscc_stage_duration_seconds_count", stage="segment") >= 1
    assert sample(after, "otscc_stage_duration_seconds", "otscc_stage_duration_seconds_count", stage="other") >= 1
    assert sample(after, "otscc_delivery_failures", "otscc_delivery_failures_total", destination="pacs", permanent="true") >= 1

    assert sample(after, "otscc_database_up", "otscc_database_up") == 1
    assert sample(after, "otscc_jobs", "otscc_jobs", state="done") == ids.filler_jobs + 1
    assert sample(after, "otscc_jobs", "otscc_jobs", state="failed_input") == 1
    assert sample(after, "otscc_jobs", "otscc_jobs", state="waiting") == 1
    assert sample(after, "otscc_jobs", "otscc_jobs", state="running") == 0
    spool_files = sum(path.stat().st_size for path in settings.storage.resolved_spool_dir.rglob("*.dcm"))
    assert sample(after, "otscc_spool_used_bytes", "otscc_spool_used_bytes") == spool_files
    assert sample(after, "otscc_spool_filesystem_free_bytes", "otscc_spool_filesystem_free_bytes") > 0


def unreachable_session_factory(tmp_path: Path) -> sessionmaker[Session]:
    # A SQLite file in a folder that does not exist cannot be opened.
    return make_session_factory(create_engine(f"sqlite:///{tmp_path / 'missing' / 'jobs.db'}"))


def test_metrics_survive_database_outage(tmp_path: Path) -> None:
    client = TestClient(create_app(settings_for(tmp_path), unreachable_session_factory(tmp_path)), base_url=LOOPBACK)
    families = scrape(client)
    assert sample(families, "otscc_database_up", "otscc_database_up") == 0
    assert "otscc_jobs" not in families
    assert "otscc_instances_received" in families


def test_healthz_ok(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    status = {"scp_listening": True, "runner_alive": True, "scheduler_alive": True, "outbox_alive": True}
    client = TestClient(create_app(settings_for(tmp_path), session_factory, node_status=lambda: status), base_url=LOOPBACK)
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["spool"]["status"] == "ok"
    assert body["checks"]["scp_listening"]["status"] == "ok"


def test_healthz_failing_without_database(tmp_path: Path) -> None:
    client = TestClient(create_app(settings_for(tmp_path), unreachable_session_factory(tmp_path)), base_url=LOOPBACK)
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "failing"
    assert body["checks"]["database"]["status"] == "failing"


def test_healthz_failing_when_scp_down(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    status = {"scp_listening": False, "runner_alive": True}
    client = TestClient(create_app(settings_for(tmp_path), session_factory, node_status=lambda: status), base_url=LOOPBACK)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["scp_listening"]["status"] == "failing"
    assert response.json()["checks"]["scheduler_alive"]["status"] == "not_checked"


def test_healthz_degraded_on_low_space(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    settings = settings_for(tmp_path, min_free_mb=10**12)
    client = TestClient(create_app(settings, session_factory), base_url=LOOPBACK)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["spool"]["status"] == "degraded"


def test_healthz_failing_on_unwritable_spool(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    client = TestClient(create_app(settings_for(tmp_path, spool_dir=str(blocker)), session_factory), base_url=LOOPBACK)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["spool"]["status"] == "failing"


@pytest.mark.parametrize("stage", metrics.STAGES)
def test_observe_stage_keeps_stage_label(stage: str) -> None:
    name = "otscc_stage_duration_seconds_sum"
    before = metrics.EVENT_REGISTRY.get_sample_value(name, {"stage": stage}) or 0.0
    metrics.observe_stage(stage, 2.0)
    assert metrics.EVENT_REGISTRY.get_sample_value(name, {"stage": stage}) == before + 2.0

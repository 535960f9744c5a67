"""The dashboard's job list on SQLite and PostgreSQL, and its agreement with ``otscc-node jobs``."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from dicom_node.cli_jobs import add_jobs_parser, run_jobs
from dicom_node.dashboard import create_app
from tests.dashboard_helpers import SeededIds, seed_database


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> tuple[TestClient, Settings, SeededIds]:
    settings = Settings.model_validate({"storage": {"data_dir": str(tmp_path), "min_free_mb": 0}})
    ids = seed_database(session_factory, settings.storage.resolved_spool_dir, settings.storage.outputs_dir, filler=12)
    client = TestClient(create_app(settings, session_factory), base_url="http://127.0.0.1")
    return client, settings, ids


def dashboard_job_ids(client: TestClient, query: str) -> list[int]:
    response = client.get("/?" + query)
    assert response.status_code == 200
    return [int(value) for value in re.findall(r'data-job-id="(\d+)"', response.text)]


def cli_job_ids(arguments: list[str], settings: Settings, factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> list[int]:
    parser = argparse.ArgumentParser(prog="otscc-node")
    add_jobs_parser(parser.add_subparsers())
    args = parser.parse_args(["jobs", "--json", *arguments])
    # The command opens the database itself, from the settings' URL.
    url = factory.kw["bind"].url.render_as_string(hide_password=False)
    cli_settings = settings.model_copy(update={"database": settings.database.model_copy(update={"url": url})})
    assert run_jobs(args, cli_settings) == 0
    return [row["job_id"] for row in json.loads(capsys.readouterr().out)["jobs"]]


CASES = [
    ("", []),
    ("state=done", ["--state", "done"]),
    ("state=failed_input", ["--state", "failed_input"]),
    ("ae=PACS_A", ["--ae", "PACS_A"]),
    ("ae=MR_ROOM&size=5&page=2", ["--ae", "MR_ROOM", "--limit", "5", "--page", "2"]),
    ("from=2026-03-02", ["--since", "2026-03-02"]),
    ("from=2026-03-01&state=done&size=10", ["--since", "2026-03-01", "--state", "done", "--limit", "10"]),
]


def test_list_matches_cli(
    seeded: tuple[TestClient, Settings, SeededIds],
    session_factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, settings, _ids = seeded
    for query, arguments in CASES:
        from_dashboard = dashboard_job_ids(client, query)
        from_cli = cli_job_ids(arguments, settings, session_factory, capsys)
        assert from_dashboard, query
        assert from_dashboard == from_cli, query


def test_list_filters_on_backend(seeded: tuple[TestClient, Settings, SeededIds]) -> None:
    client, _settings, ids = seeded
    assert dashboard_job_ids(client, "state=failed_input") == [ids.failed_job]
    assert dashboard_job_ids(client, "ae=PACS_A") == [ids.waiting_job, ids.done_job]
    assert sorted(dashboard_job_ids(client, "from=2026-03-02")) == sorted([ids.done_job, ids.failed_job, ids.waiting_job])
    assert dashboard_job_ids(client, "ae=NOBODY") == []


def test_list_ignores_invalid_query(seeded: tuple[TestClient, Settings, SeededIds]) -> None:
    client, _settings, ids = seeded
    assert len(dashboard_job_ids(client, "state=bogus&from=yesterday&size=-3&page=zero")) == 1
    assert len(dashboard_job_ids(client, "state=bogus&from=yesterday")) == ids.filler_jobs + 3


def test_study_page_on_backend(seeded: tuple[TestClient, Settings, SeededIds]) -> None:
    client, _settings, ids = seeded
    page = client.get(f"/studies/{ids.done_study}")
    thumbnail = client.get(f"/studies/{ids.done_study}/thumbnail.png")
    missing = client.get("/studies/999999")
    by_uid = client.get(f"/studies/uid/{page.text.split('Study ')[1].split()[0].strip('<')}", follow_redirects=False)
    assert page.status_code == 200
    assert "taken as ce_t1" in page.text
    assert thumbnail.status_code == 200
    assert thumbnail.content.startswith(b"\x89PNG")
    assert missing.status_code == 404
    assert by_uid.status_code == 303


def test_study_page_events_in_chinese(seeded: tuple[TestClient, Settings, SeededIds]) -> None:
    client, _settings, ids = seeded
    chinese = client.get(f"/studies/{ids.done_study}?lang=zh-CN")
    english = client.get(f"/studies/{ids.done_study}?lang=en")

    assert chinese.status_code == 200
    assert "工作进程已开始处理" in chinese.text
    assert "已生成 2 个对象，正在发送到 pacs" in chinese.text
    assert "picked up by worker" not in chinese.text
    assert "picked up by worker" in english.text

"""``otscc-node jobs``, ``retry`` and ``send`` through the real command-line entry point."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, Study
from db.session import session_scope
from db.states import DeliveryState, JobState
from dicom_node.cli import main
from dicom_node.job_list import JobFilters, list_jobs
from dicom_node.runner import JobRunner
from tests.conftest import free_port
from tests.delivery_peers import basic_text_sr, storescp, write_part10
from tests.runner_helpers import BrokenStep, ReportStep, make_settings, queue_study

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11112}


def _jobs_json(capsys: pytest.CaptureFixture[str], db_url: str, *options: str) -> dict:
    assert main(["jobs", "--database-url", db_url, "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def three_jobs(tmp_path: Path, session_factory: sessionmaker[Session]) -> list[int]:
    """A delivering job, a failed job and a queued job from another AE, oldest first."""
    settings = make_settings(tmp_path, destinations=[PACS])
    delivering = queue_study(session_factory, settings)
    JobRunner(settings, session_factory, ReportStep()).run_one(delivering)
    failed = queue_study(session_factory, settings, roles=("t2",))
    JobRunner(settings, session_factory, BrokenStep()).run_one(failed)
    queued = queue_study(session_factory, settings)
    with session_scope(session_factory) as session:
        study = session.get(Job, queued).study
        study.calling_ae_title = "OTHER_PACS"
        study.patient_name = "Secret^Patient"
        study.patient_id = "PID-12345"
    return [delivering, failed, queued]


def test_jobs_lists_newest_first(
    three_jobs: list[int], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _jobs_json(capsys, db_url)

    assert document["total"] == 3
    assert [job["job_id"] for job in document["jobs"]] == list(reversed(three_jobs))
    delivering = document["jobs"][2]
    assert delivering["state"] == "delivering"
    assert delivering["deliveries"] == {"pacs": "pending"}
    assert delivering["roles"] == ["ce_t1", "t1", "t2"]
    assert delivering["calling_ae_title"] == "MODALITY"
    assert delivering["duration_s"] >= 0
    assert document["jobs"][1]["roles"] == ["t2"]
    assert document["jobs"][0]["duration_s"] is None


def test_jobs_filters_by_state_and_ae(
    three_jobs: list[int], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = _jobs_json(capsys, db_url, "--state", "failed")
    by_ae = _jobs_json(capsys, db_url, "--ae", "OTHER_PACS")
    two_states = _jobs_json(capsys, db_url, "--state", "failed", "--state", "queued")
    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).date().isoformat()
    future = _jobs_json(capsys, db_url, "--since", tomorrow)
    before_tomorrow = _jobs_json(capsys, db_url, "--until", tomorrow)

    assert [job["job_id"] for job in failed["jobs"]] == [three_jobs[1]]
    assert [job["job_id"] for job in by_ae["jobs"]] == [three_jobs[2]]
    assert [job["job_id"] for job in two_states["jobs"]] == [three_jobs[2], three_jobs[1]]
    assert future == {"total": 0, "page": 1, "page_count": 1, "jobs": []}
    assert before_tomorrow["total"] == 3


def test_jobs_pages_with_limit(three_jobs: list[int], db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    second = _jobs_json(capsys, db_url, "--limit", "2", "--page", "2")

    assert second["page_count"] == 2
    assert [job["job_id"] for job in second["jobs"]] == [three_jobs[0]]


def test_jobs_table_masks_patient_data(
    three_jobs: list[int], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "--database-url", db_url]) == 0
    output = capsys.readouterr().out

    assert output.splitlines()[0].split()[:3] == ["JOB", "STUDY", "INSTANCE"]
    assert "pacs=pending" in output
    assert "OTHER_PACS" in output
    assert output.splitlines()[-1] == "page 1 of 1, 3 job(s)"
    assert "Secret" not in output
    assert "PID-12345" not in output


def test_list_jobs_shows_patient_data_on_request(three_jobs: list[int], session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        masked = list_jobs(session, JobFilters(calling_ae_title="OTHER_PACS"))
        shown = list_jobs(session, JobFilters(calling_ae_title="OTHER_PACS"), include_patient_data=True)

    assert (masked.rows[0].patient_name, masked.rows[0].patient_id) == (None, None)
    assert (shown.rows[0].patient_name, shown.rows[0].patient_id) == ("Secret^Patient", "PID-12345")


def test_list_jobs_rejects_bad_page(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match="page must be 1 or more, got 0"):
            list_jobs(session, page=0)
        with pytest.raises(ValueError, match="page_size must be between 1 and 1000, got 5000"):
            list_jobs(session, page_size=5000)


def test_retry_command_queues_failed_job(
    three_jobs: list[int], db_url: str, session_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    failed = three_jobs[1]
    assert main(["retry", "--database-url", db_url, str(failed)]) == 0
    assert capsys.readouterr().out.strip() == f"job {failed} queued again"

    with session_scope(session_factory) as session:
        job = session.get(Job, failed)
        assert job.state is JobState.QUEUED
        assert job.events[-1].actor.startswith("cli")

    assert main(["retry", "--database-url", db_url, str(failed)]) == 1
    assert f"job {failed} is queued and cannot be retried" in capsys.readouterr().err


def test_retry_command_resends_delivery(
    three_jobs: list[int], db_url: str, session_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with session_scope(session_factory) as session:
        delivery = session.scalars(select(Delivery).where(Delivery.job_id == three_jobs[0])).one()
        delivery.state = DeliveryState.FAILED
        delivery.attempts = 8
        delivery_id = delivery.id

    assert main(["retry", "--database-url", db_url, "--delivery", str(delivery_id)]) == 0
    assert "is pending again" in capsys.readouterr().out
    with session_scope(session_factory) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery.state is DeliveryState.PENDING
        assert delivery.attempts == 0

    assert main(["retry", "--database-url", db_url, "--delivery", "999999"]) == 1
    assert "delivery 999999 not found" in capsys.readouterr().err


@pytest.mark.peers
def test_send_command_stores_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [write_part10(basic_text_sr(), tmp_path / "out") for _ in range(2)]
    database = f"sqlite:///{tmp_path / 'unused.db'}"
    with storescp(tmp_path / "received") as peer:
        code = main(["send", "--database-url", database, "--host", "127.0.0.1", "--port", str(peer.port), "--call", peer.ae_title, str(tmp_path / "out")])
        received = peer.received_sop_instance_uids()

    assert code == 0
    assert received == sorted(str(dcmread(path).SOPInstanceUID) for path in paths)
    assert "delivered: 2 instance(s) stored" in capsys.readouterr().out


@pytest.mark.peers
def test_send_command_uses_named_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_part10(basic_text_sr(), tmp_path / "out")
    with storescp(tmp_path / "received") as peer:
        config = tmp_path / "node.toml"
        config.write_text(
            f'[[destinations]]\nname = "archive"\nae_title = "{peer.ae_title}"\nhost = "127.0.0.1"\nport = {peer.port}\n'
        )
        code = main(["send", "--config", str(config), "--dest", "archive", str(path)])
        received = peer.received_sop_instance_uids()

    assert code == 0
    assert received == [str(dcmread(path).SOPInstanceUID)]


def test_send_command_reports_unknown_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_part10(basic_text_sr(), tmp_path / "out")
    code = main(["send", "--dest", "nowhere", str(path)])

    assert code == 2
    assert "destination 'nowhere' not found in the settings" in capsys.readouterr().err


def test_send_command_fails_on_closed_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_part10(basic_text_sr(), tmp_path / "out")
    code = main(["send", "--host", "127.0.0.1", "--port", str(free_port()), "--call", "NOBODY", "--timeout", "3", str(path)])

    assert code == 1
    assert "transient: cannot connect to 127.0.0.1" in capsys.readouterr().out


def test_study_fixture_has_patient_data(three_jobs: list[int], session_factory: sessionmaker[Session]) -> None:
    # Guards the masking tests: the data they must hide is really stored.
    with session_scope(session_factory) as session:
        names = session.scalars(select(Study.patient_name).where(Study.patient_name.is_not(None))).all()
    assert names == ["Secret^Patient"]

"""Login, CSRF, Origin and Host guards of the dashboard, over real HTTP on a loopback port."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from db.models import Job
from db.states import JobState
from dicom_node.dashboard.auth import authenticate
from dicom_node.passwords import hash_password
from tests.dashboard_browser import RunningDashboard, start_dashboard

PASSWORD = "s3cret pass"


@pytest.fixture
def local_dashboard(tmp_path: Path) -> Iterator[RunningDashboard]:
    yield from start_dashboard(tmp_path, {}, filler=0)


@pytest.fixture
def login_dashboard(tmp_path: Path) -> Iterator[RunningDashboard]:
    users = [{"username": "alice", "password_hash": hash_password(PASSWORD, iterations=1_000)}]
    yield from start_dashboard(tmp_path, {"users": users}, filler=0)


def csrf_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def job_state(dashboard: RunningDashboard, job_id: int) -> JobState:
    with dashboard.session_factory() as session:
        return session.get(Job, job_id).state


def test_post_without_token_rejected(local_dashboard: RunningDashboard) -> None:
    ids = local_dashboard.ids
    with httpx.Client(base_url=local_dashboard.url) as client:
        csrf_token(client, f"/studies/{ids.failed_study}")
        response = client.post(f"/jobs/{ids.failed_job}/retry", headers={"Origin": local_dashboard.url})
    assert response.status_code == 403
    assert job_state(local_dashboard, ids.failed_job) is JobState.FAILED_INPUT


def test_post_with_wrong_token_rejected(local_dashboard: RunningDashboard) -> None:
    ids = local_dashboard.ids
    with httpx.Client(base_url=local_dashboard.url) as client:
        csrf_token(client, f"/studies/{ids.failed_study}")
        response = client.post(
            f"/jobs/{ids.failed_job}/retry", data={"csrf_token": "forged"}, headers={"Origin": local_dashboard.url}
        )
    assert response.status_code == 403
    assert job_state(local_dashboard, ids.failed_job) is JobState.FAILED_INPUT


def test_cross_origin_post_rejected(local_dashboard: RunningDashboard) -> None:
    ids = local_dashboard.ids
    with httpx.Client(base_url=local_dashboard.url) as client:
        token = csrf_token(client, f"/studies/{ids.failed_study}")
        cross_origin = client.post(
            f"/jobs/{ids.failed_job}/retry", data={"csrf_token": token}, headers={"Origin": "http://evil.example"}
        )
        cross_referer = client.post(
            f"/jobs/{ids.failed_job}/retry", data={"csrf_token": token}, headers={"Referer": "http://evil.example/page"}
        )
        no_origin = client.post(f"/jobs/{ids.failed_job}/retry", data={"csrf_token": token})
    assert cross_origin.status_code == 403
    assert cross_referer.status_code == 403
    assert no_origin.status_code == 403
    assert job_state(local_dashboard, ids.failed_job) is JobState.FAILED_INPUT


def test_same_origin_post_accepted(local_dashboard: RunningDashboard) -> None:
    ids = local_dashboard.ids
    with httpx.Client(base_url=local_dashboard.url) as client:
        token = csrf_token(client, f"/studies/{ids.failed_study}")
        response = client.post(
            f"/jobs/{ids.failed_job}/retry",
            data={"csrf_token": token},
            headers={"Referer": f"{local_dashboard.url}/studies/{ids.failed_study}"},
        )
    assert response.status_code == 303
    assert response.headers["location"] == f"/studies/{ids.failed_study}"
    assert job_state(local_dashboard, ids.failed_job) is JobState.QUEUED


def test_rebound_host_rejected_on_loopback(local_dashboard: RunningDashboard) -> None:
    with httpx.Client(base_url=local_dashboard.url) as client:
        response = client.get("/", headers={"Host": f"evil.example:{local_dashboard.server.port}"})
        health = client.get("/healthz", headers={"Host": f"localhost:{local_dashboard.server.port}"})
    assert response.status_code == 400
    assert health.status_code == 200


def test_session_cookie_flags(local_dashboard: RunningDashboard) -> None:
    with httpx.Client(base_url=local_dashboard.url) as client:
        response = client.get("/")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_login_required_with_users(login_dashboard: RunningDashboard) -> None:
    ids = login_dashboard.ids
    with httpx.Client(base_url=login_dashboard.url) as client:
        for path in ("/", f"/studies/{ids.done_study}", f"/studies/{ids.done_study}/thumbnail.png"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next=")
        token = csrf_token(client, "/login")
        action = client.post(f"/jobs/{ids.failed_job}/retry", data={"csrf_token": token}, headers={"Origin": login_dashboard.url})
        metrics = client.get("/metrics")
        health = client.get("/healthz")
    assert action.status_code == 403
    assert job_state(login_dashboard, ids.failed_job) is JobState.FAILED_INPUT
    assert metrics.status_code == 200
    assert health.status_code == 200


def test_wrong_password_rejected(login_dashboard: RunningDashboard) -> None:
    with httpx.Client(base_url=login_dashboard.url) as client:
        token = csrf_token(client, "/login")
        wrong = client.post(
            "/login", data={"csrf_token": token, "username": "alice", "password": "nope"}, headers={"Origin": login_dashboard.url}
        )
        unknown = client.post(
            "/login", data={"csrf_token": token, "username": "mallory", "password": PASSWORD}, headers={"Origin": login_dashboard.url}
        )
        still_out = client.get("/")
    assert wrong.status_code == 401
    assert "Invalid user name or password." in wrong.text
    assert unknown.status_code == 401
    assert still_out.status_code == 303


def test_login_without_token_rejected(login_dashboard: RunningDashboard) -> None:
    with httpx.Client(base_url=login_dashboard.url) as client:
        response = client.post(
            "/login", data={"username": "alice", "password": PASSWORD}, headers={"Origin": login_dashboard.url}
        )
        after = client.get("/")
    assert response.status_code == 403
    assert after.status_code == 303


def test_login_rotates_token_and_redirects_locally(login_dashboard: RunningDashboard) -> None:
    with httpx.Client(base_url=login_dashboard.url) as client:
        token = csrf_token(client, "/login")
        response = client.post(
            "/login",
            data={"csrf_token": token, "username": "alice", "password": PASSWORD, "next": "//evil.example/"},
            headers={"Origin": login_dashboard.url},
        )
        new_token = csrf_token(client, "/")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert new_token != token


def test_patient_data_needs_option(tmp_path: Path) -> None:
    users = [{"username": "alice", "password_hash": hash_password(PASSWORD, iterations=1_000)}]
    for dashboard in start_dashboard(tmp_path, {"users": users, "show_patient_data": False}, filler=0):
        with httpx.Client(base_url=dashboard.url) as client:
            token = csrf_token(client, "/login")
            client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD}, headers={"Origin": dashboard.url})
            token = csrf_token(client, "/")
            toggle = client.post("/patient-data", data={"csrf_token": token, "show": "1"}, headers={"Origin": dashboard.url})
            page = client.get(f"/studies/{dashboard.ids.done_study}")
        assert toggle.status_code == 403
        assert "Zhang" not in page.text
        assert "P12345" not in page.text


def test_settings_need_users_off_loopback() -> None:
    with pytest.raises(ValueError, match="not loopback but no dashboard.users"):
        Settings.model_validate({"dashboard": {"bind_address": "0.0.0.0"}})


def test_authenticate_reports_malformed_hash() -> None:
    users = [Settings.model_validate({"dashboard": {"users": [{"username": "bob", "password_hash": "plain"}]}}).dashboard.users[0]]
    with pytest.raises(ValueError, match="dashboard user 'bob'.*pbkdf2_sha256"):
        authenticate(users, "bob", "plain")


API_TOKEN = "ci-token-0123456789"


@pytest.fixture
def token_dashboard(tmp_path: Path) -> Iterator[RunningDashboard]:
    users = [{"username": "alice", "password_hash": hash_password(PASSWORD, iterations=1_000)}]
    tokens = [{"name": "ci", "token_hash": hash_password(API_TOKEN, iterations=1_000)}]
    yield from start_dashboard(tmp_path, {"users": users, "api_tokens": tokens}, filler=0)


def test_api_token_retries_without_session(token_dashboard: RunningDashboard) -> None:
    ids = token_dashboard.ids
    with httpx.Client(base_url=token_dashboard.url) as client:
        response = client.post(
            f"/jobs/{ids.failed_job}/retry", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
    assert response.status_code == 303
    assert job_state(token_dashboard, ids.failed_job) is JobState.QUEUED
    with token_dashboard.session_factory() as session:
        actors = [event.actor for event in session.get(Job, ids.failed_job).events]
    assert "token:ci" in actors


def test_unknown_api_token_rejected(token_dashboard: RunningDashboard) -> None:
    ids = token_dashboard.ids
    with httpx.Client(base_url=token_dashboard.url) as client:
        response = client.post(
            f"/jobs/{ids.failed_job}/retry", headers={"Authorization": "Bearer wrong-token"}
        )
    assert response.status_code == 403
    assert job_state(token_dashboard, ids.failed_job) is JobState.FAILED_INPUT

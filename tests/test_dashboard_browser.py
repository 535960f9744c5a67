"""The dashboard in a real headless chromium: list, study page, actions, login, patient data, Chinese."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.models import Job, JobEvent
from db.states import JobState
from dicom_node.passwords import hash_password
from tests.dashboard_browser import RunningDashboard, launch_chromium, screenshot, start_dashboard

pytestmark = pytest.mark.browser

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launch_chromium()


@pytest.fixture(scope="module")
def expect() -> object:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


@pytest.fixture
def local_dashboard(tmp_path: Path) -> Iterator[RunningDashboard]:
    """A loopback dashboard without users: the anonymous local administrator."""
    yield from start_dashboard(tmp_path, {})


@pytest.fixture
def login_dashboard(tmp_path: Path) -> Iterator[RunningDashboard]:
    """A dashboard with one user and patient data display allowed."""
    users = [{"username": "alice", "password_hash": hash_password(PASSWORD, iterations=1_000)}]
    yield from start_dashboard(tmp_path, {"users": users, "show_patient_data": True})


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def job_ids_on_page(page: object) -> list[int]:
    return [int(value) for value in page.locator("#jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")]


def test_list_filters_and_pages(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(local_dashboard.url + "/")
    expect(page.locator("#total")).to_have_text(f"{ids.filler_jobs + 3} jobs")
    screenshot(page, "job-list")

    page.select_option("#filter-state", "failed_input")
    page.click("#filter-apply")
    expect(page.locator("#total")).to_have_text("1 jobs")
    assert job_ids_on_page(page) == [ids.failed_job]
    expect(page.locator("#jobs tbody tr")).to_contain_text("failed (input)")

    page.goto(local_dashboard.url + "/")
    page.fill("#filter-ae", "PACS_A")
    page.click("#filter-apply")
    expect(page.locator("#total")).to_have_text("2 jobs")
    assert job_ids_on_page(page) == [ids.waiting_job, ids.done_job]
    done_row = page.locator(f'tr[data-job-id="{ids.done_job}"]')
    expect(done_row).to_contain_text("CE-T1")
    expect(done_row).to_contain_text("pacs: delivered")
    expect(done_row).to_contain_text("2 min 0 s")

    page.goto(local_dashboard.url + "/")
    page.fill("#filter-from", "2026-03-02")
    page.click("#filter-apply")
    expect(page.locator("#total")).to_have_text("3 jobs")
    assert sorted(job_ids_on_page(page)) == sorted([ids.done_job, ids.failed_job, ids.waiting_job])

    page.goto(local_dashboard.url + "/")
    page.select_option("#filter-size", "25")
    page.click("#filter-apply")
    first_page = job_ids_on_page(page)
    assert len(first_page) == 25
    page.click("#next")
    expect(page.locator("#page-number")).to_have_text("Page 2")
    second_page = job_ids_on_page(page)
    assert len(second_page) == 25
    assert max(second_page) < min(first_page)
    page.click("#next")
    third_page = job_ids_on_page(page)
    assert len(third_page) == ids.filler_jobs + 3 - 50
    expect(page.locator("#next")).to_have_count(0)
    page.click("#previous")
    assert job_ids_on_page(page) == second_page


def test_study_page_shows_everything(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(local_dashboard.url + "/")
    page.locator(f'tr[data-job-id="{ids.done_job}"] td.uid a').click()
    expect(page).to_have_url(re.compile(rf"/studies/{ids.done_study}$"))

    series_roles = page.locator("#series td.role").all_inner_texts()
    assert sorted(series_roles) == ["CE-T1", "T1", "T2"]
    expect(page.locator("#series")).to_contain_text("taken as ce_t1")
    page.locator("#series details").first.click()
    expect(page.locator("#series dl.evidence").first).to_contain_text("orientation")

    timeline = page.locator(f"#job-{ids.done_job}-timeline tbody tr")
    expect(timeline).to_have_count(5)
    expect(timeline.nth(1)).to_contain_text("+1 min 0 s")
    expect(timeline.nth(4)).to_contain_text("delivering → done")

    outputs = page.locator(f"#job-{ids.done_job}-outputs")
    expect(outputs).to_contain_text("SEG")
    expect(outputs).to_contain_text("1.2.840.10008.5.1.4.1.1.66.4")
    deliveries = page.locator(f"#job-{ids.done_job}-deliveries")
    expect(deliveries).to_contain_text("delivered")
    expect(deliveries).to_contain_text("2 of 2 stored")

    thumbnail = page.locator("#thumbnail")
    expect(thumbnail).to_be_visible()
    page.wait_for_function("document.querySelector('#thumbnail').complete")
    natural_width = thumbnail.evaluate("img => img.naturalWidth")
    assert natural_width >= 256
    screenshot(page, "study-done")


def test_failed_job_hint_and_retry(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(f"{local_dashboard.url}/studies/{ids.failed_study}")
    failure = page.locator(f"#job-{ids.failed_job}-failure")
    expect(failure).to_contain_text("missing_role")
    expect(failure).to_contain_text("no series matched CE-T1")
    expect(failure).to_contain_text("Send the missing or complete series again")
    expect(page.locator(f"#delivery-{ids.failed_delivery}-attempts tbody tr")).to_have_count(2)
    screenshot(page, "study-failed")

    page.click(f"#retry-delivery-{ids.failed_delivery}")
    expect(page.locator(".flash.ok")).to_contain_text(f"Delivery {ids.failed_delivery} will be sent again.")
    expect(page.locator(f"#delivery-{ids.failed_delivery}")).to_contain_text("pending")

    page.click(f"#retry-job-{ids.failed_job}")
    expect(page.locator(".flash.ok")).to_contain_text(f"Job {ids.failed_job} is queued again.")
    expect(page.locator(f"#job-{ids.failed_job}-state")).to_have_text("queued")
    last_event = page.locator(f"#job-{ids.failed_job}-timeline tbody tr").last
    expect(last_event).to_contain_text("failed (input) → queued")
    expect(last_event.locator("td.actor")).to_have_text("local-admin")
    screenshot(page, "study-retried")

    with local_dashboard.session_factory() as session:
        job = session.get(Job, ids.failed_job)
        events = session.query(JobEvent).filter_by(job_id=job.id).order_by(JobEvent.id).all()
    assert job.state is JobState.QUEUED
    queued = [event for event in events if event.to_state == JobState.QUEUED.value]
    delivery_retries = [event for event in events if event.details.get("delivery_id") == ids.failed_delivery]
    assert [event.actor for event in queued] == ["local-admin"]
    assert delivery_retries
    assert {event.actor for event in delivery_retries} == {"local-admin"}


def test_force_complete_waiting_study(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(f"{local_dashboard.url}/studies/{ids.waiting_study}")
    expect(page.locator("#thumbnail")).to_have_count(0)
    page.click("#force-complete")
    expect(page.locator(".flash.ok")).to_contain_text(f"Study {ids.waiting_study} was evaluated now")
    # The seeded study has no series with roles, so the evaluation fails its job.
    expect(page.locator(f"#job-{ids.waiting_job}-state")).to_have_text("failed (input)")
    last_event = page.locator(f"#job-{ids.waiting_job}-timeline tbody tr").last
    expect(last_event.locator("td.actor")).to_have_text("local-admin")
    expect(page.locator("#force-complete")).to_have_count(0)


def test_cancel_waiting_job(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(f"{local_dashboard.url}/studies/{ids.waiting_study}")
    expect(page.locator("#force-complete")).to_be_visible()
    page.click(f"#cancel-job-{ids.waiting_job}")
    expect(page.locator(f"#job-{ids.waiting_job}-state")).to_have_text("cancelled")
    expect(page.locator(f"#job-{ids.waiting_job}-timeline tbody tr").last.locator("td.actor")).to_have_text("local-admin")
    expect(page.locator("#force-complete")).to_have_count(0)


def test_patient_data_masked_for_anonymous(local_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = local_dashboard.ids
    page.goto(local_dashboard.url + "/")
    expect(page.locator(f'tr[data-job-id="{ids.done_job}"] td.patient')).to_have_text("Z***")
    expect(page.locator("#patient-toggle")).to_have_count(0)
    page.goto(f"{local_dashboard.url}/studies/{ids.done_study}")
    expect(page.locator("#patient-name")).to_have_text("Z***")
    expect(page.locator("#patient-id")).to_have_text("P***")
    assert "Zhang" not in page.content()
    assert "P12345" not in page.content()


def test_login_then_patient_data(login_dashboard: RunningDashboard, page: object, expect: object) -> None:
    ids = login_dashboard.ids
    page.goto(f"{login_dashboard.url}/studies/{ids.done_study}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    screenshot(page, "login")

    page.fill("#username", "alice")
    page.fill("#password", "wrong password")
    page.click("#login-submit")
    expect(page.locator("#login-failed")).to_have_text("Invalid user name or password.")

    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(rf"/studies/{ids.done_study}$"))
    expect(page.locator("#patient-name")).to_have_text("Z***")

    page.click("#patient-toggle")
    expect(page.locator("#patient-name")).to_have_text("Zhang San / 张 三")
    expect(page.locator("#patient-id")).to_have_text("P12345")
    screenshot(page, "study-patient-data")
    page.goto(login_dashboard.url + "/")
    expect(page.locator(f'tr[data-job-id="{ids.done_job}"] td.patient')).to_have_text("Zhang San / 张 三")

    page.click("#patient-toggle")
    expect(page.locator(f'tr[data-job-id="{ids.done_job}"] td.patient')).to_have_text("Z***")
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_chinese_locale_and_switch(local_dashboard: RunningDashboard, browser: object, expect: object) -> None:
    ids = local_dashboard.ids
    context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    page = context.new_page()
    try:
        page.goto(local_dashboard.url + "/")
        expect(page.locator("h1")).to_have_text("检查与任务")
        expect(page.locator(f'tr[data-job-id="{ids.failed_job}"]')).to_contain_text("失败（输入）")
        expect(page.locator(f'tr[data-job-id="{ids.done_job}"]')).to_contain_text("CE-T1")
        screenshot(page, "job-list-zh")

        page.goto(f"{local_dashboard.url}/studies/{ids.failed_study}")
        expect(page.locator(f"#job-{ids.failed_job}-failure")).to_contain_text("请重新发送缺失的序列")
        expect(page.locator(f"#retry-job-{ids.failed_job}")).to_have_text("重试任务")
        screenshot(page, "study-failed-zh")

        page.click("a[hreflang=en]")
        expect(page.locator(f"#retry-job-{ids.failed_job}")).to_have_text("Retry job")
        page.goto(local_dashboard.url + "/")
        expect(page.locator("h1")).to_have_text("Studies and jobs")

        page.goto(local_dashboard.url + "/?state=failed_input&lang=zh-CN")
        expect(page.locator("h1")).to_have_text("检查与任务")
        page.click("a[hreflang=en]")
        expect(page.locator("h1")).to_have_text("Studies and jobs")
        assert job_ids_on_page(page) == [ids.failed_job]
    finally:
        context.close()

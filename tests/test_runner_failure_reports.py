"""Jobs that the study assembly fails get a failure SR for the destinations that want one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, Output
from db.session import session_scope
from db.states import DeliveryState, JobState, OutputKind
from dicom_node import jobs
from dicom_node.runner import JobRunner
from dicom_node.study_pipeline import StudyPipeline
from tests.runner_helpers import add_study, make_settings

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11112}


def _fail_in_assembly(session_factory: sessionmaker[Session], settings, roles: tuple[str, ...]) -> int:
    with session_scope(session_factory) as session:
        study = add_study(session, settings.storage.resolved_spool_dir, roles=roles)
        for series in study.series:
            if not roles:
                series.role = None
        job = jobs.note_study_activity(session, study, new_instance=True)
        jobs.transition(
            session,
            job,
            JobState.FAILED_INPUT,
            reason="force-complete timeout",
            reason_code="missing_role",
            error_message="Required series T2 not received within 900 s",
            hint="send the T2 series",
        )
        return job.id


@pytest.fixture
def runner_parts(tmp_path: Path, session_factory: sessionmaker[Session]):
    settings = make_settings(tmp_path, destinations=[PACS])
    runner = JobRunner(settings, session_factory, StudyPipeline(settings))
    return settings, runner


def test_missing_role_gets_failure_report(runner_parts, session_factory) -> None:
    settings, runner = runner_parts
    job_id = _fail_in_assembly(session_factory, settings, roles=("ce_t1", "t1"))

    handled = runner.report_assembly_failures()

    assert handled == [job_id]
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        outputs = session.query(Output).filter_by(job_id=job_id).all()
        delivery = session.query(Delivery).filter_by(job_id=job_id).one()
        assert job.state is JobState.FAILED_INPUT
        assert [output.kind for output in outputs] == [OutputKind.FAILURE_SR]
        assert Path(outputs[0].path).is_file()
        assert delivery.state is DeliveryState.PENDING
        assert delivery.output_kinds == ["failure_sr"]
        assert any("failure report queued for pacs" in event.reason for event in job.events)


def test_failure_report_made_once(runner_parts, session_factory) -> None:
    settings, runner = runner_parts
    _fail_in_assembly(session_factory, settings, roles=("t1",))

    first = runner.report_assembly_failures()
    second = runner.report_assembly_failures()

    assert len(first) == 1
    assert second == []


def test_study_without_roles_uses_any_instance(runner_parts, session_factory) -> None:
    settings, runner = runner_parts
    job_id = _fail_in_assembly(session_factory, settings, roles=("t2",))
    with session_scope(session_factory) as session:
        for series in session.get(Job, job_id).study.series:
            series.role = None

    assert runner.report_assembly_failures() == [job_id]
    with session_scope(session_factory) as session:
        kinds = [output.kind for output in session.query(Output).filter_by(job_id=job_id)]
    assert kinds == [OutputKind.FAILURE_SR]


def test_no_report_when_destinations_decline(tmp_path: Path, session_factory) -> None:
    settings = make_settings(tmp_path, destinations=[PACS | {"send_failure_report": False}])
    runner = JobRunner(settings, session_factory, StudyPipeline(settings))
    job_id = _fail_in_assembly(session_factory, settings, roles=("t1",))

    assert runner.report_assembly_failures() == [job_id]
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert session.query(Output).filter_by(job_id=job_id).count() == 0
        assert session.query(Delivery).filter_by(job_id=job_id).count() == 0
        assert job.result_summary["failure_report_checked"] is True
    assert runner.report_assembly_failures() == []


def test_unreadable_reference_recorded_once(runner_parts, session_factory) -> None:
    settings, runner = runner_parts
    job_id = _fail_in_assembly(session_factory, settings, roles=("t1",))
    for path in settings.storage.resolved_spool_dir.rglob("*.dcm"):
        path.write_bytes(b"not DICOM")

    assert runner.report_assembly_failures() == [job_id]
    assert runner.report_assembly_failures() == []
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert job.state is JobState.FAILED_INPUT
        assert "failure_report_error" in job.result_summary
        assert session.query(Output).filter_by(job_id=job_id).count() == 0

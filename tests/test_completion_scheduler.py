"""Study completion on SQLite and PostgreSQL, driven by explicit clock values."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Job, JobEvent, Series, Study, utcnow
from db.states import JobState, StudyState
from dicom_node import jobs
from dicom_node.completion import CompletionScheduler, force_complete
from tests.roles_helpers import CORONAL, add_series, add_study, mr_header, t2_header

STACK = [3.0 * index for index in range(10)]
QUIET_S = 0.2
FORCE_S = 5.0


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        storage={"data_dir": tmp_path},
        assembly={"quiet_period_s": QUIET_S, "force_complete_s": FORCE_S, "check_interval_s": 0.05},
    )


def _later(start: dt.datetime, seconds: float) -> dt.datetime:
    return start + dt.timedelta(seconds=seconds)


def _make_study(
    factory: sessionmaker[Session],
    received_at: dt.datetime,
    *,
    with_t2: bool = True,
    ce_positions: list[float] = STACK,
) -> tuple[int, dict[str, str]]:
    uids = {}
    with factory() as session:
        study = add_study(session, last_received_at=received_at)
        jobs.note_study_activity(session, study, new_instance=True)
        add_series(session, study, mr_header(SeriesDescription="localizer", SeriesNumber=1), [0.0, 1.0, 2.0])
        uids["t1"] = add_series(
            session, study, mr_header(SeriesDescription="t1_tse_tra", SeriesNumber=3, AcquisitionTime="100500"), STACK
        ).series_instance_uid
        if with_t2:
            uids["t2"] = add_series(
                session, study, t2_header(SeriesDescription="t2_tse_tra_fs", SeriesNumber=4, AcquisitionTime="101000"), STACK
            ).series_instance_uid
        add_series(session, study, t2_header(SeriesDescription="t2_tse_cor", SeriesNumber=5, ImageOrientationPatient=CORONAL), STACK)
        uids["ce_t1"] = add_series(
            session,
            study,
            mr_header(
                SeriesDescription="t1_tse_fs_tra_post", SeriesNumber=7, AcquisitionTime="102000", ContrastBolusAgent="Dotarem"
            ),
            ce_positions,
        ).series_instance_uid
        session.commit()
        return study.id, uids


def _job(factory: sessionmaker[Session], study_id: int) -> Job:
    with factory() as session:
        return session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.id.desc())).first()


def _study(factory: sessionmaker[Session], study_id: int) -> Study:
    with factory() as session:
        return session.get(Study, study_id)


def _events(factory: sessionmaker[Session], job_id: int) -> list[JobEvent]:
    with factory() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_complete_study_queued_after_quiet(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, uids = _make_study(session_factory, start)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    assert scheduler.check_studies(_later(start, QUIET_S / 2)) == []
    assert _job(session_factory, study_id).state is JobState.WAITING

    outcomes = scheduler.check_studies(_later(start, QUIET_S + 0.1))
    job = _job(session_factory, study_id)

    assert [outcome.action.value for outcome in outcomes] == ["queued"]
    assert job.state is JobState.QUEUED
    assert job.input_series == {"ce_t1": uids["ce_t1"], "t2": uids["t2"], "t1": uids["t1"]}
    assert _study(session_factory, study_id).state is StudyState.COMPLETE
    reason = _events(session_factory, job.id)[-1].reason
    assert "'t1_tse_fs_tra_post'" in reason
    assert "'t2_tse_tra_fs'" in reason
    assert "'t1_tse_tra'" in reason
    with session_factory() as session:
        roles = {series.series_description: series.role for series in session.scalars(select(Series))}
        evidence = session.scalars(select(Series).where(Series.series_instance_uid == uids["t2"])).one().role_evidence
    assert roles == {
        "localizer": None, "t1_tse_tra": "t1", "t2_tse_tra_fs": "t2", "t2_tse_cor": None, "t1_tse_fs_tra_post": "ce_t1"
    }
    assert evidence["findings"]["fat_suppressed"] is True


def test_new_instance_restarts_quiet_period(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, _ = _make_study(session_factory, start)
    with session_factory() as session:
        session.get(Study, study_id).last_received_at = _later(start, 0.15)
        session.commit()
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    assert scheduler.check_studies(_later(start, QUIET_S + 0.1)) == []
    assert [outcome.action.value for outcome in scheduler.check_studies(_later(start, QUIET_S + 0.2))] == ["queued"]


def test_slice_gap_waits_then_fails(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    gapped = [z for z in STACK if z != 15.0]
    study_id, uids = _make_study(session_factory, start, ce_positions=gapped)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    first = scheduler.check_studies(_later(start, QUIET_S + 0.1))
    second = scheduler.check_studies(_later(start, QUIET_S + 0.5))
    job = _job(session_factory, study_id)

    assert [outcome.action.value for outcome in first] == ["waiting"]
    assert second == []
    assert job.state is JobState.WAITING
    waiting_events = [event for event in _events(session_factory, job.id) if event.reason.startswith("study not complete")]
    assert len(waiting_events) == 1
    assert "missing slice between z=12.0 and z=18.0 mm" in waiting_events[0].reason

    outcomes = scheduler.check_studies(_later(start, FORCE_S + 0.1))
    job = _job(session_factory, study_id)

    assert [outcome.action.value for outcome in outcomes] == ["failed"]
    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "slice_gap"
    assert "'t1_tse_fs_tra_post'" in job.error_message
    assert uids["ce_t1"] in job.error_message
    assert "missing slice between z=12.0 and z=18.0 mm, expected spacing 3.0 mm" in job.error_message
    assert _study(session_factory, study_id).state is StudyState.INCOMPLETE


def test_missing_t2_fails_at_timeout(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, _ = _make_study(session_factory, start, with_t2=False)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    assert [outcome.action.value for outcome in scheduler.check_studies(_later(start, 1.0))] == ["waiting"]
    assert _job(session_factory, study_id).state is JobState.WAITING

    scheduler.check_studies(_later(start, FORCE_S))
    job = _job(session_factory, study_id)

    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "missing_role"
    assert job.error_message.startswith("Required series T2 not received within 5 s")
    assert "no series matched T2" in job.error_message
    assert "'t2_tse_cor'" in job.error_message
    assert "coronal" in job.error_message
    assert _study(session_factory, study_id).state is StudyState.INCOMPLETE


def test_late_series_queues_superseding_job(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, uids = _make_study(session_factory, start)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)
    scheduler.check_studies(_later(start, QUIET_S + 0.1))
    first_job = _job(session_factory, study_id)
    with session_factory() as session:
        job = session.get(Job, first_job.id)
        jobs.transition(session, job, JobState.RUNNING, reason="picked up by worker")
        jobs.transition(session, job, JobState.DONE, reason="results delivered")
        session.commit()

    late = _later(start, 60.0)
    with session_factory() as session:
        study = session.get(Study, study_id)
        rescan = add_series(
            session, study, t2_header(SeriesDescription="t2_tse_tra_fs", SeriesNumber=9, AcquisitionTime="103000"), STACK,
            received_at=late,
        )
        study.last_received_at = late
        jobs.note_study_activity(session, study, new_instance=True)
        session.commit()
        rescan_uid = rescan.series_instance_uid

    assert _study(session_factory, study_id).state is StudyState.RECEIVING
    assert scheduler.check_studies(_later(late, QUIET_S / 2)) == []
    outcomes = scheduler.check_studies(_later(late, QUIET_S + 0.1))
    second_job = _job(session_factory, study_id)

    assert [outcome.action.value for outcome in outcomes] == ["queued"]
    assert second_job.id != first_job.id
    assert second_job.supersedes_job_id == first_job.id
    assert second_job.run_number == 2
    assert second_job.state is JobState.QUEUED
    assert second_job.input_series["t2"] == rescan_uid
    assert second_job.input_series["ce_t1"] == uids["ce_t1"]
    with session_factory() as session:
        old_t2 = session.scalars(select(Series).where(Series.series_instance_uid == uids["t2"])).one()
    assert old_t2.role is None
    assert old_t2.role_evidence["tie_break"].startswith("not chosen")


def test_force_complete_queues_complete_study(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, _ = _make_study(session_factory, start)

    with session_factory() as session:
        job = force_complete(session, study_id, "admin", settings=_settings(tmp_path), now=_later(start, 0.01))
        session.commit()
        job_id = job.id

    assert _job(session_factory, study_id).state is JobState.QUEUED
    last = _events(session_factory, job_id)[-1]
    assert last.actor == "admin"
    assert last.reason.startswith("force-complete requested by admin")


def test_force_complete_fails_incomplete_study(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, _ = _make_study(session_factory, start, with_t2=False)

    with session_factory() as session:
        force_complete(session, study_id, "admin", settings=_settings(tmp_path), now=_later(start, 30.0))
        session.commit()
    job = _job(session_factory, study_id)

    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "missing_role"
    assert "T2" in job.error_message
    assert _events(session_factory, job.id)[-1].actor == "admin"
    with session_factory() as session, pytest.raises(ValueError, match="has no waiting job"):
        force_complete(session, study_id, "admin", settings=_settings(tmp_path))


def test_force_complete_unknown_study(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    with session_factory() as session, pytest.raises(ValueError, match="study id 999 not found"):
        force_complete(session, 999, "admin", settings=_settings(tmp_path))


def test_scheduler_thread_queues_study(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    study_id, _ = _make_study(session_factory, utcnow())
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10.0
        while _job(session_factory, study_id).state is JobState.WAITING and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()

    assert _job(session_factory, study_id).state is JobState.QUEUED


def test_dashboard_action_uses_running_settings(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    from dicom_node import actions

    study_id, _ = _make_study(session_factory, utcnow(), with_t2=False)
    settings = Settings(
        storage={"data_dir": tmp_path},
        assembly={"quiet_period_s": 600.0, "required_roles": ["ce_t1", "t1"], "check_interval_s": 0.05},
    )
    scheduler = CompletionScheduler(settings, session_factory)
    scheduler.start()
    try:
        with session_factory() as session:
            actions.force_complete(session, study_id, "admin")
            session.commit()
    finally:
        scheduler.stop()
    job = _job(session_factory, study_id)

    assert job.state is JobState.QUEUED
    assert set(job.input_series) == {"ce_t1", "t1"}


def test_malformed_geometry_fails_at_timeout(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, uids = _make_study(session_factory, start)
    with session_factory() as session:
        series = session.scalars(select(Series).where(Series.series_instance_uid == uids["t2"])).one()
        series.instances[0].frame_positions = [[0.0, 0.0]]
        session.commit()
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    first = scheduler.check_studies(_later(start, QUIET_S + 0.1))
    second = scheduler.check_studies(_later(start, QUIET_S + 0.2))
    scheduler.check_studies(_later(start, FORCE_S + 0.1))
    job = _job(session_factory, study_id)

    assert [outcome.action.value for outcome in first] == ["error"]
    assert second == []
    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "assembly_error"
    assert job.error_message.startswith("series roles of the study could not be evaluated: ValueError")

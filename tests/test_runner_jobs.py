"""The job runner runs a real pipeline step and records its outcome, on both databases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobEvent, Output
from db.session import session_scope
from db.states import DeliveryState, JobState, OutputKind
from dicom_node import actions, jobs
from dicom_node.runner import JobRunner
from tests.peers import wait_until
from tests.runner_helpers import BrokenStep, ReportStep, add_study, job_state, make_settings, queue_study

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11112}
VIEWER = {"name": "viewer", "ae_title": "VIEWER", "host": "127.0.0.1", "port": 11113, "send_failure_report": False}


def _events(session: Session, job_id: int) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_runner_done_without_destinations(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    step = ReportStep()

    state = JobRunner(settings, session_factory, step).run_one(job_id)

    assert state is JobState.DONE
    context = step.contexts[0]
    assert set(context.series) == {"ce_t1", "t2", "t1"}
    assert context.role_evidence == {"CE-T1": "ce_t1 by test rule", "T2": "t2 by test rule", "T1": "t1 by test rule"}
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        outputs = session.scalars(select(Output).where(Output.job_id == job_id)).all()
        assert len(outputs) == 1
        path = Path(outputs[0].path)
        assert path == settings.storage.outputs_dir / str(job_id) / f"sr_{outputs[0].sop_instance_uid}.dcm"
        assert dcmread(path).SOPInstanceUID == outputs[0].sop_instance_uid
        assert outputs[0].kind is OutputKind.SR
        assert job.result_summary["instance_numbers"] == {role: [1, 2, 3] for role in ("ce_t1", "t2", "t1")}
        assert "read" in job.result_summary["stage_seconds"]
        assert job.input_series == {role: series.series_instance_uid for role, series in context.series.items()}
        assert [e.to_state for e in _events(session, job_id)][-2:] == ["running", "done"]
        assert "no destinations configured" in _events(session, job_id)[-1].reason
    assert list(path.parent.glob(".partial-*")) == []


def test_runner_queues_delivery_per_destination(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS, VIEWER])
    job_id = queue_study(session_factory, settings)

    assert JobRunner(settings, session_factory, ReportStep()).run_one(job_id) is JobState.DELIVERING

    with session_scope(session_factory) as session:
        deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)).all()
        assert [d.destination for d in deliveries] == ["pacs", "viewer"]
        assert all(d.state is DeliveryState.PENDING for d in deliveries)
        assert deliveries[0].output_kinds == ["sr"]
        assert (deliveries[1].ae_title, deliveries[1].port) == ("VIEWER", 11113)
        assert "sending to pacs, viewer" in _events(session, job_id)[-1].reason


def test_input_error_ends_failed_input(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings, roles=("t2", "t1"))

    assert JobRunner(settings, session_factory, ReportStep()).run_one(job_id) is JobState.FAILED_INPUT

    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert job.reason_code == "missing_role"
        assert job.error_message == "no CE-T1 series in the study"
        assert job.hint == "send the contrast-enhanced T1 series"
        assert job.finished_at is not None
        assert session.scalars(select(Delivery)).all() == []
        assert session.scalars(select(Output)).all() == []
        assert _events(session, job_id)[-1].reason == "input cannot be processed: no CE-T1 series in the study"


def test_failure_report_goes_where_requested(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS, VIEWER])
    job_id = queue_study(session_factory, settings, roles=("t2",))

    state = JobRunner(settings, session_factory, ReportStep(failure_report=True)).run_one(job_id)

    assert state is JobState.FAILED_INPUT
    with session_scope(session_factory) as session:
        deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).all()
        outputs = session.scalars(select(Output).where(Output.job_id == job_id)).all()
        assert [d.destination for d in deliveries] == ["pacs"]
        assert deliveries[0].output_kinds == ["failure_sr"]
        assert [o.kind for o in outputs] == [OutputKind.FAILURE_SR]
        assert Path(outputs[0].path).is_file()
        assert session.get(Job, job_id).reason_code == "missing_role"


def test_step_exception_ends_failed(
    tmp_path: Path, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings)

    with caplog.at_level(logging.ERROR, logger="dicom_node.runner"):
        state = JobRunner(settings, session_factory, BrokenStep()).run_one(job_id)

    assert state is JobState.FAILED
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert job.error_message == f"RuntimeError: model file unreadable in job {job_id}"
        assert job.reason_code == "internal_error"
        assert session.scalars(select(Delivery)).all() == []
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == f"job {job_id} failed"
    assert errors[0].exc_info is not None
    assert "RUNNER-TEST" not in caplog.text


def test_superseding_run_marks_old_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    step = ReportStep()
    runner = JobRunner(settings, session_factory, step)
    first_id = queue_study(session_factory, settings)
    assert runner.run_one(first_id) is JobState.DONE

    # A late series arrives: the receiver opens a new run of the same study.
    with session_scope(session_factory) as session:
        study = session.get(Job, first_id).study
        add_study(session, settings.storage.resolved_spool_dir, roles=("t1",), slices=4, study_uid=study.study_instance_uid)
        second = jobs.note_study_activity(session, study, new_instance=True)
        jobs.transition(session, second, JobState.QUEUED, reason="study complete")
        second_id = second.id

    assert runner.run_one(second_id) is JobState.DONE

    with session_scope(session_factory) as session:
        first = session.get(Job, first_id)
        first_output = session.scalars(select(Output).where(Output.job_id == first_id)).one()
        assert first.state is JobState.SUPERSEDED
        assert _events(session, first_id)[-1].reason == f"superseded by job {second_id} (run 2)"
    prior = step.contexts[1].superseded_outputs
    assert [p.sop_instance_uid for p in prior] == [first_output.sop_instance_uid]
    # The role with two series gets the larger one.
    assert len(step.contexts[1].series["t1"].paths) == 4


def test_cancel_while_running_discards_results(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])

    def cancel(context) -> None:
        with session_scope(session_factory) as session:
            actions.cancel_job(session, context.job_id, "admin")

    job_id = queue_study(session_factory, settings)
    state = JobRunner(settings, session_factory, ReportStep(during_run=cancel)).run_one(job_id)

    assert state is JobState.CANCELLED
    with session_scope(session_factory) as session:
        assert session.scalars(select(Output)).all() == []
        assert session.scalars(select(Delivery)).all() == []
        reasons = [e.reason for e in _events(session, job_id)]
        assert reasons[-2:] == ["cancelled by admin", "results discarded because the job became cancelled while it ran"]
    assert not (settings.storage.outputs_dir / str(job_id)).exists()


def test_retry_reruns_failed_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings)
    assert JobRunner(settings, session_factory, BrokenStep()).run_one(job_id) is JobState.FAILED

    with session_scope(session_factory) as session:
        actions.retry_job(session, job_id, "admin")
    assert JobRunner(settings, session_factory, ReportStep()).run_one(job_id) is JobState.DELIVERING

    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert job.attempts == 2
        assert job.error_message is None
        retry_event = [e for e in _events(session, job_id) if e.reason == "retry requested by admin"]
        assert [e.actor for e in retry_event] == ["admin"]


def test_retry_rejects_running_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match=f"job {job_id} is queued and cannot be retried"):
            actions.retry_job(session, job_id, "admin")


def test_run_one_rejects_unqueued_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    runner = JobRunner(settings, session_factory, ReportStep())
    runner.run_one(job_id)

    with pytest.raises(ValueError, match=f"job {job_id} is done, not queued"):
        runner.run_one(job_id)
    with pytest.raises(ValueError, match="job 999999 not found"):
        runner.run_one(999999)


def test_threads_recover_and_run_jobs(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    queued = [queue_study(session_factory, settings) for _ in range(3)]
    # A job a crashed node left running.
    with session_scope(session_factory) as session:
        interrupted = jobs.claim_next_queued(session, "crashed-node").id

    runner = JobRunner(settings, session_factory, ReportStep(), workers=2, poll_interval_s=0.05)
    runner.start()
    try:
        wait_until(
            lambda: all(job_state(session_factory, job_id) is JobState.DONE for job_id in queued),
            60,
            "the worker threads to finish every job",
        )
    finally:
        runner.stop(timeout_s=30)

    with session_scope(session_factory) as session:
        job = session.get(Job, interrupted)
        assert job.attempts == 2
        assert job.worker != "crashed-node"
        reasons = [e.reason for e in _events(session, interrupted)]
        assert "node restarted while the job was running; queued again" in reasons


def test_heartbeat_refreshes_while_running(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    beats: list[object] = []

    def wait_for_heartbeat(context) -> None:
        with session_scope(session_factory) as session:
            first = session.get(Job, context.job_id).heartbeat_at

        def refreshed() -> bool:
            with session_scope(session_factory) as session:
                current = session.get(Job, context.job_id).heartbeat_at
            beats.append(current)
            return current != first

        wait_until(refreshed, 30, "a heartbeat from the running job")

    job_id = queue_study(session_factory, settings)
    runner = JobRunner(settings, session_factory, ReportStep(during_run=wait_for_heartbeat), heartbeat_interval_s=0.05)

    assert runner.run_one(job_id) is JobState.DONE
    assert len(set(beats)) >= 2

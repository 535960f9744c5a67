"""The job store keeps the job life cycle, its events and exclusive claims, on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobEvent, Study
from db.session import session_scope
from db.states import DeliveryState, JobState, StudyState
from dicom_node import jobs


def _new_study(session: Session, uid: str = "1.2.826.0.1.3680043.8.498.1") -> Study:
    study = Study(study_instance_uid=uid, notes={})
    session.add(study)
    session.flush()
    return study


def _queued_job(session: Session, uid: str) -> Job:
    study = _new_study(session, uid)
    job = jobs.note_study_activity(session, study, new_instance=True)
    jobs.transition(session, job, JobState.QUEUED, reason="study complete")
    return job


def _events(session: Session, job_id: int) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_first_instance_opens_waiting_job(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        study = _new_study(session)
        job = jobs.note_study_activity(session, study, new_instance=True)
        job_id = job.id

    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        events = _events(session, job_id)
        assert job.state is JobState.WAITING
        assert job.run_number == 1
        assert job.supersedes_job_id is None
        assert [e.to_state for e in events] == ["waiting"]
        assert events[0].reason == "first instance received"


def test_duplicate_instance_keeps_same_job(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        study = _new_study(session)
        first = jobs.note_study_activity(session, study, new_instance=True)
        jobs.transition(session, first, JobState.QUEUED, reason="study complete")
        again = jobs.note_study_activity(session, study, new_instance=False)
        assert again.id == first.id
        assert session.scalars(select(Job)).all() == [first]


def test_late_instance_opens_superseding_job(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        study = _new_study(session)
        first = jobs.note_study_activity(session, study, new_instance=True)
        jobs.transition(session, first, JobState.QUEUED, reason="study complete")
        study.state = StudyState.COMPLETE
        second = jobs.note_study_activity(session, study, new_instance=True)

        assert second.id != first.id
        assert second.state is JobState.WAITING
        assert second.run_number == 2
        assert second.supersedes_job_id == first.id
        assert study.state is StudyState.RECEIVING
        assert f"after job {first.id}" in _events(session, second.id)[0].reason


def test_transition_records_event_and_times(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        job = _queued_job(session, "1.2.3.10")
        jobs.transition(session, job, JobState.RUNNING, reason="picked up", actor="worker-a")
        jobs.transition(
            session,
            job,
            JobState.FAILED_INPUT,
            reason="a series is missing",
            reason_code="missing_role",
            error_message="no T2 series",
            hint="send the T2 series",
        )
        job_id = job.id

    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        events = _events(session, job_id)
        assert [(e.from_state, e.to_state) for e in events] == [
            (None, "waiting"),
            ("waiting", "queued"),
            ("queued", "running"),
            ("running", "failed_input"),
        ]
        assert events[2].actor == "worker-a"
        assert events[3].reason == "a series is missing"
        assert job.attempts == 1
        assert job.queued_at is not None
        assert job.started_at is not None
        assert job.finished_at is not None
        assert (job.reason_code, job.error_message, job.hint) == ("missing_role", "no T2 series", "send the T2 series")


def test_requeue_clears_failure_fields(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        job = _queued_job(session, "1.2.3.11")
        jobs.transition(session, job, JobState.RUNNING, reason="picked up")
        jobs.transition(session, job, JobState.FAILED, reason="crash", error_message="boom", reason_code="internal")
        jobs.transition(session, job, JobState.QUEUED, reason="retry requested", actor="admin")

        assert job.state is JobState.QUEUED
        assert job.finished_at is None
        assert job.error_message is None
        assert job.reason_code is None


def test_illegal_transition_names_both_states(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        study = _new_study(session)
        job = jobs.note_study_activity(session, study, new_instance=True)

        with pytest.raises(jobs.TransitionError, match=r"cannot go from waiting to done; allowed: \['cancelled'"):
            jobs.transition(session, job, JobState.DONE, reason="skip ahead")
        assert job.state is JobState.WAITING
        assert len(_events(session, job.id)) == 1


def test_superseded_job_allows_no_transition(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        job = _queued_job(session, "1.2.3.12")
        jobs.transition(session, job, JobState.SUPERSEDED, reason="newer run")

        with pytest.raises(jobs.TransitionError, match="from superseded to queued; allowed: none"):
            jobs.transition(session, job, JobState.QUEUED, reason="retry")


def test_claim_takes_oldest_queued_job(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        older = _queued_job(session, "1.2.3.20").id
        newer = _queued_job(session, "1.2.3.21").id

    with session_scope(session_factory) as session:
        claimed = jobs.claim_next_queued(session, "worker-a")
        assert claimed.id == older
        assert claimed.state is JobState.RUNNING
        assert claimed.worker == "worker-a"
        assert claimed.heartbeat_at is not None

    with session_scope(session_factory) as session:
        assert jobs.claim_next_queued(session, "worker-b").id == newer
    with session_scope(session_factory) as session:
        assert jobs.claim_next_queued(session, "worker-b") is None


def test_claim_survives_losing_whole_batch(session_factory: sessionmaker[Session], db_engine: Engine) -> None:
    with session_scope(session_factory) as session:
        ids = [_queued_job(session, f"1.2.3.3{i}").id for i in range(8)]
    taken_elsewhere = ids[:6]

    # Another worker's connection takes the first candidates right after the
    # claim's candidate query ran, so every compare-and-set of that batch loses.
    def take_first_batch(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT JOBS.ID") and not fired:
            fired.append(True)
            with db_engine.connect() as other:
                other.execute(
                    update(Job).where(Job.id.in_(taken_elsewhere)).values(state=JobState.RUNNING, worker="worker-b")
                )
                other.commit()

    fired: list[bool] = []
    event.listen(db_engine, "after_cursor_execute", take_first_batch)
    try:
        with session_scope(session_factory) as session:
            claimed = jobs.claim_next_queued(session, "worker-a")
    finally:
        event.remove(db_engine, "after_cursor_execute", take_first_batch)

    assert fired == [True]
    assert claimed is not None
    assert claimed.id == ids[6]


def test_concurrent_claims_never_share_job(session_factory: sessionmaker[Session]) -> None:
    job_count, worker_count = 12, 4
    with session_scope(session_factory) as session:
        expected = {_queued_job(session, f"1.2.3.4{i:02d}").id for i in range(job_count)}

    claims: dict[str, list[int]] = {f"worker-{n}": [] for n in range(worker_count)}
    errors: list[BaseException] = []
    start = threading.Barrier(worker_count)

    def claim_all(worker: str) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(job_count + 1):
                with session_scope(session_factory) as session:
                    job = jobs.claim_next_queued(session, worker)
                    if job is None:
                        return
                    claims[worker].append(job.id)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(worker,)) for worker in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    claimed = [job_id for ids in claims.values() for job_id in ids]
    assert sorted(claimed) == sorted(expected)
    with session_scope(session_factory) as session:
        for job_id in expected:
            job = session.get(Job, job_id)
            assert job.attempts == 1
            assert job.worker in claims
            assert job_id in claims[job.worker]


def test_recover_requeues_running_jobs(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        running = _queued_job(session, "1.2.3.50")
        jobs.transition(session, running, JobState.RUNNING, reason="picked up")
        delivering = _queued_job(session, "1.2.3.51")
        jobs.transition(session, delivering, JobState.RUNNING, reason="picked up")
        jobs.transition(session, delivering, JobState.DELIVERING, reason="results written")
        delivery = Delivery(
            job_id=delivering.id,
            destination="pacs",
            ae_title="PACS",
            host="127.0.0.1",
            port=104,
            state=DeliveryState.IN_PROGRESS,
        )
        session.add(delivery)
        untouched = _queued_job(session, "1.2.3.52")
        ids = (running.id, delivering.id, untouched.id, delivery.id)

    with session_scope(session_factory) as session:
        recovered = jobs.recover_interrupted(session)
        assert recovered == [ids[0]]

    with session_scope(session_factory) as session:
        assert session.get(Job, ids[0]).state is JobState.QUEUED
        assert session.get(Job, ids[1]).state is JobState.DELIVERING
        assert session.get(Job, ids[2]).state is JobState.QUEUED
        assert session.get(Delivery, ids[3]).state is DeliveryState.PENDING
        assert "restarted while the job was running" in _events(session, ids[0])[-1].reason
        assert "restarted during delivery to pacs" in _events(session, ids[1])[-1].reason


def test_recover_with_nothing_interrupted(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        _queued_job(session, "1.2.3.60")
    with session_scope(session_factory) as session:
        assert jobs.recover_interrupted(session) == []


def test_requeue_leaves_deliveries_alone(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        job = _queued_job(session, "1.2.3.70")
        jobs.transition(session, job, JobState.RUNNING, reason="picked up")
        delivery = Delivery(
            job_id=job.id, destination="pacs", ae_title="PACS", host="127.0.0.1", port=104, state=DeliveryState.IN_PROGRESS
        )
        session.add(delivery)
        session.flush()
        ids = (job.id, delivery.id)

    with session_scope(session_factory) as session:
        assert jobs.requeue_running_jobs(session) == [ids[0]]
    with session_scope(session_factory) as session:
        assert session.get(Delivery, ids[1]).state is DeliveryState.IN_PROGRESS
        assert jobs.reopen_deliveries_in_flight(session) == [ids[1]]
    with session_scope(session_factory) as session:
        assert session.get(Delivery, ids[1]).state is DeliveryState.PENDING

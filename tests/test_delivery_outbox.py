"""The outbox delivers job outputs to real peers, retries transient failures and stops on permanent ones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import DeliverySettings, Settings
from db.migrate import upgrade_to_head
from db.models import Delivery, DeliveryAttempt, Job, JobEvent, Output, utcnow
from db.session import create_db_engine, make_session_factory, session_scope
from db.states import DeliveryState, JobState
from dicom_node import actions
from dicom_node.outbox import OutboxWorker, as_utc, backoff_seconds
from dicom_node.runner import JobRunner
from tests.conftest import free_port
from tests.delivery_peers import pynetdicom_scp, storescp
from tests.peers import wait_until
from tests.runner_helpers import ReportStep, make_settings, queue_study

pytestmark = pytest.mark.peers


@pytest.fixture
def sqlite_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated SQLite database; the peer tests need only one backend."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _destination(name: str, ae_title: str, port: int, **options: object) -> dict[str, object]:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port, **options}


def _run_job(settings: Settings, factory: sessionmaker[Session], **study_options: object) -> int:
    job_id = queue_study(factory, settings, **study_options)
    JobRunner(settings, factory, ReportStep(failure_report=True)).run_one(job_id)
    return job_id


def _delivery(factory: sessionmaker[Session], job_id: int, destination: str) -> Delivery:
    with session_scope(factory) as session:
        return session.scalars(
            select(Delivery).where(Delivery.job_id == job_id, Delivery.destination == destination)
        ).one()


def _attempts(factory: sessionmaker[Session], delivery_id: int) -> list[DeliveryAttempt]:
    with session_scope(factory) as session:
        return list(
            session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id))
        )


def _output_uids(factory: sessionmaker[Session], job_id: int) -> list[str]:
    with session_scope(factory) as session:
        return sorted(session.scalars(select(Output.sop_instance_uid).where(Output.job_id == job_id)))


def _last_reason(factory: sessionmaker[Session], job_id: int) -> str:
    with session_scope(factory) as session:
        return session.scalars(
            select(JobEvent.reason).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(1)
        ).one()


def _job(factory: sessionmaker[Session], job_id: int) -> Job:
    with session_scope(factory) as session:
        return session.get(Job, job_id)


def test_backoff_doubles_up_to_cap() -> None:
    policy = DeliverySettings(backoff_initial_s=5.0, backoff_max_s=60.0)
    assert [backoff_seconds(policy, attempts) for attempts in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert backoff_seconds(policy, 10_000) == 60.0


def test_delivery_to_storescp_finishes_job(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received") as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory)
        outbox = OutboxWorker(settings, sqlite_factory)

        assert outbox.process_due() == 1

        assert peer.received_sop_instance_uids() == _output_uids(sqlite_factory, job_id)
    delivery = _delivery(sqlite_factory, job_id, "pacs")
    assert delivery.state is DeliveryState.DELIVERED
    assert delivery.delivered_at is not None
    assert [a.outcome for a in _attempts(sqlite_factory, delivery.id)] == ["delivered"]
    assert _job(sqlite_factory, job_id).state is JobState.DONE
    assert outbox.process_due() == 0


def test_down_destination_retried_then_delivered_once(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path / "node", destinations=[_destination("pacs", "STORESCP", port)], backoff_initial_s=30.0, backoff_max_s=120.0
    )
    job_id = _run_job(settings, sqlite_factory)
    outbox = OutboxWorker(settings, sqlite_factory)
    start = utcnow()

    # The destination is down: connection refused.
    assert outbox.process_due(start) == 1
    delivery = _delivery(sqlite_factory, job_id, "pacs")
    assert delivery.state is DeliveryState.RETRY_WAIT
    assert delivery.attempts == 1
    assert as_utc(delivery.next_attempt_at) == start + dt.timedelta(seconds=30)
    assert "cannot connect to 127.0.0.1" in delivery.last_error
    assert _last_reason(sqlite_factory, job_id).endswith("retrying in 30 s")
    assert _job(sqlite_factory, job_id).state is JobState.DELIVERING

    # Still down at the next due time: the wait doubles.
    assert outbox.process_due(start + dt.timedelta(seconds=10)) == 0
    assert outbox.process_due(start + dt.timedelta(seconds=31)) == 1
    delivery = _delivery(sqlite_factory, job_id, "pacs")
    assert delivery.attempts == 2
    assert as_utc(delivery.next_attempt_at) == start + dt.timedelta(seconds=31 + 60)

    with storescp(tmp_path / "received", port=port) as peer:
        assert outbox.process_due(start + dt.timedelta(seconds=92)) == 1
        assert outbox.process_due(start + dt.timedelta(seconds=1000)) == 0
        received = peer.received_sop_instance_uids()

    assert received == _output_uids(sqlite_factory, job_id)
    assert len(received) == 1
    delivery = _delivery(sqlite_factory, job_id, "pacs")
    assert delivery.state is DeliveryState.DELIVERED
    assert [a.outcome for a in _attempts(sqlite_factory, delivery.id)] == ["transient", "transient", "delivered"]
    assert _job(sqlite_factory, job_id).state is JobState.DONE


def test_unreachable_peer_postpones_its_queue(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    port = free_port()
    with storescp(tmp_path / "viewer") as viewer:
        settings = make_settings(
            tmp_path / "node",
            destinations=[_destination("pacs", "STORESCP", port), _destination("viewer", viewer.ae_title, viewer.port)],
            backoff_initial_s=30.0,
            backoff_max_s=120.0,
        )
        job_ids = [_run_job(settings, sqlite_factory) for _ in range(3)]
        outbox = OutboxWorker(settings, sqlite_factory)
        start = utcnow()

        # One connection attempt to the unreachable peer, then the viewer's three.
        assert outbox.process_due(start) == 4
        assert len(viewer.received_files()) == 3

    pacs = [_delivery(sqlite_factory, job_id, "pacs") for job_id in job_ids]
    assert [d.attempts for d in pacs] == [1, 0, 0]
    assert [d.state for d in pacs] == [DeliveryState.RETRY_WAIT, DeliveryState.PENDING, DeliveryState.PENDING]
    assert {as_utc(d.next_attempt_at) for d in pacs} == {start + dt.timedelta(seconds=30)}

    with storescp(tmp_path / "pacs", port=port) as peer:
        assert outbox.process_due(start + dt.timedelta(seconds=29)) == 0
        assert outbox.process_due(start + dt.timedelta(seconds=31)) == 3
        assert len(peer.received_files()) == 3
    assert all(_job(sqlite_factory, job_id).state is JobState.DONE for job_id in job_ids)


def test_rejecting_destination_tried_once(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received", extra=("--refuse",)) as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory)
        outbox = OutboxWorker(settings, sqlite_factory)
        start = utcnow()

        assert outbox.process_due(start) == 1
        assert outbox.process_due(start + dt.timedelta(hours=1)) == 0
        assert peer.received_files() == []

    delivery = _delivery(sqlite_factory, job_id, "pacs")
    attempts = _attempts(sqlite_factory, delivery.id)
    assert delivery.state is DeliveryState.FAILED
    assert len(attempts) == 1
    assert attempts[0].outcome == "permanent"
    assert attempts[0].status == 0x01
    assert _job(sqlite_factory, job_id).state is JobState.DELIVERY_FAILED
    with session_scope(sqlite_factory) as session:
        reasons = list(session.scalars(select(JobEvent.reason).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
    assert reasons[-2] == (
        "delivery to pacs failed: association rejected (no reason given); permanent, not retried"
    )
    assert reasons[-1] == "delivery failed for pacs"


def test_unknown_calling_ae_not_retried(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with pynetdicom_scp(require_calling_aet=["SOMEONE_ELSE"]) as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory)
        assert OutboxWorker(settings, sqlite_factory).process_due() == 1
        assert peer.received == []

    delivery = _delivery(sqlite_factory, job_id, "pacs")
    assert delivery.state is DeliveryState.FAILED
    assert "calling AE title not recognised" in delivery.last_error
    assert len(_attempts(sqlite_factory, delivery.id)) == 1


def test_out_of_resources_retried_until_limit(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with pynetdicom_scp(statuses=[0xA700]) as peer:
        settings = make_settings(
            tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)], max_attempts=3
        )
        job_id = _run_job(settings, sqlite_factory)
        outbox = OutboxWorker(settings, sqlite_factory)
        later = utcnow()
        for _ in range(3):
            assert outbox.process_due(later) == 1
            later += dt.timedelta(hours=1)
        assert outbox.process_due(later) == 0
        sent = list(peer.received)

    delivery = _delivery(sqlite_factory, job_id, "pacs")
    attempts = _attempts(sqlite_factory, delivery.id)
    assert [a.status for a in attempts] == [0xA700] * 3
    assert [a.outcome for a in attempts] == ["transient"] * 3
    # Every attempt sends the same SOP instance.
    assert len(set(sent)) == 1
    assert len(sent) == 3
    assert delivery.state is DeliveryState.FAILED
    assert _last_reason(sqlite_factory, job_id) == "delivery failed for pacs"
    assert _job(sqlite_factory, job_id).state is JobState.DELIVERY_FAILED


def test_admin_retry_delivers_failed_delivery(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with pynetdicom_scp(statuses=[0xC000, 0x0000]) as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory)
        outbox = OutboxWorker(settings, sqlite_factory)
        assert outbox.process_due() == 1
        assert _job(sqlite_factory, job_id).state is JobState.DELIVERY_FAILED

        delivery_id = _delivery(sqlite_factory, job_id, "pacs").id
        with session_scope(sqlite_factory) as session:
            actions.retry_delivery(session, delivery_id, "alice")
        assert _job(sqlite_factory, job_id).state is JobState.DELIVERING
        assert outbox.process_due() == 1

    assert _delivery(sqlite_factory, job_id, "pacs").state is DeliveryState.DELIVERED
    assert _job(sqlite_factory, job_id).state is JobState.DONE
    with session_scope(sqlite_factory) as session:
        retry = session.scalars(select(JobEvent).where(JobEvent.reason == "delivery to pacs retried by alice")).one()
        assert retry.actor == "alice"
        assert (retry.from_state, retry.to_state) == ("delivery_failed", "delivering")
    with session_scope(sqlite_factory) as session:
        with pytest.raises(ValueError, match=f"delivery {delivery_id} is delivered; only failed"):
            actions.retry_delivery(session, delivery_id, "alice")


def test_failure_report_keeps_failed_input(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received") as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory, roles=("t2", "t1"))
        assert OutboxWorker(settings, sqlite_factory).process_due() == 1
        received = peer.received_sop_instance_uids()

    assert received == _output_uids(sqlite_factory, job_id)
    assert _delivery(sqlite_factory, job_id, "pacs").state is DeliveryState.DELIVERED
    assert _job(sqlite_factory, job_id).state is JobState.FAILED_INPUT


def test_cancelled_job_delivery_not_sent(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received") as peer:
        settings = make_settings(tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)])
        job_id = _run_job(settings, sqlite_factory)
        with session_scope(sqlite_factory) as session:
            actions.cancel_job(session, job_id, "bob")
        assert OutboxWorker(settings, sqlite_factory).process_due() == 0
        assert peer.received_files() == []

    assert _delivery(sqlite_factory, job_id, "pacs").state is DeliveryState.CANCELLED
    assert _last_reason(sqlite_factory, job_id) == "1 pending deliveries cancelled: cancelled by bob"


def test_outbox_thread_delivers_due_rows(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received") as peer:
        settings = make_settings(
            tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)], poll_interval_s=0.05
        )
        job_ids = [_run_job(settings, sqlite_factory) for _ in range(2)]
        outbox = OutboxWorker(settings, sqlite_factory)
        outbox.start()
        try:
            wait_until(
                lambda: all(_job(sqlite_factory, job_id).state is JobState.DONE for job_id in job_ids),
                30,
                "the outbox thread to deliver both jobs",
            )
        finally:
            outbox.stop(timeout_s=30)
        assert len(peer.received_files()) == 2


def test_outbox_start_resends_interrupted_delivery(tmp_path: Path, sqlite_factory: sessionmaker[Session]) -> None:
    with storescp(tmp_path / "received") as peer:
        settings = make_settings(
            tmp_path / "node", destinations=[_destination("pacs", peer.ae_title, peer.port)], poll_interval_s=0.05
        )
        job_id = _run_job(settings, sqlite_factory)
        # A node that stopped in the middle of the send left the row in progress.
        with session_scope(sqlite_factory) as session:
            delivery = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).one()
            delivery.state = DeliveryState.IN_PROGRESS

        outbox = OutboxWorker(settings, sqlite_factory)
        outbox.start()
        try:
            wait_until(lambda: _job(sqlite_factory, job_id).state is JobState.DONE, 30, "the interrupted delivery")
        finally:
            outbox.stop(timeout_s=30)
        received = peer.received_sop_instance_uids()

    assert received == _output_uids(sqlite_factory, job_id)
    with session_scope(sqlite_factory) as session:
        reasons = list(session.scalars(select(JobEvent.reason).where(JobEvent.job_id == job_id)))
    assert "node restarted during delivery to pacs; sending again" in reasons

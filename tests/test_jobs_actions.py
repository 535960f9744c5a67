"""Administrator actions record the actor and keep jobs and deliveries consistent, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobEvent
from db.session import session_scope
from db.states import DeliveryState, JobState
from dicom_node import actions
from dicom_node.runner import JobRunner
from tests.runner_helpers import ReportStep, make_settings, queue_study

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11112}


def _reasons(session: Session, job_id: int) -> list[tuple[str, str]]:
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    return [(event.reason, event.actor) for event in events]


def test_cancel_job_cancels_its_deliveries(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings)
    JobRunner(settings, session_factory, ReportStep()).run_one(job_id)

    with session_scope(session_factory) as session:
        actions.cancel_job(session, job_id, "carol")

    with session_scope(session_factory) as session:
        assert session.get(Job, job_id).state is JobState.CANCELLED
        assert session.scalars(select(Delivery.state)).all() == [DeliveryState.CANCELLED]
        assert _reasons(session, job_id)[-2:] == [
            ("cancelled by carol", "carol"),
            ("1 pending deliveries cancelled: cancelled by carol", "carol"),
        ]


def test_cancel_finished_job_rejected(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    JobRunner(settings, session_factory, ReportStep()).run_one(job_id)

    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match=f"job {job_id} is done and has finished; there is nothing to cancel"):
            actions.cancel_job(session, job_id, "carol")


def test_retry_cancels_pending_failure_report(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings, roles=("t2",))
    assert JobRunner(settings, session_factory, ReportStep(failure_report=True)).run_one(job_id) is JobState.FAILED_INPUT

    with session_scope(session_factory) as session:
        actions.retry_job(session, job_id, "dave")

    with session_scope(session_factory) as session:
        assert session.get(Job, job_id).state is JobState.QUEUED
        assert session.scalars(select(Delivery.state)).all() == [DeliveryState.CANCELLED]
        assert _reasons(session, job_id)[-1] == ("retry requested by dave", "dave")


def test_retry_delivery_of_cancelled_job_rejected(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, destinations=[PACS])
    job_id = queue_study(session_factory, settings)
    JobRunner(settings, session_factory, ReportStep()).run_one(job_id)
    with session_scope(session_factory) as session:
        actions.cancel_job(session, job_id, "carol")
        delivery_id = session.scalars(select(Delivery.id)).one()

    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match=f"job {job_id} is cancelled; retry the job instead"):
            actions.retry_delivery(session, delivery_id, "carol")


def test_unknown_ids_rejected(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match="job 4242 not found"):
            actions.retry_job(session, 4242, "erin")
        with pytest.raises(ValueError, match="job 4242 not found"):
            actions.cancel_job(session, 4242, "erin")
        with pytest.raises(ValueError, match="delivery 4242 not found"):
            actions.retry_delivery(session, 4242, "erin")


def test_force_complete_needs_waiting_job(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path)
    job_id = queue_study(session_factory, settings)
    with session_scope(session_factory) as session:
        study_id = session.get(Job, job_id).study_id

    with session_scope(session_factory) as session:
        with pytest.raises(ValueError, match=f"study id {study_id} has no waiting job"):
            actions.force_complete(session, study_id, "erin")

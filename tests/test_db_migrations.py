"""Alembic migrations go up and down on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from db.migrate import downgrade_to, upgrade_to_head
from db.models import Base, Job, JobEvent, Study
from db.session import create_db_engine, make_session_factory, session_scope
from db.states import JobState

EXPECTED_TABLES = {
    "studies",
    "series",
    "instances",
    "jobs",
    "job_events",
    "outputs",
    "deliveries",
    "delivery_attempts",
}


def test_upgrade_creates_every_model_table(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)

    tables = set(inspect(engine).get_table_names())
    assert EXPECTED_TABLES <= tables
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_downgrade_to_base_drops_tables(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    downgrade_to(engine, "base")

    remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert remaining == set()

    upgrade_to_head(engine)
    assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_job_round_trip_keeps_enum_values(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    factory = make_session_factory(engine)

    with session_scope(factory) as session:
        study = Study(study_instance_uid="1.2.3.4", notes={})
        job = Job(study=study, state=JobState.QUEUED, input_series={}, result_summary={})
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, to_state="queued", reason="study complete"))

    with session_scope(factory) as session:
        stored = session.query(Job).one()
        assert stored.state is JobState.QUEUED
        assert stored.events[0].reason == "study complete"
    engine.dispose()


def test_sqlite_uses_write_ahead_log(tmp_path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    engine.dispose()

"""Engines and sessions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_connection, _record) -> None:
    # WAL lets the dashboard read while the SCP writes. synchronous=FULL
    # makes each commit durable across power loss, which the C-STORE
    # handler relies on before it returns success.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url``, creating the SQLite file's folder if needed.

    Raises
    ------
    ValueError
        If ``url`` names a backend other than SQLite or PostgreSQL.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    if backend == "postgresql":
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise ValueError(
        f"database URL backend {backend!r} is not supported; use sqlite:///PATH "
        "or postgresql://USER@HOST/DB"
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

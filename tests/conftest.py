"""Fixtures shared by the whole suite: test data, databases and free ports."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade_to_head
from db.session import create_db_engine, make_session_factory

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("OTSCC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def shared_data_dir() -> Path:
    """Folder of the public test data: ``OTSCC_TEST_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("OTSCC_TEST_DATA", REPOSITORY_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """The public test data folder; skips the test where it is absent."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"public test data not found at {folder}; set OTSCC_TEST_DATA to its folder")
    return folder


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_schema_url(schema: str) -> str:
    """URL of the test PostgreSQL database with ``search_path`` set to ``schema``."""
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Whether the PostgreSQL test server accepts a query."""
    try:
        engine = create_db_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means the server cannot be used
        return False
    return True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once on SQLite and once on PostgreSQL (in a fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return

    if os.environ.get("CI") and not request.getfixturevalue("postgres_available"):
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}; start it before the suite")
    if not request.getfixturevalue("postgres_available"):
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_db_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database, on each backend."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    """A session factory on a migrated database, on each backend."""
    return make_session_factory(db_engine)


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """Undo logging set-up done by a test, such as the CLI's handlers.

    A handler left on the root logger keeps pytest's captured stream of the
    test that added it, and later tests then fail writing to a closed file.
    """
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)

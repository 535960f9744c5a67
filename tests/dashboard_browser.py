"""Fixtures for driving the dashboard with Debian's chromium through Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.migrate import upgrade_to_head
from db.session import create_db_engine, make_session_factory
from dicom_node.dashboard import DashboardServer
from tests.dashboard_helpers import SeededIds, seed_database

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"


@dataclass
class RunningDashboard:
    """A dashboard server on a seeded SQLite database."""

    server: DashboardServer
    settings: Settings
    session_factory: sessionmaker[Session]
    ids: SeededIds

    @property
    def url(self) -> str:
        """Base URL, such as ``http://127.0.0.1:40123``."""
        return self.server.url


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it where the CI environment variable is set."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def launch_chromium() -> Iterator[object]:
    """Yield a Playwright browser on Debian's chromium, skipping where it is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright for Python is not installed; install it with pip install playwright")
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        skip_or_fail(f"chromium not found at {CHROMIUM}; install Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def start_dashboard(folder: Path, dashboard: dict, *, filler: int = 60) -> Iterator[RunningDashboard]:
    """Seed a database under ``folder`` and serve a dashboard on it with ``dashboard`` settings."""
    settings = Settings.model_validate(
        {"storage": {"data_dir": str(folder), "min_free_mb": 0}, "dashboard": {"port": 0, **dashboard}}
    )
    engine = create_db_engine(f"sqlite:///{folder / 'jobs.db'}")
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    ids = seed_database(factory, settings.storage.resolved_spool_dir, settings.storage.outputs_dir, filler=filler)
    server = DashboardServer(settings, factory)
    server.start()
    try:
        yield RunningDashboard(server, settings, factory, ids)
    finally:
        server.stop()
        engine.dispose()


def screenshot(page: object, name: str) -> None:
    """Save a full-page screenshot under ``test-artifacts/dashboard/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

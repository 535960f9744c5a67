"""The ``/healthz`` checks: database, spool, SCP and background workers.

The result is ``ok``, ``degraded`` (working, but an administrator should
look, for example free space below ``storage.min_free_mb``) or ``failing``
(the node cannot receive or process studies). It names no patient or study.
"""

from __future__ import annotations

import enum
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings

logger = logging.getLogger(__name__)

# Keys a node_status callback may return, each True (alive) or False.
# A key that is absent is reported as not checked.
NODE_COMPONENTS = ("scp_listening", "runner_alive", "scheduler_alive", "outbox_alive")

NodeStatus = Callable[[], Mapping[str, bool]]


class Health(enum.Enum):
    """Overall health, from best to worst."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


_RANK = {Health.OK: 0, Health.DEGRADED: 1, Health.FAILING: 2}


def _worst(first: Health, second: Health) -> Health:
    return first if _RANK[first] >= _RANK[second] else second


def check_database(session_factory: sessionmaker[Session]) -> dict[str, Any]:
    """Run ``SELECT 1`` on the job database."""
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("health: job database not reachable: %s", type(exc).__name__)
        return {"status": Health.FAILING.value, "detail": "database not reachable"}
    return {"status": Health.OK.value}


def check_spool(spool_dir: Path, min_free_mb: int) -> dict[str, Any]:
    """Check that the spool folder takes a new file and has ``min_free_mb`` free."""
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=spool_dir, prefix=".healthz-"):
            pass
        usage = shutil.disk_usage(spool_dir)
    except OSError as exc:
        logger.warning("health: spool folder %s not writable: %s", spool_dir, exc)
        return {"status": Health.FAILING.value, "detail": "spool folder not writable"}

    free_mb = usage.free // (1024 * 1024)
    result: dict[str, Any] = {"free_mb": free_mb, "min_free_mb": min_free_mb}
    if free_mb < min_free_mb:
        result["status"] = Health.DEGRADED.value
        result["detail"] = "free space below storage.min_free_mb; new instances are rejected"
    else:
        result["status"] = Health.OK.value
    return result


def check_components(node_status: NodeStatus | None) -> dict[str, dict[str, Any]]:
    """Report each component from the ``node_status`` callback; a stopped one is failing."""
    if node_status is None:
        return {name: {"status": "not_checked"} for name in NODE_COMPONENTS}
    reported = node_status()
    checks = {}
    for name in NODE_COMPONENTS:
        if name not in reported:
            checks[name] = {"status": "not_checked"}
        else:
            checks[name] = {"status": Health.OK.value if reported[name] else Health.FAILING.value}
    return checks


def health_report(
    settings: Settings, session_factory: sessionmaker[Session], node_status: NodeStatus | None
) -> dict[str, Any]:
    """Run every check and return ``{"status": ..., "checks": {...}}``."""
    checks = {
        "database": check_database(session_factory),
        "spool": check_spool(settings.storage.resolved_spool_dir, settings.storage.min_free_mb),
        **check_components(node_status),
    }
    overall = Health.OK
    for check in checks.values():
        if check["status"] in (Health.DEGRADED.value, Health.FAILING.value):
            overall = _worst(overall, Health(check["status"]))
    return {"status": overall.value, "checks": checks}

"""The node process: database, spool, SCP and the background components, started and stopped together."""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.migrate import upgrade_to_head
from db.session import create_db_engine, make_session_factory
from dicom_node.ingest import Ingestor
from dicom_node.scp import StorageScp
from dicom_node.spool import Spool

logger = logging.getLogger(__name__)


class Component(Protocol):
    """Anything the node starts after the SCP and stops before it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class _OptionalComponent:
    attribute: str
    module: str
    class_name: str
    description: str


# Built in start-up order; each takes (settings, session_factory).
_BACKGROUND_COMPONENTS = (
    _OptionalComponent("completion", "dicom_node.completion", "CompletionScheduler", "study completion scheduler"),
    _OptionalComponent("outbox", "dicom_node.outbox", "OutboxWorker", "outbox worker"),
)


def _optional_class(module_name: str, class_name: str) -> type | None:
    # Components are imported here, not at module level, so the SCP starts
    # even where a component's heavy dependencies are not installed.
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    return getattr(module, class_name, None)


class Node:
    """One node: migrations, the spool, the storage SCP and the background workers.

    Parameters
    ----------
    settings : Settings
        All settings.
    pipeline_step : object, optional
        The pipeline step the job runner runs (a ``dicom_node.pipeline_step.PipelineStep``).
        Without one the job runner is not started and jobs stay queued.
    """

    def __init__(self, settings: Settings, *, pipeline_step: Any | None = None) -> None:
        self.settings = settings
        self.pipeline_step = pipeline_step
        self.engine: Engine | None = None
        self.session_factory: sessionmaker[Session] | None = None
        self.spool: Spool | None = None
        self.scp: StorageScp | None = None
        self.completion: Component | None = None
        self.runner: Component | None = None
        self.outbox: Component | None = None
        self.dashboard: Component | None = None
        self._started: list[tuple[str, Component]] = []
        self._stop_requested = threading.Event()

    def start(self) -> None:
        """Migrate the database, clean the spool, then start the SCP and the background components."""
        self.engine = create_db_engine(self.settings.database_url, echo=self.settings.database.echo)
        upgrade_to_head(self.engine)
        self.session_factory = make_session_factory(self.engine)
        logger.info("job database at %s is at the newest revision", self.engine.url.render_as_string(hide_password=True))

        storage = self.settings.storage
        self.spool = Spool(storage.resolved_spool_dir, fsync=storage.fsync)
        self.spool.remove_partial_files()
        logger.info("spool at %s (fsync %s, free-space floor %d MiB)", self.spool.root, "on" if storage.fsync else "off", storage.min_free_mb)

        ingestor = Ingestor(self.spool, self.session_factory, min_free_mb=storage.min_free_mb)
        self.scp = StorageScp(self.settings.node, ingestor)
        self.scp.start()
        self._started.append(("DICOM SCP", self.scp))

        for component in _BACKGROUND_COMPONENTS:
            factory = _optional_class(component.module, component.class_name)
            self._start_component(component.attribute, component.description, factory)
        self._start_runner()
        self._start_dashboard()

    def _start_component(self, attribute: str, description: str, factory: Callable[..., Component] | None) -> None:
        if factory is None:
            logger.warning("%s not started: its module is not installed", description)
            return
        component = factory(self.settings, self.session_factory)
        component.start()
        setattr(self, attribute, component)
        self._started.append((description, component))
        logger.info("%s started", description)

    def _start_runner(self) -> None:
        runner_class = _optional_class("dicom_node.runner", "JobRunner")
        if runner_class is None or self.pipeline_step is None:
            # NOTE: the CLI passes no pipeline step yet, so `serve` receives
            # and assembles studies but leaves their jobs queued.
            logger.warning("job runner not started: no pipeline step is configured; queued jobs will wait")
            return
        self._start_component("runner", "job runner", lambda settings, factory: runner_class(settings, factory, self.pipeline_step))

    def _start_dashboard(self) -> None:
        if not self.settings.dashboard.enabled:
            logger.info("dashboard disabled in the settings")
            return
        dashboard_class = _optional_class("dicom_node.dashboard", "DashboardServer")
        if dashboard_class is None:
            self._start_component("dashboard", "dashboard", None)
            return
        self._start_component(
            "dashboard",
            "dashboard",
            lambda settings, factory: dashboard_class(settings, factory, node_status=self.component_status),
        )

    def component_status(self) -> dict[str, bool]:
        """Return whether each component runs, keyed as the dashboard's health check expects.

        A background component counts as running once started and until
        stopped; only the SCP's server thread is checked directly.
        """
        started = {id(component) for _, component in self._started}
        return {
            "scp_listening": self.scp is not None and self.scp.is_listening,
            "runner_alive": self.runner is not None and id(self.runner) in started,
            "scheduler_alive": self.completion is not None and id(self.completion) in started,
            "outbox_alive": self.outbox is not None and id(self.outbox) in started,
        }

    def stop(self) -> None:
        """Stop the components in reverse start-up order, the SCP last, then close the database."""
        while self._started:
            description, component = self._started.pop()
            component.stop()
            logger.info("%s stopped", description)
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return; safe to call from a signal handler or another thread."""
        self._stop_requested.set()

    def serve_forever(self) -> None:
        """Start, run until SIGTERM or SIGINT (or :meth:`request_stop`), then stop cleanly."""
        def on_signal(number: int, _frame: FrameType | None) -> None:
            logger.info("received %s; shutting down", signal.Signals(number).name)
            self.request_stop()

        previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            logger.info("node %s ready", self.settings.node.ae_title)
            self._stop_requested.wait()
        finally:
            self.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)
            logger.info("node %s stopped", self.settings.node.ae_title)

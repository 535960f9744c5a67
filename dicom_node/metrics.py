"""Prometheus metrics of the node.

Event metrics (instances received, rejected associations, stage durations,
delivery failures) live in :data:`EVENT_REGISTRY`, a registry of our own so
that importing this module adds nothing to prometheus_client's global one.
Job counts and spool use are read from the database and the file system at
scrape time by the collectors that :func:`build_registry` adds.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db.models import Instance, Job
from db.states import JobState

logger = logging.getLogger(__name__)

# Stage names as the inference pipeline and the outbox report them. Any other
# name is counted as "other", so a new stage cannot grow the label set unseen.
STAGES = ("load", "align", "segment", "radiomics", "nomogram", "write", "deliver")
OTHER_STAGE = "other"
# From a fraction of a second (a C-STORE of a small set) to the ten minutes
# a CPU segmentation of a large study can take.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

EVENT_REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES_RECEIVED = Counter(
    "otscc_instances_received",
    "SOP instances received by the C-STORE SCP, by outcome (stored, duplicate, conflict, rejected).",
    ["outcome"],
    registry=EVENT_REGISTRY,
)
ASSOCIATIONS_REJECTED = Counter(
    "otscc_associations_rejected",
    "Association requests the SCP rejected, by reason.",
    ["reason"],
    registry=EVENT_REGISTRY,
)
STAGE_DURATION = Histogram(
    "otscc_stage_duration_seconds",
    "Duration of one pipeline or delivery stage of a job.",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=EVENT_REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "otscc_delivery_failures",
    "Failed delivery attempts, by destination and whether the failure is permanent.",
    ["destination", "permanent"],
    registry=EVENT_REGISTRY,
)


def record_instance_received(outcome: str = "stored") -> None:
    """Count one SOP instance the SCP received; ``outcome`` is a ``StoreOutcome`` value."""
    INSTANCES_RECEIVED.labels(outcome=outcome).inc()


def record_association_rejected(reason: str) -> None:
    """Count one rejected association request; ``reason`` is a short fixed label."""
    ASSOCIATIONS_REJECTED.labels(reason=reason).inc()


def observe_stage(stage: str, seconds: float) -> None:
    """Record the duration of one stage of a job; unknown stage names count as ``other``."""
    label = stage if stage in STAGES else OTHER_STAGE
    STAGE_DURATION.labels(stage=label).observe(max(float(seconds), 0.0))


def observe_stages(stage_seconds: Mapping[str, float]) -> None:
    """Record every stage duration of a job, as the pipeline reports them."""
    for stage, seconds in stage_seconds.items():
        observe_stage(stage, seconds)


def record_delivery_failure(destination: str, permanent: bool) -> None:
    """Count one failed delivery attempt to ``destination``."""
    DELIVERY_FAILURES.labels(destination=destination, permanent="true" if permanent else "false").inc()


class _EventMetrics(Collector):
    # Forwards the module-wide event metrics into a per-application registry.
    def collect(self) -> Iterator[Metric]:
        yield from EVENT_REGISTRY.collect()


class DatabaseCollector(Collector):
    """Reads job counts by state and the stored spool bytes from the job database at scrape time.

    When the database cannot be queried, only ``otscc_database_up 0`` is
    reported, so the scrape itself still succeeds.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._was_up = True
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("otscc_database_up", "Whether the job database answered the last scrape.")
        try:
            counts, spool_bytes = self._query()
        except SQLAlchemyError as exc:
            self._note_state(False, exc)
            up.add_metric([], 0)
            yield up
            return
        self._note_state(True, None)
        up.add_metric([], 1)
        yield up

        jobs = GaugeMetricFamily("otscc_jobs", "Jobs in the database, by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "otscc_spool_used_bytes",
            "Bytes of the SOP instances recorded in the spool (sum of their stored sizes).",
            value=spool_bytes,
        )

    def _query(self) -> tuple[dict[JobState, int], int]:
        with self._session_factory() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            spool_bytes = session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0)))
        return {state: count for state, count in rows}, int(spool_bytes or 0)

    def _note_state(self, up: bool, exc: Exception | None) -> None:
        # Log the change only, so a database that is down for an hour does not
        # write one line per scrape.
        with self._lock:
            changed = up != self._was_up
            self._was_up = up
        if changed and not up:
            logger.warning("metrics: job database query failed: %s", exc)
        elif changed:
            logger.info("metrics: job database query succeeded again")


class SpoolFilesystemCollector(Collector):
    """Collector of the free and total bytes of the file system that contains the spool folder."""

    def __init__(self, spool_dir: Path) -> None:
        self._spool_dir = spool_dir

    def collect(self) -> Iterator[Metric]:
        try:
            usage = shutil.disk_usage(self._spool_dir)
        except OSError:
            # A spool folder that does not exist yet has no file system to
            # report, and /healthz reports the spool as failing.
            return
        yield GaugeMetricFamily(
            "otscc_spool_filesystem_free_bytes",
            "Free bytes of the file system that holds the spool folder.",
            value=usage.free,
        )
        yield GaugeMetricFamily(
            "otscc_spool_filesystem_size_bytes",
            "Total bytes of the file system that holds the spool folder.",
            value=usage.total,
        )


def build_registry(settings: Settings, session_factory: sessionmaker[Session]) -> CollectorRegistry:
    """Create a registry with the event metrics and the database and spool collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EventMetrics())
    registry.register(DatabaseCollector(session_factory))
    registry.register(SpoolFilesystemCollector(settings.storage.resolved_spool_dir))
    return registry

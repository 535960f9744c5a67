"""Time the dashboard's job list with 100,000 jobs on SQLite and PostgreSQL.

Loads studies with three role-tagged series each, and one job and one
delivery per study, with bulk inserts. Then times three list pages: the
first page, a page filtered by state and calling AE, and a deep page. Each
is timed through the real HTTP endpoint (uvicorn on a free loopback port)
and through ``dicom_node.job_list.list_jobs`` directly, and the median and
95th percentile are printed in milliseconds.

Run::

    .venv/bin/python benchmarks/bench_job_list.py --jobs 100000 --requests 20

PostgreSQL data goes in a dedicated schema of the ``test`` database, which
is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import Settings  # noqa: E402
from db.migrate import upgrade_to_head  # noqa: E402
from db.models import Delivery, Job, Series, Study  # noqa: E402
from db.session import create_db_engine, make_session_factory  # noqa: E402
from db.states import DeliveryState, JobState, StudyState  # noqa: E402
from dicom_node.dashboard import DashboardServer  # noqa: E402
from dicom_node.job_list import JobFilters, list_jobs  # noqa: E402

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK = 5_000
PAGE_SIZE = 50
AE_TITLES = [f"MODALITY_{index:02d}" for index in range(10)]
# An assumed mix of job states, mostly done; the shares are a guess, not measured.
STATE_WEIGHTS = {
    JobState.DONE: 85,
    JobState.FAILED_INPUT: 5,
    JobState.FAILED: 2,
    JobState.DELIVERY_FAILED: 2,
    JobState.SUPERSEDED: 2,
    JobState.WAITING: 2,
    JobState.QUEUED: 1,
    JobState.CANCELLED: 1,
}
DELIVERY_STATE = {
    JobState.DONE: DeliveryState.DELIVERED,
    JobState.DELIVERY_FAILED: DeliveryState.FAILED,
    JobState.CANCELLED: DeliveryState.CANCELLED,
}


def _chunks(rows: list[dict], size: int = CHUNK) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _bulk_insert(engine: Engine, table: object, rows: list[dict]) -> None:
    with engine.begin() as connection:
        for chunk in _chunks(rows):
            connection.execute(insert(table), chunk)


def load_jobs(engine: Engine, count: int, seed: int = 7) -> None:
    """Insert ``count`` studies, each with three series, one job and one delivery."""
    rng = random.Random(seed)
    states = list(STATE_WEIGHTS)
    weights = list(STATE_WEIGHTS.values())
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    studies, series, jobs, deliveries = [], [], [], []
    for index in range(1, count + 1):
        created = start + dt.timedelta(seconds=index * 315)
        state = rng.choices(states, weights)[0]
        studies.append(
            {
                "id": index,
                "study_instance_uid": f"2.25.{index}",
                "patient_name": f"Patient^{index}",
                "patient_id": f"ID{index}",
                "calling_ae_title": AE_TITLES[index % len(AE_TITLES)],
                "state": StudyState.COMPLETE.value,
                "first_received_at": created,
                "last_received_at": created,
                "instance_count": 90,
                "has_conflicts": False,
                "notes": {},
            }
        )
        for number, role in enumerate(("ce_t1", "t2", "t1"), start=1):
            series.append(
                {
                    "study_id": index,
                    "series_instance_uid": f"2.25.{index}.{number}",
                    "modality": "MR",
                    "series_number": number,
                    "header": {},
                    "instance_count": 30,
                    "role": role if rng.random() > 0.03 else None,
                    "role_evidence": {"summary": f"taken as {role}"},
                    "first_received_at": created,
                    "last_received_at": created,
                }
            )
        started = None if state in (JobState.WAITING, JobState.QUEUED) else created + dt.timedelta(seconds=20)
        jobs.append(
            {
                "id": index,
                "study_id": index,
                "run_number": 1,
                "state": state.value,
                "created_at": created,
                "started_at": started,
                "finished_at": None if started is None else started + dt.timedelta(seconds=rng.randint(30, 600)),
                "attempts": 0 if started is None else 1,
                "input_series": {},
                "result_summary": {},
            }
        )
        if started is not None:
            deliveries.append(
                {
                    "job_id": index,
                    "destination": "pacs",
                    "ae_title": "PACS",
                    "host": "127.0.0.1",
                    "port": 11112,
                    "state": DELIVERY_STATE.get(state, DeliveryState.PENDING).value,
                    "attempts": 1,
                    "next_attempt_at": created,
                    "output_kinds": ["seg", "sr"],
                    "created_at": created,
                }
            )
    for table, rows in ((Study.__table__, studies), (Series.__table__, series), (Job.__table__, jobs), (Delivery.__table__, deliveries)):
        _bulk_insert(engine, table, rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            # Explicit ids above leave the sequences at 1.
            for table in ("studies", "series", "jobs", "deliveries"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"))
        # VACUUM sets the visibility map that autovacuum keeps on a live
        # database; without it COUNT(*) cannot use an index-only scan.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("studies", "series", "jobs", "deliveries"):
                connection.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def _time_ms(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    function()
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        samples.append((time.perf_counter() - begin) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95


def _pages(count: int) -> list[tuple[str, dict[str, str], JobFilters, int]]:
    deep = max(1, (count // PAGE_SIZE) * 3 // 4)
    return [
        ("first page", {}, JobFilters(), 1),
        (
            "state=failed_input, ae=MODALITY_03",
            {"state": "failed_input", "ae": "MODALITY_03"},
            JobFilters(states=(JobState.FAILED_INPUT,), calling_ae_title="MODALITY_03"),
            1,
        ),
        (f"deep page {deep}", {"page": str(deep)}, JobFilters(), deep),
    ]


def measure(backend: str, url: str, count: int, repeats: int, folder: Path) -> list[tuple[str, str, float, float]]:
    """Load ``count`` jobs at ``url`` and return (page, path, median ms, p95 ms) rows."""
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    begin = time.perf_counter()
    load_jobs(engine, count)
    print(f"{backend}: loaded {count} jobs in {time.perf_counter() - begin:.1f} s", file=sys.stderr)
    factory: sessionmaker[Session] = make_session_factory(engine)

    settings = Settings.model_validate({"storage": {"data_dir": str(folder)}, "dashboard": {"port": 0}})
    server = DashboardServer(settings, factory)
    server.start()
    results = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for label, params, filters, page in _pages(count):
                def over_http(params: dict[str, str] = params) -> None:
                    response = client.get("/", params={**params, "size": str(PAGE_SIZE)})
                    response.raise_for_status()

                def direct(filters: JobFilters = filters, page: int = page) -> None:
                    with factory() as session:
                        list_jobs(session, filters, page, PAGE_SIZE, include_patient_data=True)

                results.append((label, "HTTP GET /", *_time_ms(over_http, repeats)))
                results.append((label, "list_jobs()", *_time_ms(direct, repeats)))
    finally:
        server.stop()
        engine.dispose()
    return results


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """Create a schema for the benchmark, yield a URL that uses it, and drop it afterwards."""
    schema = f"bench_job_list_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(base_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        separator = "&" if "?" in base_url else "?"
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="number of jobs to load (default 100000)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help=f"PostgreSQL database (default {POSTGRES_URL})")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{Path(folder) / 'bench.db'}"
                rows += [(backend, *row) for row in measure(backend, url, args.jobs, args.requests, Path(folder))]
            elif backend == "postgresql":
                with postgres_schema(args.postgres_url) as url:
                    rows += [(backend, *row) for row in measure(backend, url, args.jobs, args.requests, Path(folder))]
            else:
                parser.error(f"unknown backend {backend!r}; use sqlite or postgresql")

    print(f"| backend | page ({PAGE_SIZE} rows) | through | median ms | p95 ms |")
    print("|---|---|---|---:|---:|")
    for backend, label, path, median, p95 in rows:
        print(f"| {backend} | {label} | {path} | {median:.1f} | {p95:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

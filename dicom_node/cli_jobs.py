"""The ``jobs``, ``retry`` and ``send`` subcommands of ``otscc-node``.

:mod:`dicom_node.cli` calls the ``add_*_parser`` functions; each subparser's
``func`` takes the parsed arguments and the loaded settings and returns the
exit code. Patient names and IDs are never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session, sessionmaker

from config.settings import DestinationSettings, Settings
from db.migrate import upgrade_to_head
from db.session import create_db_engine, make_session_factory, session_scope
from db.states import JobState
from dicom_node import actions
from dicom_node.job_list import MAX_PAGE_SIZE, JobFilters, JobRow, list_jobs
from dicom_node.sender import SendOutcome, SendReport, SendTimeouts, send_datasets

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="TOML settings file (default: $OTSCC_CONFIG, else built-in defaults)")
    parser.add_argument("--database-url", help="SQLAlchemy database URL (default: database.url setting or $DATABASE_URL)")
    parser.add_argument("--log-level", "-ll", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")


@contextmanager
def open_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Yield a session factory on the configured job database, migrated to the newest revision."""
    engine = create_db_engine(settings.database_url, echo=settings.database.echo)
    try:
        upgrade_to_head(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


# jobs


def _parse_since(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"invalid date {value!r}; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless an offset is given)"
        ) from exc
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed


def _page_size(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"--limit must be between 1 and {MAX_PAGE_SIZE}, got {number}")
    return number


def add_jobs_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``otscc-node jobs``: list jobs, newest first, as on the dashboard."""
    parser = subparsers.add_parser(
        "jobs",
        help="list jobs, newest first, with their delivery state per destination",
        description="List jobs, newest first, with their delivery state per destination. DURATION runs from "
        "the job's start until it ends (a job that sends results ends once they are delivered), or to now while it "
        "runs or delivers.",
    )
    _add_settings_options(parser)
    parser.add_argument(
        "--state", action="append", choices=[state.value for state in JobState], help="only jobs in this state (repeatable)"
    )
    parser.add_argument("--since", type=_parse_since, help="only jobs created at or after this UTC date or time")
    parser.add_argument("--until", type=_parse_since, help="only jobs created before this UTC date or time")
    parser.add_argument("--ae", help="only studies sent by this calling AE title")
    parser.add_argument("--study", help="only jobs of this StudyInstanceUID")
    parser.add_argument("--limit", type=_page_size, default=50, help="jobs per page (default 50)")
    parser.add_argument("--page", type=int, default=1, help="page number, from 1 (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_jobs)
    return parser


def _row_json(row: JobRow) -> dict[str, Any]:
    return {
        "job_id": row.job_id,
        "run_number": row.run_number,
        "study_instance_uid": row.study_instance_uid,
        "state": row.state.value,
        "arrived_at": row.arrived_at.isoformat(),
        "calling_ae_title": row.calling_ae_title,
        "roles": list(row.roles),
        "duration_s": None if row.duration_s is None else round(row.duration_s, 3),
        "deliveries": row.deliveries,
    }


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_table(rows: Iterable[JobRow], out: TextIO) -> None:
    header = ("JOB", "STUDY INSTANCE UID", "STATE", "ARRIVED (UTC)", "CALLING AE", "ROLES", "DURATION", "DELIVERIES")
    lines = [header]
    for row in rows:
        deliveries = ", ".join(f"{name}={state}" for name, state in row.deliveries.items()) or "-"
        lines.append(
            (
                str(row.job_id),
                row.study_instance_uid,
                row.state.value,
                row.arrived_at.strftime("%Y-%m-%d %H:%M:%S"),
                row.calling_ae_title or "-",
                ",".join(row.roles) or "-",
                _format_duration(row.duration_s),
                deliveries,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() + "\n")


def run_jobs(args: argparse.Namespace, settings: Settings) -> int:
    """List the jobs that meet the arguments' filters; return the exit code."""
    filters = JobFilters(
        states=tuple(JobState(state) for state in args.state or ()),
        since=args.since,
        until=args.until,
        calling_ae_title=args.ae,
        study_instance_uid=args.study,
    )
    try:
        with open_database(settings) as factory, session_scope(factory) as session:
            page = list_jobs(session, filters, args.page, args.limit)
    except ValueError as exc:
        print(f"otscc-node jobs: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.json:
        document = {"total": page.total, "page": page.page, "page_count": page.page_count, "jobs": [_row_json(row) for row in page.rows]}
        print(json.dumps(document, indent=2))
        return EXIT_OK
    _print_table(page.rows, sys.stdout)
    print(f"page {page.page} of {page.page_count}, {page.total} job(s)")
    return EXIT_OK


# retry


def add_retry_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``otscc-node retry``: run a job again, or send one delivery again."""
    parser = subparsers.add_parser("retry", help="queue a failed job again, or send a failed delivery again")
    _add_settings_options(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", type=int, help="id of the job to run again")
    target.add_argument("--delivery", type=int, metavar="ID", help="id of the delivery to send again")
    parser.set_defaults(func=run_retry)
    return parser


def run_retry(args: argparse.Namespace, settings: Settings) -> int:
    """Retry the job or delivery the arguments name; return the exit code."""
    actor = _actor()
    try:
        with open_database(settings) as factory, session_scope(factory) as session:
            if args.delivery is not None:
                delivery = actions.retry_delivery(session, args.delivery, actor)
                message = f"delivery {delivery.id} of job {delivery.job_id} to {delivery.destination} is pending again"
            else:
                job = actions.retry_job(session, args.job_id, actor)
                message = f"job {job.id} queued again"
    except ValueError as exc:
        print(f"otscc-node retry: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(message)
    return EXIT_OK


# send


def add_send_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``otscc-node send``: a storescu-like C-STORE sender using the node's sender."""
    parser = subparsers.add_parser("send", help="send DICOM files to a configured destination or a peer, like storescu")
    _add_settings_options(parser)
    parser.add_argument("files", nargs="+", type=Path, help="DICOM files, or folders to send every file of (recursively)")
    parser.add_argument("--dest", help="name of a destination in the settings")
    parser.add_argument("--host", help="peer host name or IP address (instead of --dest)")
    parser.add_argument("--port", type=int, help="peer TCP port (with --host)")
    parser.add_argument("--call", "-aec", help="called AE title of the peer (with --host)")
    parser.add_argument("--aetitle", "-aet", help="calling AE title (default: the destination's, else node.ae_title)")
    parser.add_argument("--timeout", "-to", type=float, help="connection and association timeout, in seconds")
    parser.set_defaults(func=run_send)
    return parser


def _send_destination(args: argparse.Namespace, settings: Settings) -> DestinationSettings:
    if args.dest is not None:
        if args.host is not None or args.port is not None or args.call is not None:
            raise ValueError("give either --dest or --host/--port/--call, not both")
        for destination in settings.destinations:
            if destination.name == args.dest:
                return destination
        names = ", ".join(destination.name for destination in settings.destinations) or "none configured"
        raise ValueError(f"destination {args.dest!r} not found in the settings; known: {names}")
    if args.host is None or args.port is None or args.call is None:
        raise ValueError("give --dest NAME, or all of --host, --port and --call")
    return DestinationSettings(name=f"{args.call}@{args.host}:{args.port}", ae_title=args.call, host=args.host, port=args.port)


def _expand(paths: Iterable[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(item for item in path.rglob("*") if item.is_file()))
        else:
            files.append(path)
    return files


def _print_report(report: SendReport) -> None:
    for result in report.instances:
        status = "-" if result.status is None else f"0x{result.status:04X}"
        line = f"{result.outcome.value:<10} {status:<7} {result.sop_instance_uid or '-'}  {result.path}"
        print(f"{line}  {result.message}" if result.message else line)
    print(f"{report.destination}: {report.outcome.value}: {report.message} ({report.duration_s:.2f} s)")


def run_send(args: argparse.Namespace, settings: Settings) -> int:
    """Send the files the arguments name; return 0 when every file was stored."""
    try:
        destination = _send_destination(args, settings)
        timeouts = SendTimeouts.from_settings(settings.delivery)
        if args.timeout is not None:
            timeouts = SendTimeouts(connection_s=args.timeout, acse_s=args.timeout)
        calling_ae = args.aetitle or destination.calling_ae_title or settings.node.ae_title
        report = send_datasets(destination, _expand(args.files), calling_ae=calling_ae, timeouts=timeouts)
    except ValueError as exc:
        print(f"otscc-node send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_report(report)
    return EXIT_OK if report.outcome is SendOutcome.DELIVERED else EXIT_FAILED

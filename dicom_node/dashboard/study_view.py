"""The study page's data: one study with its series, jobs, events, outputs and deliveries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import Delivery, Job, JobEvent, Study


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Return ``value`` as an aware UTC datetime; SQLite returns naive ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class TimelineEntry:
    """A job event with the time since the one before it."""

    event: JobEvent
    since_previous_s: float | None


def load_study(session: Session, study_id: int) -> Study | None:
    """Load a study with everything its page shows, in a fixed number of queries."""
    return session.scalars(
        select(Study)
        .where(Study.id == study_id)
        .options(
            selectinload(Study.series),
            selectinload(Study.jobs).selectinload(Job.events),
            selectinload(Study.jobs).selectinload(Job.outputs),
            selectinload(Study.jobs).selectinload(Job.deliveries).selectinload(Delivery.attempt_log),
        )
    ).first()


def timeline(job: Job) -> list[TimelineEntry]:
    """Return the job's events in order, each with the seconds since the previous event."""
    entries = []
    previous: dt.datetime | None = None
    for event in job.events:
        at = as_utc(event.at)
        since = None if previous is None else (at - previous).total_seconds()
        entries.append(TimelineEntry(event, since))
        previous = at
    return entries


def job_duration_s(job: Job, now: dt.datetime) -> float | None:
    """Seconds from the job's start to its end, or to ``now`` while it runs."""
    if job.started_at is None:
        return None
    end = as_utc(job.finished_at) or now
    return max((end - as_utc(job.started_at)).total_seconds(), 0.0)


def format_duration(seconds: float | None) -> str:
    """Render seconds as ``0.4 s``, ``12 s``, ``3 min 5 s`` or ``2 h 4 min``."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def format_time(value: dt.datetime | None) -> str:
    """Render a time as UTC ``YYYY-MM-DD HH:MM:SS``."""
    value = as_utc(value)
    return "" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

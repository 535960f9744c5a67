"""The job list query shared by the dashboard and ``otscc-node jobs``.

One SQL statement returns a page. An indexed subquery picks the page's job
ids, newest first. The study, the series roles and the delivery states are
joined and aggregated for those ids only, so a page costs about the same
however many jobs the table has; a separate statement counts the matches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from db.models import Delivery, Job, Series, Study, utcnow
from db.states import JobState

MAX_PAGE_SIZE = 1000
_LIST_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class JobFilters:
    """Conditions a listed job must meet; None or empty means any.

    ``since`` and ``until`` bound the job's creation time: at or after
    ``since``, and before ``until``.
    """

    states: tuple[JobState, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    calling_ae_title: str | None = None
    study_instance_uid: str | None = None


@dataclass(frozen=True)
class JobRow:
    """One line of the job list.

    ``patient_name`` and ``patient_id`` are None unless the caller asked for
    patient data. ``duration_s`` runs from the job's start to its end, or to
    now while it runs.
    """

    job_id: int
    run_number: int
    study_instance_uid: str
    state: JobState
    arrived_at: dt.datetime
    calling_ae_title: str | None
    roles: tuple[str, ...]
    duration_s: float | None
    deliveries: dict[str, str]
    created_at: dt.datetime
    patient_name: str | None = None
    patient_id: str | None = None


@dataclass(frozen=True)
class Page:
    """A page of the job list, with the count of every job that meets the filters."""

    rows: list[JobRow]
    total: int
    page: int
    page_size: int
    filters: JobFilters = field(default_factory=JobFilters)

    @property
    def page_count(self) -> int:
        """Number of pages at this page size (at least 1)."""
        return max(1, -(-self.total // self.page_size))


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


def _conditions(filters: JobFilters) -> list:
    conditions = []
    if filters.states:
        conditions.append(Job.state.in_(filters.states))
    if filters.since is not None:
        conditions.append(Job.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(Job.created_at < filters.until)
    if filters.calling_ae_title:
        conditions.append(Study.calling_ae_title == filters.calling_ae_title)
    if filters.study_instance_uid:
        conditions.append(Study.study_instance_uid == filters.study_instance_uid)
    return conditions


def _split(aggregated: str | None) -> list[str]:
    return [] if not aggregated else aggregated.split(_LIST_SEPARATOR)


def _duration_s(started: dt.datetime | None, finished: dt.datetime | None, now: dt.datetime) -> float | None:
    if started is None:
        return None
    end = _as_utc(finished) or now
    return max((end - _as_utc(started)).total_seconds(), 0.0)


def list_jobs(
    session: Session,
    filters: JobFilters | None = None,
    page: int = 1,
    page_size: int = 50,
    *,
    include_patient_data: bool = False,
) -> Page:
    """Return page ``page`` (from 1) of the jobs meeting ``filters``, newest first.

    Raises
    ------
    ValueError
        If ``page`` is below 1 or ``page_size`` is outside 1 to 1000.
    """
    filters = filters or JobFilters()
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    conditions = _conditions(filters)

    count = select(func.count(Job.id)).where(*conditions)
    page_ids = select(Job.id).where(*conditions)
    if filters.calling_ae_title or filters.study_instance_uid:
        # Join the studies only when a condition needs them: scanning the
        # jobs table alone is several times faster on deep pages.
        count = count.join(Study, Study.id == Job.study_id)
        page_ids = page_ids.join(Study, Study.id == Job.study_id)
    total = session.scalar(count)

    page_ids = (
        page_ids.order_by(Job.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
        .subquery()
    )
    roles = (
        select(func.aggregate_strings(Series.role, _LIST_SEPARATOR))
        .where(Series.study_id == Job.study_id, Series.role.is_not(None))
        .scalar_subquery()
    )
    delivery_states = (
        select(
            func.aggregate_strings(
                Delivery.destination + "=" + type_coerce(Delivery.state, String), _LIST_SEPARATOR
            )
        )
        .where(Delivery.job_id == Job.id)
        .scalar_subquery()
    )
    query = (
        select(
            Job.id,
            Job.run_number,
            Job.state,
            Job.created_at,
            Job.started_at,
            Job.finished_at,
            Study.study_instance_uid,
            Study.first_received_at,
            Study.calling_ae_title,
            Study.patient_name,
            Study.patient_id,
            roles.label("roles"),
            delivery_states.label("deliveries"),
        )
        .join(Study, Study.id == Job.study_id)
        .where(Job.id.in_(select(page_ids.c.id)))
        .order_by(Job.id.desc())
    )

    now = utcnow()
    rows = []
    for record in session.execute(query):
        deliveries = dict(item.split("=", 1) for item in _split(record.deliveries))
        rows.append(
            JobRow(
                job_id=record.id,
                run_number=record.run_number,
                study_instance_uid=record.study_instance_uid,
                state=record.state,
                arrived_at=_as_utc(record.first_received_at),
                calling_ae_title=record.calling_ae_title,
                roles=tuple(sorted(set(_split(record.roles)))),
                duration_s=_duration_s(record.started_at, record.finished_at, now),
                deliveries=dict(sorted(deliveries.items())),
                created_at=_as_utc(record.created_at),
                patient_name=record.patient_name if include_patient_data else None,
                patient_id=record.patient_id if include_patient_data else None,
            )
        )
    return Page(rows=rows, total=int(total or 0), page=page, page_size=page_size, filters=filters)

"""The job list's query string: filters, page and page size, parsed leniently."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from db.states import JobState
from dicom_node.job_list import JobFilters

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Whether the shared list query takes an upper date bound.
# NOTE: JobFilters has only ``since`` so far, so the "Created to" field stays
# hidden until it gains an ``until`` field (jobs created before that time).
SUPPORTS_UNTIL = any(field.name == "until" for field in dataclasses.fields(JobFilters))


@dataclass(frozen=True)
class ListQuery:
    """The list page's filters as the form shows them, and the matching ``JobFilters``."""

    state: JobState | None
    date_from: dt.date | None
    date_to: dt.date | None
    calling_ae_title: str
    page: int
    page_size: int

    @property
    def filters(self) -> JobFilters:
        """The filters for :func:`dicom_node.job_list.list_jobs`."""
        values: dict = {
            "states": () if self.state is None else (self.state,),
            "since": None if self.date_from is None else _start_of_day(self.date_from),
            "calling_ae_title": self.calling_ae_title or None,
        }
        if SUPPORTS_UNTIL:
            values["until"] = None if self.date_to is None else _start_of_day(self.date_to + dt.timedelta(days=1))
        return JobFilters(**values)

    def as_params(self) -> dict[str, str]:
        """Return the non-empty filters as query parameters, for paging links."""
        params = {
            "state": "" if self.state is None else self.state.value,
            "from": "" if self.date_from is None else self.date_from.isoformat(),
            "to": "" if self.date_to is None else self.date_to.isoformat(),
            "ae": self.calling_ae_title,
            "size": str(self.page_size),
        }
        return {key: value for key, value in params.items() if value}


def _start_of_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.timezone.utc)


def _date(raw: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw else default
    except ValueError:
        return default
    return min(max(value, low), high)


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Parse the list page's query string; invalid values count as not given."""
    state = next((member for member in JobState if member.value == params.get("state")), None)
    return ListQuery(
        state=state,
        date_from=_date(params.get("from")),
        date_to=_date(params.get("to")) if SUPPORTS_UNTIL else None,
        calling_ae_title=(params.get("ae") or "").strip()[:16],
        page=_int(params.get("page"), 1, 1, 1_000_000),
        page_size=_int(params.get("size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )

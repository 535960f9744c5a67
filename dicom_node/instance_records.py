"""Database rows for received instances: study, series and instance, in one short transaction.

The C-STORE handler runs this for every instance, so it issues a handful of
plain statements. Study and series ids are cached after their first lookup
and counters are incremented in SQL. The job store is consulted only when the
study's newest job is no longer waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom import charset
from pydicom.dataset import Dataset
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from db.models import Instance, Job, Series, Study, utcnow
from db.states import JobState
from dicom_node import jobs
from dicom_node.series_header import instance_geometry, json_value, series_header

logger = logging.getLogger(__name__)

MAX_NOTED_CONFLICTS = 100
MAX_CACHED_IDS = 4096

# Core statements built once with bound parameters, so SQLAlchemy compiles
# and caches each of them once instead of keying every call's literal values.
_STUDIES = Study.__table__
_SERIES = Series.__table__
_INSERT_INSTANCE = insert(Instance.__table__)
_UPDATE_STUDY = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("row_id"))
    .values(
        last_received_at=bindparam("now"),
        calling_ae_title=bindparam("calling_ae"),
        calling_host=bindparam("calling_host"),
        instance_count=_STUDIES.c.instance_count + bindparam("increment"),
    )
)
_UPDATE_SERIES = (
    update(_SERIES)
    .where(_SERIES.c.id == bindparam("row_id"))
    .values(last_received_at=bindparam("now"), instance_count=_SERIES.c.instance_count + bindparam("increment"))
)
_TOUCH_STUDY = update(_STUDIES).where(_STUDIES.c.id == bindparam("row_id")).values(last_received_at=bindparam("now"))


@dataclass(frozen=True)
class InstanceIdentity:
    """The validated UIDs of a received instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class StoredFile:
    """Spool path, size and digest of a written instance."""

    relative_path: Path
    size_bytes: int
    sha256: str
    is_conflict: bool


def _text(dataset: Dataset, keyword: str, max_length: int) -> str | None:
    value = dataset.get(keyword)
    if value in (None, ""):
        return None
    return str(value)[:max_length]


def _character_set_terms(dataset: Dataset) -> list[str]:
    terms = dataset.get("SpecificCharacterSet")
    if terms is None:
        return []
    if isinstance(terms, str):
        return [terms]
    return [str(term) for term in terms]


def character_set_problem(dataset: Dataset) -> str | None:
    """Return a note naming the SpecificCharacterSet terms pydicom does not know, or None.

    pydicom decodes text with the default repertoire for an unknown term and
    only warns, so the study keeps a note that its text may be wrong.
    """
    unknown = [term for term in _character_set_terms(dataset) if term.strip() and term.strip() not in charset.python_encoding]
    if unknown:
        return f"unknown SpecificCharacterSet term(s) {unknown}; text was decoded with the default repertoire"
    return None


def patient_fields(dataset: Dataset) -> tuple[dict[str, str | None], str | None]:
    """Return the decoded patient and study text columns, and a note if decoding failed."""
    try:
        fields = {
            "patient_name": _text(dataset, "PatientName", 324),
            "patient_id": _text(dataset, "PatientID", 64),
            "study_description": _text(dataset, "StudyDescription", 256),
        }
    except (LookupError, UnicodeError, ValueError) as exc:
        # Only the exception type is kept, because its text may quote the value.
        empty = {"patient_name": None, "patient_id": None, "study_description": None}
        return empty, f"patient and study text could not be decoded ({type(exc).__name__})"
    return fields, None


class InstanceRecorder:
    """Writes the rows of received instances, with a cache of study and series ids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}

    def forget_cached_ids(self) -> None:
        """Drop cached ids, for example after a failed transaction or a deleted study."""
        with self._lock:
            self._study_ids.clear()
            self._series_ids.clear()

    def _remember(self, cache: dict[str, int], uid: str, row_id: int) -> None:
        with self._lock:
            if len(cache) >= MAX_CACHED_IDS:
                cache.clear()
            cache[uid] = row_id

    def record(self, session: Session, dataset: Dataset, identity: InstanceIdentity, stored: StoredFile, *, calling_ae: str, calling_host: str | None) -> None:
        """Add the instance row, update the study and series, and keep the study's job in step.

        The caller commits. Raises SQLAlchemy errors unchanged, so the caller
        can retry a transaction that lost a race for a new study or series.
        """
        now = utcnow()
        study_id = self._study_id(session, dataset, identity, now)
        series_id = self._series_id(session, dataset, identity, study_id, now)
        self._insert_instance(session, dataset, identity, stored, series_id, calling_ae, now)

        increment = 0 if stored.is_conflict else 1
        connection = session.connection()
        connection.execute(
            _UPDATE_STUDY,
            {
                "row_id": study_id,
                "now": now,
                "calling_ae": calling_ae,
                "calling_host": None if calling_host is None else calling_host[:64],
                "increment": increment,
            },
        )
        connection.execute(_UPDATE_SERIES, {"row_id": series_id, "now": now, "increment": increment})
        if stored.is_conflict:
            self._note_conflict(session, study_id, identity, stored)
        self.note_activity(session, study_id, new_instance=not stored.is_conflict)

    def note_activity(self, session: Session, study_id: int, *, new_instance: bool) -> None:
        """Call :func:`jobs.note_study_activity` unless the study's newest job is still waiting.

        A waiting job is what that function would return unchanged, so the
        common case costs one query instead of loading the study.
        """
        newest_state = session.scalars(
            select(Job.state).where(Job.study_id == study_id).order_by(Job.id.desc()).limit(1)
        ).first()
        if newest_state is JobState.WAITING:
            return
        study = session.get(Study, study_id, populate_existing=True)
        jobs.note_study_activity(session, study, new_instance=new_instance)

    def touch_study(self, session: Session, study_uid: str) -> None:
        """Record that a duplicate of a stored instance arrived: the study is still receiving."""
        study_id = session.scalars(select(Study.id).where(Study.study_instance_uid == study_uid)).first()
        if study_id is None:
            return
        session.connection().execute(_TOUCH_STUDY, {"row_id": study_id, "now": utcnow()})
        self.note_activity(session, study_id, new_instance=False)

    def _study_id(self, session: Session, dataset: Dataset, identity: InstanceIdentity, now: dt.datetime) -> int:
        cached = self._study_ids.get(identity.study_uid)
        if cached is not None:
            return cached
        study_id = session.scalars(select(Study.id).where(Study.study_instance_uid == identity.study_uid)).first()
        if study_id is None:
            study_id = self._create_study(session, dataset, identity, now)
        self._remember(self._study_ids, identity.study_uid, study_id)
        return study_id

    def _create_study(self, session: Session, dataset: Dataset, identity: InstanceIdentity, now: dt.datetime) -> int:
        fields, decoding_problem = patient_fields(dataset)
        notes = {}
        if (problem := character_set_problem(dataset)) is not None:
            notes["character_set"] = problem
        if decoding_problem is not None:
            notes["decoding"] = decoding_problem
        if notes:
            logger.warning("study %s: %s", identity.study_uid, "; ".join(notes.values()))

        terms = _character_set_terms(dataset)
        study = Study(
            study_instance_uid=identity.study_uid,
            accession_number=_text(dataset, "AccessionNumber", 64),
            study_date=_text(dataset, "StudyDate", 8),
            specific_character_set="\\".join(terms)[:128] if terms else None,
            first_received_at=now,
            last_received_at=now,
            instance_count=0,
            has_conflicts=False,
            notes=notes,
            **fields,
        )
        session.add(study)
        session.flush()
        return study.id

    def _series_id(self, session: Session, dataset: Dataset, identity: InstanceIdentity, study_id: int, now: dt.datetime) -> int:
        cached = self._series_ids.get(identity.series_uid)
        if cached is not None:
            return cached
        series_id = session.scalars(select(Series.id).where(Series.series_instance_uid == identity.series_uid)).first()
        if series_id is None:
            header = series_header(dataset)
            series_number = header.get("SeriesNumber")
            series = Series(
                study_id=study_id,
                series_instance_uid=identity.series_uid,
                modality=_text(dataset, "Modality", 16),
                sop_class_uid=identity.sop_class_uid,
                series_number=series_number if isinstance(series_number, int) else None,
                series_description=_text(dataset, "SeriesDescription", 256),
                protocol_name=_text(dataset, "ProtocolName", 256),
                frame_of_reference_uid=_text(dataset, "FrameOfReferenceUID", 64),
                header=header,
                instance_count=0,
                first_received_at=now,
                last_received_at=now,
                role_evidence={},
            )
            session.add(series)
            session.flush()
            series_id = series.id
        self._remember(self._series_ids, identity.series_uid, series_id)
        return series_id

    def _insert_instance(
        self,
        session: Session,
        dataset: Dataset,
        identity: InstanceIdentity,
        stored: StoredFile,
        series_id: int,
        calling_ae: str,
        now: dt.datetime,
    ) -> None:
        orientation, positions, frames = instance_geometry(dataset)
        instance_number = json_value(dataset.get("InstanceNumber"))
        session.connection().execute(
            _INSERT_INSTANCE,
            dict(
                series_id=series_id,
                sop_instance_uid=identity.sop_uid,
                sop_class_uid=identity.sop_class_uid,
                transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
                instance_number=instance_number if isinstance(instance_number, int) else None,
                number_of_frames=frames,
                image_orientation_patient=orientation,
                frame_positions=positions,
                path=stored.relative_path.as_posix(),
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                is_conflict=stored.is_conflict,
                calling_ae_title=calling_ae,
                received_at=now,
            )
        )

    def _note_conflict(self, session: Session, study_id: int, identity: InstanceIdentity, stored: StoredFile) -> None:
        study = session.get(Study, study_id, populate_existing=True)
        study.has_conflicts = True
        notes = dict(study.notes or {})
        conflicts = list(notes.get("conflicting_instances", []))
        if len(conflicts) < MAX_NOTED_CONFLICTS:
            conflicts.append(
                {"sop_instance_uid": identity.sop_uid, "sha256": stored.sha256, "path": stored.relative_path.as_posix()}
            )
        notes["conflicting_instances"] = conflicts
        study.notes = notes
        session.flush()

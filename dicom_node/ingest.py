"""Store one received instance: validate, write durably, record, then answer.

:meth:`Ingestor.store` is what the C-STORE handler calls. It returns a DIMSE
status only after the file is fsynced in the spool and its database rows are
committed, so a success answer survives a crash of the node (PS3.4 B.2.2
leaves it to the SCP to decide when an instance counts as stored; here it is
"on disk and in the database").
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import charset
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Series, Study, utcnow
from dicom_node import dimse_status, jobs
from dicom_node.series_header import instance_geometry, json_value, series_header
from dicom_node.spool import InvalidUidError, Spool, validate_uid

logger = logging.getLogger(__name__)

RECORD_ATTEMPTS = 3
MAX_NOTED_CONFLICTS = 100


class StoreOutcome(enum.Enum):
    """What happened to an instance the node was sent."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StoreResult:
    """The DIMSE status to return and what was done."""

    status: int
    outcome: StoreOutcome
    path: Path | None = None


@dataclass(frozen=True)
class Sender:
    """The peer that sent an instance."""

    ae_title: str
    host: str | None


@dataclass(frozen=True)
class _Identity:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def _identify(dataset: Dataset, requested_sop_class: str) -> _Identity | StoreResult:
    try:
        identity = _Identity(
            study_uid=validate_uid(dataset.get("StudyInstanceUID"), keyword="StudyInstanceUID"),
            series_uid=validate_uid(dataset.get("SeriesInstanceUID"), keyword="SeriesInstanceUID"),
            sop_uid=validate_uid(dataset.get("SOPInstanceUID"), keyword="SOPInstanceUID"),
            sop_class_uid=validate_uid(dataset.get("SOPClassUID"), keyword="SOPClassUID"),
        )
    except InvalidUidError as exc:
        logger.warning("rejected an instance: %s", exc)
        return StoreResult(dimse_status.CANNOT_UNDERSTAND, StoreOutcome.REJECTED)

    if identity.sop_class_uid != requested_sop_class:
        logger.warning(
            "rejected SOP instance %s: its SOP Class UID %s differs from the request's %s",
            identity.sop_uid,
            identity.sop_class_uid,
            requested_sop_class,
        )
        return StoreResult(dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS, StoreOutcome.REJECTED)
    return identity


def _character_set_problem(dataset: Dataset) -> str | None:
    # pydicom falls back to the default repertoire for a term it does not
    # know and only warns, so the study gets a note that names the term.
    terms = dataset.get("SpecificCharacterSet") or []
    if isinstance(terms, str):
        terms = [terms]
    unknown = [str(term) for term in terms if str(term).strip() and str(term).strip() not in charset.python_encoding]
    if unknown:
        return f"unknown SpecificCharacterSet term(s) {unknown}; text was decoded with the default repertoire"
    return None


def _text(dataset: Dataset, keyword: str, max_length: int) -> str | None:
    value = dataset.get(keyword)
    if value in (None, ""):
        return None
    return str(value)[:max_length]


def _patient_fields(dataset: Dataset) -> tuple[dict[str, str | None], str | None]:
    try:
        fields = {
            "patient_name": _text(dataset, "PatientName", 324),
            "patient_id": _text(dataset, "PatientID", 64),
            "study_description": _text(dataset, "StudyDescription", 256),
        }
    except (LookupError, UnicodeError, ValueError) as exc:
        # NOTE: the exception text may quote the undecodable value, so only its type is kept.
        return {"patient_name": None, "patient_id": None, "study_description": None}, (
            f"patient and study text could not be decoded ({type(exc).__name__})"
        )
    return fields, None


class Ingestor:
    """Validates, writes and records received instances.

    Parameters
    ----------
    spool : Spool
        Where files go.
    session_factory : sessionmaker
        Sessions on the migrated job database.
    min_free_mb : int
        Free disk space, in MiB, that must remain after a write; below it the
        node answers Out of Resources (0xA700).
    """

    def __init__(self, spool: Spool, session_factory: sessionmaker[Session], *, min_free_mb: int) -> None:
        self.spool = spool
        self.session_factory = session_factory
        self.min_free_mb = min_free_mb
        self._instance_locks = _KeyedLocks()
        # SQLite has one writer at a time, and a transaction that read
        # before another writer committed cannot upgrade to a write lock
        # (SQLITE_BUSY_SNAPSHOT). Serialising the short record step in this
        # process avoids that; PostgreSQL needs no such lock.
        backend = session_factory.kw["bind"].url.get_backend_name()
        self._record_lock: threading.Lock | None = threading.Lock() if backend == "sqlite" else None

    def store(self, dataset: Dataset, encoded: bytes, *, requested_sop_class: str, sender: Sender) -> StoreResult:
        """Store one instance and return the DIMSE status to answer with.

        ``encoded`` is the file as it will be written: the File Meta
        Information followed by the dataset exactly as received.
        """
        identity = _identify(dataset, requested_sop_class)
        if isinstance(identity, StoreResult):
            return identity

        if not self.spool.has_free_space(self.min_free_mb, len(encoded)):
            logger.error(
                "refused SOP instance %s from %s: free space in %s is below the %d MiB floor",
                identity.sop_uid,
                sender.ae_title,
                self.spool.root,
                self.min_free_mb,
            )
            return StoreResult(dimse_status.OUT_OF_RESOURCES, StoreOutcome.REJECTED)

        digest = hashlib.sha256(encoded).hexdigest()
        try:
            with self._instance_locks.hold(identity.sop_uid):
                return self._store_locked(dataset, encoded, identity, digest, sender)
        except (OSError, SQLAlchemyError):
            logger.exception("could not store SOP instance %s of study %s", identity.sop_uid, identity.study_uid)
            return StoreResult(dimse_status.PROCESSING_FAILURE, StoreOutcome.REJECTED)

    def _store_locked(
        self, dataset: Dataset, encoded: bytes, identity: _Identity, digest: str, sender: Sender
    ) -> StoreResult:
        with self.session_factory() as session:
            known = session.execute(
                select(Instance.sha256, Instance.is_conflict).where(Instance.sop_instance_uid == identity.sop_uid)
            ).all()
        if any(sha == digest for sha, _ in known):
            self._touch_study(identity)
            logger.info("SOP instance %s from %s is a duplicate of a stored one; accepted", identity.sop_uid, sender.ae_title)
            return StoreResult(dimse_status.SUCCESS, StoreOutcome.DUPLICATE)

        is_conflict = any(not conflict for _, conflict in known)
        if is_conflict:
            relative = self.spool.conflict_path(identity.study_uid, identity.series_uid, identity.sop_uid, digest)
        else:
            relative = self.spool.instance_path(identity.study_uid, identity.series_uid, identity.sop_uid)
        path = self.spool.write(relative, encoded)

        self._record_with_retry(dataset, identity, relative, len(encoded), digest, is_conflict, sender)
        if is_conflict:
            logger.warning(
                "SOP instance %s of study %s from %s differs from the stored one; kept apart as %s",
                identity.sop_uid,
                identity.study_uid,
                sender.ae_title,
                relative,
            )
            return StoreResult(dimse_status.SUCCESS, StoreOutcome.CONFLICT, path)
        return StoreResult(dimse_status.SUCCESS, StoreOutcome.STORED, path)

    @contextmanager
    def _record_section(self) -> Iterator[None]:
        if self._record_lock is None:
            yield
            return
        with self._record_lock:
            yield

    def _touch_study(self, identity: _Identity) -> None:
        with self._record_section(), self.session_factory() as session:
            study = session.scalars(select(Study).where(Study.study_instance_uid == identity.study_uid)).first()
            if study is not None:
                study.last_received_at = utcnow()
                jobs.note_study_activity(session, study, new_instance=False)
                session.commit()

    def _record_with_retry(self, *args: object) -> None:
        # Two associations may create the same study or series at once; the
        # loser's unique-constraint error is retried, and then finds the row.
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                with self._record_section(), self.session_factory() as session:
                    self._record(session, *args)
                    session.commit()
                return
            except (IntegrityError, OperationalError) as exc:
                if attempt == RECORD_ATTEMPTS:
                    raise
                logger.info("retrying a database write after %s (attempt %d)", type(exc).__name__, attempt)

    def _record(
        self,
        session: Session,
        dataset: Dataset,
        identity: _Identity,
        relative: Path,
        size: int,
        digest: str,
        is_conflict: bool,
        sender: Sender,
    ) -> None:
        now = utcnow()
        study = self._study(session, dataset, identity, sender, now)
        series = self._series(session, dataset, identity, study, now)
        orientation, positions, frames = instance_geometry(dataset)
        session.add(
            Instance(
                series_id=series.id,
                sop_instance_uid=identity.sop_uid,
                sop_class_uid=identity.sop_class_uid,
                transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
                instance_number=json_value(dataset.get("InstanceNumber")),
                number_of_frames=frames,
                image_orientation_patient=orientation,
                frame_positions=positions,
                path=relative.as_posix(),
                size_bytes=size,
                sha256=digest,
                is_conflict=is_conflict,
                calling_ae_title=sender.ae_title,
                received_at=now,
            )
        )

        if is_conflict:
            study.has_conflicts = True
            notes = dict(study.notes or {})
            conflicts = list(notes.get("conflicting_instances", []))
            if len(conflicts) < MAX_NOTED_CONFLICTS:
                conflicts.append({"sop_instance_uid": identity.sop_uid, "sha256": digest, "path": relative.as_posix()})
            notes["conflicting_instances"] = conflicts
            study.notes = notes
        else:
            study.instance_count = Study.instance_count + 1
            series.instance_count = Series.instance_count + 1
        session.flush()
        jobs.note_study_activity(session, study, new_instance=not is_conflict)

    def _study(self, session: Session, dataset: Dataset, identity: _Identity, sender: Sender, now) -> Study:
        study = session.scalars(select(Study).where(Study.study_instance_uid == identity.study_uid)).first()
        if study is None:
            fields, problem = _patient_fields(dataset)
            character_problem = _character_set_problem(dataset)
            notes = {key: value for key, value in (("character_set", character_problem), ("decoding", problem)) if value}
            if notes:
                logger.warning("study %s: %s", identity.study_uid, "; ".join(notes.values()))
            terms = dataset.get("SpecificCharacterSet")
            study = Study(
                study_instance_uid=identity.study_uid,
                accession_number=_text(dataset, "AccessionNumber", 64),
                study_date=_text(dataset, "StudyDate", 8),
                specific_character_set=None if terms is None else "\\".join(json_value(terms) if not isinstance(terms, str) else [terms])[:128],
                first_received_at=now,
                instance_count=0,
                has_conflicts=False,
                notes=notes,
                **fields,
            )
            session.add(study)
        study.calling_ae_title = sender.ae_title
        study.calling_host = None if sender.host is None else sender.host[:64]
        study.last_received_at = now
        session.flush()
        return study

    def _series(self, session: Session, dataset: Dataset, identity: _Identity, study: Study, now) -> Series:
        series = session.scalars(select(Series).where(Series.series_instance_uid == identity.series_uid)).first()
        if series is None:
            header = series_header(dataset)
            series_number = header.get("SeriesNumber")
            series = Series(
                study_id=study.id,
                series_instance_uid=identity.series_uid,
                modality=(header.get("Modality") or None),
                sop_class_uid=identity.sop_class_uid,
                series_number=series_number if isinstance(series_number, int) else None,
                series_description=(header.get("SeriesDescription") or None),
                protocol_name=(header.get("ProtocolName") or None),
                frame_of_reference_uid=(header.get("FrameOfReferenceUID") or None),
                header=header,
                instance_count=0,
                first_received_at=now,
                role_evidence={},
            )
            session.add(series)
        series.last_received_at = now
        session.flush()
        return series

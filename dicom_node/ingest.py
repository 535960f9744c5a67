"""Store one received instance: validate, write durably, record, then return the status.

:meth:`Ingestor.store` is what the C-STORE handler calls. It returns a DIMSE
status only after the file is fsynced in the spool and its database rows are
committed, so an instance acknowledged with Success survives a crash of the
node: for this node an instance counts as stored once it is on disk and in
the database.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance
from dicom_node import dimse_status
from dicom_node.instance_records import InstanceIdentity, InstanceRecorder, StoredFile
from dicom_node.spool import InvalidUidError, Spool, validate_uid

logger = logging.getLogger(__name__)

RECORD_ATTEMPTS = 5
# Senders may retry many times while the disk is full, so the Out of
# Resources error is logged at most once per interval, with a count.
FLOOR_LOG_INTERVAL_S = 60.0


class StoreOutcome(enum.Enum):
    """Outcome of one received instance."""

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


class _KeyedLocks:
    """One lock per key, dropped when no thread holds or waits for it."""

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


def _identify(dataset: Dataset, requested_sop_class: str) -> InstanceIdentity | StoreResult:
    try:
        identity = InstanceIdentity(
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
        node returns Out of Resources (0xA700).
    """

    def __init__(self, spool: Spool, session_factory: sessionmaker[Session], *, min_free_mb: int) -> None:
        self.spool = spool
        self.session_factory = session_factory
        self.min_free_mb = min_free_mb
        self.recorder = InstanceRecorder()
        self._instance_locks = _KeyedLocks()
        # SQLite has one writer at a time, and a transaction that read
        # before another writer committed cannot upgrade to a write lock
        # (SQLITE_BUSY_SNAPSHOT). Serialising the short record step in this
        # process avoids that; PostgreSQL needs no such lock.
        backend = session_factory.kw["bind"].url.get_backend_name()
        self._record_lock: threading.Lock | None = threading.Lock() if backend == "sqlite" else None
        self._floor_log_lock = threading.Lock()
        self._floor_logged_at: float | None = None
        self._floor_rejections = 0

    def store(self, dataset: Dataset, encoded: bytes, *, requested_sop_class: str, sender: Sender) -> StoreResult:
        """Store one instance and return the DIMSE status of the C-STORE response.

        ``encoded`` is the file as it will be written: the File Meta
        Information followed by the dataset exactly as received.
        """
        identity = _identify(dataset, requested_sop_class)
        if isinstance(identity, StoreResult):
            return identity

        if not self.spool.has_free_space(self.min_free_mb, len(encoded)):
            self._log_floor_rejection(identity, sender)
            return StoreResult(dimse_status.OUT_OF_RESOURCES, StoreOutcome.REJECTED)

        digest = hashlib.sha256(encoded).hexdigest()
        try:
            with self._instance_locks.hold(identity.sop_uid):
                return self._store_locked(dataset, encoded, identity, digest, sender)
        except (OSError, SQLAlchemyError):
            logger.exception("could not store SOP instance %s of study %s", identity.sop_uid, identity.study_uid)
            return StoreResult(dimse_status.PROCESSING_FAILURE, StoreOutcome.REJECTED)

    def _log_floor_rejection(self, identity: InstanceIdentity, sender: Sender) -> None:
        with self._floor_log_lock:
            self._floor_rejections += 1
            now = time.monotonic()
            if self._floor_logged_at is not None and now - self._floor_logged_at < FLOOR_LOG_INTERVAL_S:
                return
            count, self._floor_rejections, self._floor_logged_at = self._floor_rejections, 0, now
        logger.error(
            "rejected SOP instance %s from %s with Out of Resources (%d instance(s) since the last such line): "
            "free space in %s would fall below the %d MiB floor; free disk space or lower storage.min_free_mb",
            identity.sop_uid,
            sender.ae_title,
            count,
            self.spool.root,
            self.min_free_mb,
        )

    def _store_locked(
        self, dataset: Dataset, encoded: bytes, identity: InstanceIdentity, digest: str, sender: Sender
    ) -> StoreResult:
        with self.session_factory() as session:
            known = session.execute(
                select(Instance.sha256, Instance.is_conflict).where(Instance.sop_instance_uid == identity.sop_uid)
            ).all()
        if any(sha == digest for sha, _ in known):
            self._run_transaction(lambda session: self.recorder.touch_study(session, identity.study_uid))
            logger.debug("SOP instance %s from %s is a duplicate of a stored one; accepted", identity.sop_uid, sender.ae_title)
            return StoreResult(dimse_status.SUCCESS, StoreOutcome.DUPLICATE)

        is_conflict = any(not conflict for _, conflict in known)
        if is_conflict:
            relative = self.spool.conflict_path(identity.study_uid, identity.series_uid, identity.sop_uid, digest)
        else:
            relative = self.spool.instance_path(identity.study_uid, identity.series_uid, identity.sop_uid)
        path = self.spool.write(relative, encoded)

        stored = StoredFile(relative, len(encoded), digest, is_conflict)
        self._run_transaction(
            lambda session: self.recorder.record(
                session, dataset, identity, stored, calling_ae=sender.ae_title, calling_host=sender.host
            )
        )
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

    def _run_transaction(self, work: Callable[[Session], None]) -> None:
        # Two associations may create the same study or series at once; the
        # loser's unique-constraint error is retried, and then finds the row.
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                with self._record_section(), self.session_factory() as session:
                    work(session)
                    session.commit()
                return
            except (IntegrityError, OperationalError) as exc:
                self.recorder.forget_cached_ids()
                if attempt == RECORD_ATTEMPTS:
                    raise
                logger.info("retrying a database write after %s (attempt %d)", type(exc).__name__, attempt)

"""The spool: received instances on disk, written so that a crash never leaves a torn file.

Layout, relative to the spool folder::

    <StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    <StudyInstanceUID>/<SeriesInstanceUID>/conflicts/<SOPInstanceUID>.<sha12>.dcm
    .incoming/<random>.part        temporary files, removed at start-up

Every path component is a UID that passed :func:`validate_uid`, so a dataset
cannot name a file outside the spool.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"
CONFLICTS_DIR = "conflicts"
PART_SUFFIX = ".part"
MIB = 1024 * 1024

# PS3.5 section 9.1: a UID is at most 64 characters of digits and dots. Each
# component is a number without leading zeros (a single "0" is allowed), and
# no component is empty.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


class InvalidUidError(ValueError):
    """A UID that breaks the PS3.5 section 9.1 encoding rules."""


def is_valid_uid(value: object) -> bool:
    """Return whether ``value`` is a string that follows the PS3.5 section 9.1 UID rules."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX_LENGTH and _UID.match(value) is not None


def validate_uid(value: object, *, keyword: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUidError`.

    Raises
    ------
    InvalidUidError
        If ``value`` is missing, longer than 64 characters, or not dot-separated
        numbers without leading zeros. The message names the keyword; the value
        itself is shown only as its length, because it came from the network.
    """
    if not is_valid_uid(value):
        length = len(value) if isinstance(value, str) else 0
        raise InvalidUidError(
            f"{keyword} is missing or invalid ({length} characters); a UID must be 1 to 64 "
            "characters of dot-separated numbers without leading zeros (PS3.5 section 9.1)"
        )
    return str(value)


def _fsync_directory(path: Path) -> None:
    # A rename or a new entry is durable only once its directory is synced
    # (POSIX leaves directory metadata to the file system otherwise).
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """Durable writes into the spool folder.

    Parameters
    ----------
    root : Path
        Spool folder; created if missing.
    fsync : bool
        Whether to fsync files and folders before a write returns. Turn it
        off only for throwaway test runs.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.incoming = self.root / INCOMING_DIR
        self.incoming.mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Return the relative path of an instance; every argument must be a valid UID."""
        parts = [
            validate_uid(study_uid, keyword="StudyInstanceUID"),
            validate_uid(series_uid, keyword="SeriesInstanceUID"),
        ]
        return Path(*parts) / f"{validate_uid(sop_uid, keyword='SOPInstanceUID')}.dcm"

    def conflict_path(self, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> Path:
        """Return the relative path for a second, different instance with a known SOP Instance UID."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"sha256 {sha256!r} is not a lowercase hex SHA-256 digest")
        base = self.instance_path(study_uid, series_uid, sop_uid)
        return base.parent / CONFLICTS_DIR / f"{base.stem}.{sha256[:12]}.dcm"

    def absolute(self, relative: Path | str) -> Path:
        """Return the absolute path of a spool-relative path, refusing any that leaves the spool."""
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root):
            raise ValueError(f"path {relative!s} resolves outside the spool {self.root}; use a spool-relative path")
        return target

    def has_free_space(self, min_free_mb: int, incoming_bytes: int) -> bool:
        """Return whether ``incoming_bytes`` fit while leaving at least ``min_free_mb`` MiB free."""
        free = shutil.disk_usage(self.root).free
        return free - incoming_bytes >= min_free_mb * MIB

    def write(self, relative: Path, data: bytes) -> Path:
        """Write ``data`` to ``relative`` atomically and durably; return the absolute path.

        The bytes go to a temporary file in the spool's ``.incoming`` folder,
        which is fsynced and renamed into place; then the target folder is
        fsynced. A reader sees either no file or the whole file.
        """
        target = self.absolute(relative)
        self._make_directories(target.parent)

        descriptor, temporary = tempfile.mkstemp(suffix=PART_SUFFIX, dir=self.incoming)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fdatasync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

        if self.fsync:
            _fsync_directory(target.parent)
        return target

    def _make_directories(self, folder: Path) -> None:
        # Create missing folders top-down and sync each parent, so the new
        # entries survive a crash together with the file inside them.
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                _fsync_directory(path.parent)

    def remove_partial_files(self) -> int:
        """Delete temporary files left by a crash; return how many were removed."""
        removed = 0
        for leftover in self.incoming.glob(f"*{PART_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.warning("removed %d partial file(s) left in %s by an interrupted write", removed, self.incoming)
        return removed

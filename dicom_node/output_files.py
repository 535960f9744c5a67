"""Durable files for the objects the node produces: ``<outputs>/<job id>/<kind>_<SOPInstanceUID>.dcm``."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dicom_node.pipeline_step import OutputObject

logger = logging.getLogger(__name__)


def output_file_name(output: OutputObject) -> str:
    """Return ``<kind>_<SOPInstanceUID>.dcm`` for ``output``."""
    return f"{output.kind.value}_{output.dataset.SOPInstanceUID}.dcm"


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_output_file(output: OutputObject, folder: Path, *, fsync: bool = True) -> Path:
    """Write ``output`` as a DICOM Part 10 file in ``folder`` and return its path.

    The file appears under its final name only when complete: it is written
    to a temporary name, flushed to disk when ``fsync`` is true, then renamed.

    Raises
    ------
    ValueError
        If the dataset lacks SOPInstanceUID or cannot be encoded as a Part 10 file.
    """
    if "SOPInstanceUID" not in output.dataset:
        raise ValueError(f"a {output.kind.value} output has no SOPInstanceUID; the pipeline step must set it")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / output_file_name(output)
    handle, temporary = tempfile.mkstemp(prefix=".partial-", suffix=".dcm", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            output.dataset.save_as(stream, enforce_file_format=True)
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_folder(folder)
    return target


def remove_stale_files(folder: Path, *, keep: Iterable[Path]) -> None:
    """Delete the ``.dcm`` files in ``folder`` that are not in ``keep``, such as an earlier attempt's."""
    if not folder.is_dir():
        return
    kept = {Path(path).resolve() for path in keep}
    for path in folder.glob("*.dcm"):
        if path.resolve() not in kept:
            path.unlink(missing_ok=True)
            logger.info("removed stale output file %s", path)

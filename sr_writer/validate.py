"""Validation of every object before it is sent.

Three independent checks read each object: dicom3tools' ``dciodvfy``
(IOD and module rules of PS3.3), a read-back with highdicom, and for SR
documents DCMTK's ``dsrdump`` (SR content tree rules of PS3.3 C.17.3).
An external tool that is not installed is skipped after one warning.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.uid import SegmentationStorage

from .errors import OutputValidationError

logger = logging.getLogger(__name__)

TOOL_TIMEOUT_S = 60.0
_warned_missing: set[str] = set()


def available_validators() -> dict[str, bool]:
    """Return which validators can run: dciodvfy, dsrdump and highdicom (always)."""
    return {
        "dciodvfy": shutil.which("dciodvfy") is not None,
        "dsrdump": shutil.which("dsrdump") is not None,
        "highdicom": True,
    }


def validate_output(ds: pydicom.Dataset) -> None:
    """Validate one generated object with every available validator.

    Raises
    ------
    OutputValidationError
        With the first failing validator's message.
    """
    with tempfile.TemporaryDirectory(prefix="otscc-validate-") as tmp:
        path = Path(tmp) / "object.dcm"
        ds.save_as(path, enforce_file_format=True)
        _run_dciodvfy(path)
        if _is_sr(ds):
            _run_dsrdump(path)
        _read_back(path, ds)


def _is_sr(ds: pydicom.Dataset) -> bool:
    return str(ds.get("Modality", "")) == "SR"


def _tool(name: str) -> str | None:
    path = shutil.which(name)
    if path is None and name not in _warned_missing:
        _warned_missing.add(name)
        logger.warning("%s is not installed; outputs are sent without its validation", name)
    return path


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            # dsrdump prints names in the object's own character set, such as GB18030.
            errors="replace",
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OutputValidationError(
            f"{command[0]} timed out after {TOOL_TIMEOUT_S:.0f} s", validator=Path(command[0]).name
        ) from exc


def dciodvfy_errors(output: str) -> list[str]:
    """Return the lines of dciodvfy output that report errors (warnings are allowed)."""
    return [line.strip() for line in output.splitlines() if line.strip().startswith("Error")]


def _run_dciodvfy(path: Path) -> None:
    tool = _tool("dciodvfy")
    if tool is None:
        return
    completed = _run([tool, str(path)])
    errors = dciodvfy_errors(completed.stdout + completed.stderr)
    if errors:
        raise OutputValidationError("dciodvfy: " + "; ".join(errors), validator="dciodvfy")


def _run_dsrdump(path: Path) -> None:
    tool = _tool("dsrdump")
    if tool is None:
        return
    # By default dsrdump checks the relationship content constraints of the
    # SR IOD and prints "E: " lines for every violation.
    completed = _run([tool, str(path)])
    errors = [line.strip() for line in completed.stderr.splitlines() if line.startswith("E: ")]
    if completed.returncode != 0 or errors:
        message = errors or completed.stderr.strip().splitlines()[-5:]
        raise OutputValidationError("dsrdump: " + "; ".join(message), validator="dsrdump")


def _read_back(path: Path, original: pydicom.Dataset) -> None:
    try:
        dataset = pydicom.dcmread(path)
        if dataset.SOPClassUID == SegmentationStorage:
            hd.seg.Segmentation.from_dataset(dataset, copy=False)
        elif _is_sr(dataset):
            _read_back_sr(path)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise OutputValidationError(
            f"highdicom could not read back {original.SOPInstanceUID}: {exc}", validator="highdicom"
        ) from exc


def _read_back_sr(path: Path) -> None:
    sr = hd.sr.srread(path)
    # The document's root is the TID 1500 container itself. The document was
    # read from disk for this check alone, so parsing may change it in place.
    report = hd.sr.MeasurementReport.from_sequence([sr], copy=False)
    report.get_volumetric_roi_measurement_groups()

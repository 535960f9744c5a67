"""Header values of a received instance, as JSON for the database.

The series roles matcher reads :func:`series_header` from ``Series.header``;
the completion check reads the geometry from :func:`instance_geometry`. For
Enhanced MR Image Storage (PS3.3 A.36.2) the values live in functional group
sequences (PS3.3 C.7.6.16), so they are read from the shared group first and
then from the first frame's group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import DSdecimal, DSfloat, IS, PersonName

ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

# Plain top-level attributes copied as they are.
HEADER_KEYWORDS = (
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "SeriesNumber",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ImageType",
    "ImageOrientationPatient",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "SequenceName",
    "MRAcquisitionType",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "AcquisitionTime",
    "SeriesTime",
    "ContentTime",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "FrameOfReferenceUID",
    "SOPClassUID",
)

# Enhanced MR: header keyword -> (functional group sequence, attribute).
_FUNCTIONAL_GROUP_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "RepetitionTime": (("MRTimingAndRelatedParametersSequence", "RepetitionTime"),),
    "FlipAngle": (("MRTimingAndRelatedParametersSequence", "FlipAngle"),),
    "EchoTime": (("MREchoSequence", "EffectiveEchoTime"),),
    "InversionTime": (("MRModifierSequence", "InversionTimes"),),
    "ImageOrientationPatient": (("PlaneOrientationSequence", "ImageOrientationPatient"),),
    "SliceThickness": (("PixelMeasuresSequence", "SliceThickness"),),
    "SpacingBetweenSlices": (("PixelMeasuresSequence", "SpacingBetweenSlices"),),
    "ContrastBolusAgent": (
        ("MRContrastBolusSequence", "ContrastBolusAgent"),
        ("ContrastBolusUsageSequence", "ContrastBolusAgentAdministered"),
    ),
}


def json_value(value: Any) -> Any:
    """Convert a pydicom element value to plain JSON types (str, int, float, list, None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (MultiValue, list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, (IS, int)):
        return int(value)
    if isinstance(value, (DSfloat, DSdecimal, float)):
        return float(value)
    if isinstance(value, (UID, PersonName)):
        return str(value)
    if isinstance(value, bytes):
        return None
    return str(value)


def _element_value(dataset: Dataset, keyword: str) -> Any:
    # An empty element (type 2 with no value) is stored as None.
    element = dataset.get(keyword)
    if element in (None, ""):
        return None
    return json_value(element)


def _functional_groups(dataset: Dataset) -> list[Dataset]:
    groups = []
    for sequence_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        sequence = dataset.get(sequence_keyword)
        if sequence:
            groups.append(sequence[0])
    return groups


def _functional_group_value(groups: Sequence[Dataset], sources: tuple[tuple[str, str], ...]) -> Any:
    for group in groups:
        for macro_keyword, keyword in sources:
            macro = group.get(macro_keyword)
            if macro:
                value = _element_value(macro[0], keyword)
                if value is not None:
                    return value
    return None


def series_header(dataset: Dataset) -> dict[str, Any]:
    """Return the role matcher's header values of ``dataset``, keyed by DICOM keyword.

    Missing attributes are present with ``None``. For Enhanced MR the
    timing, echo, orientation and contrast values come from the functional
    groups when the top level lacks them.
    """
    header = {keyword: _element_value(dataset, keyword) for keyword in HEADER_KEYWORDS}
    if str(dataset.get("SOPClassUID", "")) != ENHANCED_MR_IMAGE_STORAGE:
        return header

    groups = _functional_groups(dataset)
    for keyword, sources in _FUNCTIONAL_GROUP_SOURCES.items():
        if header.get(keyword) is None:
            header[keyword] = _functional_group_value(groups, sources)
    if header.get("AcquisitionTime") is None and dataset.get("AcquisitionDateTime"):
        header["AcquisitionTime"] = str(dataset.AcquisitionDateTime)[8:]
    return header


def _float_list(value: Any, length: int) -> list[float] | None:
    try:
        numbers = [float(item) for item in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == length else None


def instance_geometry(dataset: Dataset) -> tuple[list[float] | None, list[list[float]] | None, int]:
    """Return ``(ImageOrientationPatient, per-frame ImagePositionPatient, NumberOfFrames)``.

    Single-frame instances give one position. Enhanced MR positions come from
    each frame's PlanePositionSequence and the orientation from the shared
    (or first per-frame) PlaneOrientationSequence. Missing or malformed
    values give None.
    """
    frames = int(dataset.get("NumberOfFrames") or 1)
    orientation = _float_list(dataset.get("ImageOrientationPatient"), 6)
    position = _float_list(dataset.get("ImagePositionPatient"), 3)
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return orientation, None if position is None else [position], frames

    if orientation is None:
        sources = (("PlaneOrientationSequence", "ImageOrientationPatient"),)
        orientation = _float_list(_functional_group_value(_functional_groups(dataset), sources), 6)
    shared = dataset.get("SharedFunctionalGroupsSequence")
    shared_position = None
    if shared and shared[0].get("PlanePositionSequence"):
        shared_position = _float_list(shared[0].PlanePositionSequence[0].get("ImagePositionPatient"), 3)

    positions: list[list[float]] = []
    for frame in per_frame:
        frame_position = shared_position
        if frame.get("PlanePositionSequence"):
            frame_position = _float_list(frame.PlanePositionSequence[0].get("ImagePositionPatient"), 3)
        if frame_position is None:
            return orientation, None, frames
        positions.append(frame_position)
    return orientation, positions, frames

"""Per-series findings from the header: weighting, contrast, orientation and exclusions.

:func:`examine_series` reads one series' header (keyed by DICOM keyword, as
``Series.header`` stores it) against :class:`config.roles.RoleRules` and
returns :class:`SeriesFindings` with every matched rule and the tag value
behind it. The study-level choice of roles is in :mod:`dicom_node.roles`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from config.roles import RoleRules

MR_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    }
)
# ScanOptions (0018,0022) values that vendors use for chemical fat saturation.
FAT_SAT_SCAN_OPTIONS = frozenset({"FS", "FAT", "FAT_SAT", "FATSAT", "SFS", "CHESS", "SPAIR", "SPIR"})
# Weights of the cues in a series' score, which ranks re-scans of one role.
POINTS = {"agent": 3, "name": 2, "timing": 2, "order": 1, "image": 2, "orientation": 1}


class Weighting(enum.Enum):
    """Image contrast weighting a series was acquired with."""

    T1 = "t1"
    T2 = "t2"


class Contrast(enum.Enum):
    """Whether a series was acquired after a contrast agent was given."""

    POST = "post"
    PRE = "pre"
    UNKNOWN = "unknown"


class Orientation(enum.Enum):
    """Plane of a series' slices in the patient."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


@dataclass(frozen=True)
class SeriesCandidate:
    """One series offered to role assignment.

    ``stack_complete`` is None where the slice stack was not checked; a
    complete stack wins a tie between re-scans.
    """

    series_instance_uid: str
    header: Mapping[str, Any]
    instance_count: int = 0
    stack_complete: bool | None = None


@dataclass
class SeriesFindings:
    """Header findings of one series, with the evidence for each finding."""

    candidate: SeriesCandidate
    excluded: list[str] = field(default_factory=list)
    orientation: Orientation | None = None
    weighting: Weighting | None = None
    contrast: Contrast = Contrast.UNKNOWN
    contrast_is_explicit: bool = False
    fat_suppressed: bool = False
    acquisition_seconds: float | None = None
    matched: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    score: int = 0
    contrast_score: int = 0

    @property
    def uid(self) -> str:
        """SeriesInstanceUID of the series."""
        return self.candidate.series_instance_uid

    @property
    def label(self) -> str:
        """Short name for messages: series number and description, then the UID."""
        header = self.candidate.header
        number = header.get("SeriesNumber")
        description = header.get("SeriesDescription") or "(no description)"
        prefix = f"series {number} " if number not in (None, "") else "series "
        return f"{prefix}'{description}' ({self.uid})"

    def add_match(
        self, rule: str, keyword: str, value: Any, points: int = 0, *, contrast_cue: bool = False, **extra: Any
    ) -> None:
        """Record a rule that matched a tag value, and add its points to the score.

        ``contrast_cue`` marks points for the contrast state, which do not
        rank T2 series against each other.
        """
        self.matched.append({"rule": rule, "keyword": keyword, "value": _json_value(value), **extra})
        self.score += points
        if contrast_cue:
            self.contrast_score += points

    def score_for(self, role_is_t2: bool) -> int:
        """Return the score that ranks this series among the candidates of one role."""
        return self.score - self.contrast_score if role_is_t2 else self.score


@dataclass(frozen=True)
class NameCue:
    """A pattern that matched a series name, and in which keyword."""

    keyword: str
    text: str
    match: str


def examine_series(
    candidate: SeriesCandidate, rules: RoleRules, *, use_protocol_name: bool = True
) -> SeriesFindings:
    """Read one series' header against ``rules``.

    Parameters
    ----------
    candidate : SeriesCandidate
        The series and its header.
    rules : RoleRules
        Patterns and thresholds.
    use_protocol_name : bool
        False where ProtocolName names the whole examination, as on GE
        scanners that repeat it in every series, so it carries no cue about
        this series.
    """
    findings = SeriesFindings(candidate=candidate)
    names = _names(candidate.header, use_protocol_name)

    _check_exclusions(findings, names, rules)
    _find_orientation(findings, names, rules)
    _find_weighting(findings, names, rules)
    _find_contrast(findings, names, rules)
    _find_fat_suppression(findings, names, rules)
    findings.acquisition_seconds = acquisition_seconds(candidate.header)
    return findings


def acquisition_seconds(header: Mapping[str, Any]) -> float | None:
    """Seconds after midnight of AcquisitionTime, else SeriesTime, else ContentTime.

    NOTE: a study acquired across midnight orders wrongly by this value; the
    header keys ingest stores carry no AcquisitionDate to correct it.
    """
    for keyword in ("AcquisitionTime", "SeriesTime", "ContentTime"):
        seconds = parse_tm(header.get(keyword))
        if seconds is not None:
            return seconds
    return None


def parse_tm(value: Any) -> float | None:
    """Parse a DICOM TM value (PS3.5 section 6.2, ``HHMMSS.FFFFFF``) into seconds, or None."""
    if value in (None, ""):
        return None
    # A time cut from a DT value may end in a UTC offset (&ZZXX), which is dropped.
    text = re.sub(r"[+-]\d{4}$", "", str(value).strip().replace(":", ""))
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    total = int(hours) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def slice_normal(orientation: Sequence[float] | None) -> tuple[float, float, float] | None:
    """Unit normal of ImageOrientationPatient (row cosines x column cosines), or None if invalid."""
    if orientation is None or len(orientation) != 6:
        return None
    try:
        rx, ry, rz, cx, cy, cz = (float(value) for value in orientation)
    except (TypeError, ValueError):
        return None
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    length = math.sqrt(sum(component * component for component in normal))
    if length < 1e-6:
        return None
    return (normal[0] / length, normal[1] / length, normal[2] / length)


def _names(header: Mapping[str, Any], use_protocol_name: bool) -> list[tuple[str, str]]:
    # SeriesDescription comes first: where both name a cue, it wins.
    names = []
    for keyword in ("SeriesDescription", "ProtocolName"):
        if keyword == "ProtocolName" and not use_protocol_name:
            continue
        text = str(header.get(keyword) or "").strip().lower()
        if text:
            names.append((keyword, text))
    return names


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def name_cue(patterns: Sequence[str], names: Sequence[tuple[str, str]]) -> NameCue | None:
    """Return the first match of ``patterns`` in ``names``, searching them in order."""
    for keyword, text in names:
        for pattern in patterns:
            match = _compiled(pattern).search(text)
            if match is not None:
                return NameCue(keyword=keyword, text=text, match=match.group(0))
    return None


def _image_type(header: Mapping[str, Any]) -> list[str]:
    value = header.get("ImageType") or []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(item).strip().upper() for item in value]


def _float(header: Mapping[str, Any], keyword: str) -> float | None:
    value = header.get(keyword)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _text_values(header: Mapping[str, Any], keyword: str) -> list[str]:
    value = header.get(keyword) or []
    if isinstance(value, str):
        value = value.split("\\")
    return [str(item).strip().upper() for item in value if str(item).strip()]


def _check_exclusions(findings: SeriesFindings, names: list[tuple[str, str]], rules: RoleRules) -> None:
    header = findings.candidate.header
    modality = str(header.get("Modality") or "").upper()
    if modality and modality != "MR":
        findings.excluded.append(f"Modality is {modality}, not MR")
    sop_class = header.get("SOPClassUID")
    if sop_class and sop_class not in MR_SOP_CLASSES:
        findings.excluded.append(f"SOPClassUID {sop_class} is not an MR image storage class")

    image_type = _image_type(header)
    image_type_text = "\\".join(image_type)
    if "LOCALIZER" in image_type:
        findings.excluded.append(f"localizer: ImageType {image_type_text}")
    bad_types = [value for value in image_type if value in rules.excluded_image_types and value != "LOCALIZER"]
    if bad_types:
        findings.excluded.append(f"ImageType {image_type_text} contains {', '.join(bad_types)}")

    cue = name_cue(rules.localizer_patterns, names)
    if cue is not None:
        findings.excluded.append(f"localizer: {cue.keyword} '{cue.text}' matches '{cue.match}'")
    for group, patterns in rules.exclusion_patterns.items():
        cue = name_cue(patterns, names)
        if cue is not None:
            findings.excluded.append(f"{group}: {cue.keyword} '{cue.text}' matches '{cue.match}'")

    scanning = _text_values(header, "ScanningSequence")
    if "EP" in scanning:
        scanning_text = "\\".join(scanning)
        findings.excluded.append(
            f"echo-planar acquisition (ScanningSequence {scanning_text}), as used for diffusion and perfusion"
        )
    _check_inversion(findings, rules)


def _check_inversion(findings: SeriesFindings, rules: RoleRules) -> None:
    header = findings.candidate.header
    inversion = _float(header, "InversionTime")
    if inversion is None or inversion <= 0:
        return
    echo = _float(header, "EchoTime")
    repetition = _float(header, "RepetitionTime")
    long_echo = echo is not None and echo >= rules.t2_min_echo_time_ms
    long_repetition = repetition is not None and repetition >= rules.t2_min_repetition_time_ms
    if long_echo or long_repetition:
        findings.excluded.append(
            f"inversion recovery (FLAIR/STIR): InversionTime {inversion:g} ms with "
            f"RepetitionTime {repetition} ms, EchoTime {echo} ms"
        )
    else:
        findings.add_match("inversion-prepared T1 (as MPRAGE, BRAVO)", "InversionTime", inversion)


def _find_orientation(findings: SeriesFindings, names: list[tuple[str, str]], rules: RoleRules) -> None:
    header = findings.candidate.header
    normal = slice_normal(header.get("ImageOrientationPatient"))
    if normal is not None:
        angles = {axis: math.degrees(math.acos(min(1.0, abs(normal[index])))) for index, axis in enumerate("xyz")}
        if angles["z"] <= rules.axial_tolerance_deg:
            findings.orientation = Orientation.AXIAL
        elif abs(normal[1]) >= abs(normal[0]):
            findings.orientation = Orientation.CORONAL
        else:
            findings.orientation = Orientation.SAGITTAL
        findings.add_match(
            f"{findings.orientation.value} slices: normal {angles['z']:.1f} degrees from the patient z axis",
            "ImageOrientationPatient",
            header.get("ImageOrientationPatient"),
            POINTS["orientation"] if findings.orientation is Orientation.AXIAL else 0,
        )
    else:
        for orientation, patterns in (
            (Orientation.AXIAL, rules.axial_patterns),
            (Orientation.CORONAL, rules.coronal_patterns),
            (Orientation.SAGITTAL, rules.sagittal_patterns),
        ):
            cue = name_cue(patterns, names)
            if cue is not None:
                findings.orientation = orientation
                findings.add_match(f"{orientation.value} by name", cue.keyword, cue.text, match=cue.match)
                break
        findings.rejected.append("ImageOrientationPatient is missing or invalid, so the slice stack cannot be built")

    if findings.orientation is not None and findings.orientation.value not in rules.accepted_orientations:
        findings.rejected.append(
            f"{findings.orientation.value} slices; roles take only {', '.join(rules.accepted_orientations)} series"
        )


def _timing_weighting(header: Mapping[str, Any], rules: RoleRules) -> Weighting | None:
    repetition = _float(header, "RepetitionTime")
    echo = _float(header, "EchoTime")
    if repetition is None or echo is None:
        return None
    if repetition < rules.t1_max_repetition_time_ms and echo < rules.t1_max_echo_time_ms:
        return Weighting.T1
    if repetition > rules.t2_min_repetition_time_ms and echo > rules.t2_min_echo_time_ms:
        return Weighting.T2
    return None


def _find_weighting(findings: SeriesFindings, names: list[tuple[str, str]], rules: RoleRules) -> None:
    header = findings.candidate.header
    t1_cue = name_cue(rules.t1_patterns, names)
    t2_cue = name_cue(rules.t2_patterns, names)
    by_name: Weighting | None = None
    cue: NameCue | None = None
    if t1_cue is not None and t2_cue is not None and t1_cue.keyword == t2_cue.keyword:
        findings.rejected.append(f"{t1_cue.keyword} '{t1_cue.text}' names both T1 and T2")
    elif t1_cue is not None and (t2_cue is None or t1_cue.keyword == "SeriesDescription"):
        by_name, cue = Weighting.T1, t1_cue
    elif t2_cue is not None:
        by_name, cue = Weighting.T2, t2_cue

    by_timing = _timing_weighting(header, rules)
    timing_value = {"RepetitionTime": header.get("RepetitionTime"), "EchoTime": header.get("EchoTime")}
    if by_name is not None and by_timing is not None and by_name is not by_timing:
        findings.rejected.append(
            f"{cue.keyword} '{cue.text}' names {by_name.value.upper()} but RepetitionTime "
            f"{timing_value['RepetitionTime']} ms and EchoTime {timing_value['EchoTime']} ms indicate "
            f"{by_timing.value.upper()}"
        )
        return

    if by_name is not None:
        findings.add_match(f"{by_name.value.upper()}-weighted by name", cue.keyword, cue.text, POINTS["name"], match=cue.match)
    if by_timing is not None:
        findings.add_match(f"{by_timing.value.upper()}-weighted by TR/TE", "RepetitionTime/EchoTime", timing_value, POINTS["timing"])
    findings.weighting = by_name or by_timing
    if findings.weighting is None:
        findings.rejected.append(
            f"neither T1- nor T2-weighted by name or by RepetitionTime {timing_value['RepetitionTime']} ms "
            f"and EchoTime {timing_value['EchoTime']} ms"
        )


def _find_contrast(findings: SeriesFindings, names: list[tuple[str, str]], rules: RoleRules) -> None:
    header = findings.candidate.header
    agent = str(header.get("ContrastBolusAgent") or "").strip()
    has_agent = agent.lower() not in rules.no_agent_values
    pre_cue = name_cue(rules.non_contrast_patterns, names)
    post_cue = name_cue(rules.contrast_patterns, names)

    if pre_cue is not None:
        findings.contrast = Contrast.PRE
        findings.add_match(
            "non-contrast by name", pre_cue.keyword, pre_cue.text, POINTS["name"], contrast_cue=True, match=pre_cue.match
        )
        if has_agent:
            findings.add_match("ContrastBolusAgent is set but the name marks the series non-contrast, and the name wins", "ContrastBolusAgent", agent)
    elif has_agent:
        findings.contrast = Contrast.POST
        findings.add_match("contrast agent given", "ContrastBolusAgent", agent, POINTS["agent"], contrast_cue=True)
        if post_cue is not None:
            findings.add_match(
                "post-contrast by name", post_cue.keyword, post_cue.text, POINTS["name"], contrast_cue=True, match=post_cue.match
            )
    elif post_cue is not None:
        findings.contrast = Contrast.POST
        findings.add_match(
            "post-contrast by name (ContrastBolusAgent empty)", post_cue.keyword, post_cue.text, POINTS["name"], contrast_cue=True, match=post_cue.match
        )
    findings.contrast_is_explicit = findings.contrast is not Contrast.UNKNOWN
    route = str(header.get("ContrastBolusRoute") or "").strip()
    if route and has_agent:
        findings.add_match("contrast route", "ContrastBolusRoute", route)


def _find_fat_suppression(findings: SeriesFindings, names: list[tuple[str, str]], rules: RoleRules) -> None:
    header = findings.candidate.header
    cue = name_cue(rules.fat_suppression_patterns, names)
    if cue is not None:
        findings.fat_suppressed = True
        findings.add_match("fat-suppressed", cue.keyword, cue.text, match=cue.match)
    options = [value for value in _text_values(header, "ScanOptions") if value in FAT_SAT_SCAN_OPTIONS]
    if options:
        findings.fat_suppressed = True
        findings.add_match("fat-suppressed", "ScanOptions", options)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return str(value)

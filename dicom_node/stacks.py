"""Whether the slices of one series form a contiguous stack.

Positions come from ``Instance.frame_positions`` (one ImagePositionPatient
per frame, so the frames of an Enhanced MR instance count like single-frame
instances) projected on the slice normal of ImageOrientationPatient. A stack
is contiguous when no position is missing, none is repeated and the spacing
is constant within ``StackRules.spacing_tolerance``.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from config.roles import StackRules
from db.models import Instance, Series

# Positions closer than this along the normal are the same slice position.
DUPLICATE_DISTANCE_MM = 0.01


class StackProblem(enum.Enum):
    """Reason a series is not one contiguous stack. The value is the job's reason code."""

    SLICE_GAP = "slice_gap"
    STACK_INVALID = "stack_invalid"


@dataclass(frozen=True)
class StackReport:
    """Outcome of the stack check of one series."""

    series_instance_uid: str
    slice_count: int
    spacing_mm: float | None
    problem: StackProblem | None = None
    message: str = ""

    @property
    def complete(self) -> bool:
        """Whether the series is one contiguous stack."""
        return self.problem is None


def check_stack(series: Series, rules: StackRules) -> StackReport:
    """Check that the stored instances of ``series`` form one contiguous stack."""
    instances = _unique_instances(series.instances)
    orientation = _orientation(series, instances, rules)
    uid = series.series_instance_uid
    if orientation is None:
        return StackReport(uid, 0, None, StackProblem.STACK_INVALID, "instances have missing or differing ImageOrientationPatient")

    normal = np.cross(orientation[:3], orientation[3:])
    positions = [position for instance in instances for position in (instance.frame_positions or [])]
    if len(positions) < sum(max(1, instance.number_of_frames) for instance in instances):
        return StackReport(uid, len(positions), None, StackProblem.STACK_INVALID, "some frames have no ImagePositionPatient")
    heights = sorted(float(np.dot(position, normal)) for position in positions)
    return check_heights(uid, heights, rules, header_spacing=_header_spacing(series))


def check_heights(
    series_instance_uid: str,
    heights: Sequence[float],
    rules: StackRules,
    *,
    header_spacing: float | None = None,
) -> StackReport:
    """Check sorted slice positions along the normal (mm) for gaps, repeats and uneven spacing."""
    count = len(heights)
    if count < rules.min_slices:
        return StackReport(
            series_instance_uid, count, None, StackProblem.SLICE_GAP,
            f"only {count} slice(s) received; a stack needs at least {rules.min_slices}",
        )

    steps = [later - earlier for earlier, later in zip(heights, heights[1:])]
    for index, step in enumerate(steps):
        if step < DUPLICATE_DISTANCE_MM:
            return StackReport(
                series_instance_uid, count, None, StackProblem.STACK_INVALID,
                f"two slices at the same position z={heights[index]:.1f} mm",
            )

    spacing = _expected_spacing(steps, header_spacing, rules.spacing_tolerance)
    for index, step in enumerate(steps):
        if abs(step - spacing) <= rules.spacing_tolerance * spacing:
            continue
        low, high = heights[index], heights[index + 1]
        multiple = step / spacing
        if step > spacing and abs(multiple - round(multiple)) <= rules.spacing_tolerance:
            missing = round(multiple) - 1
            what = "missing slice" if missing == 1 else f"{missing} missing slices"
            message = f"{what} between z={low:.1f} and z={high:.1f} mm, expected spacing {spacing:.1f} mm"
            return StackReport(series_instance_uid, count, spacing, StackProblem.SLICE_GAP, message)
        message = f"uneven spacing: {step:.2f} mm between z={low:.1f} and z={high:.1f} mm, expected {spacing:.1f} mm"
        return StackReport(series_instance_uid, count, spacing, StackProblem.SLICE_GAP, message)
    return StackReport(series_instance_uid, count, spacing)


def _expected_spacing(steps: list[float], header_spacing: float | None, tolerance: float) -> float:
    spacing = statistics.median(steps)
    # Where as many slices are missing as present, the median step is a
    # multiple of the real spacing, so SpacingBetweenSlices (0018,0088) gives it.
    if header_spacing and header_spacing > 0:
        multiple = spacing / header_spacing
        if round(multiple) >= 2 and abs(multiple - round(multiple)) <= tolerance:
            return header_spacing
    return spacing


def _header_spacing(series: Series) -> float | None:
    value = (series.header or {}).get("SpacingBetweenSlices")
    try:
        return None if value in (None, "") else abs(float(value))
    except (TypeError, ValueError):
        return None


def _unique_instances(instances: Sequence[Instance]) -> list[Instance]:
    # A resent instance with other content is stored as a conflict; the first
    # copy is the one the stack is built from.
    seen: set[str] = set()
    unique = []
    for instance in instances:
        if instance.is_conflict or instance.sop_instance_uid in seen:
            continue
        seen.add(instance.sop_instance_uid)
        unique.append(instance)
    return unique


def _orientation(series: Series, instances: list[Instance], rules: StackRules) -> np.ndarray | None:
    fallback = (series.header or {}).get("ImageOrientationPatient")
    values = [instance.image_orientation_patient or fallback for instance in instances]
    if not values or any(value is None or len(value) != 6 for value in values):
        return None
    first = np.array(values[0], dtype=float)
    for value in values[1:]:
        if np.max(np.abs(np.array(value, dtype=float) - first)) > rules.orientation_tolerance:
            return None
    return first

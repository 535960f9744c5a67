"""Slice stack checks: gaps, repeats, uneven spacing and Enhanced MR frames."""

from __future__ import annotations

import pytest

from config.roles import StackRules
from db.models import Instance, Series
from dicom_node.stacks import StackProblem, check_heights, check_stack
from tests.roles_helpers import AXIAL

RULES = StackRules()


def _series(frames_per_instance: list[list[float]], *, spacing: float | None = None, orientations=None) -> Series:
    series = Series(series_instance_uid="1.2.3", header={"SpacingBetweenSlices": spacing, "ImageOrientationPatient": AXIAL})
    for index, heights in enumerate(frames_per_instance):
        orientation = AXIAL if orientations is None else orientations[index]
        series.instances.append(
            Instance(
                sop_instance_uid=f"1.2.3.{index}",
                number_of_frames=len(heights),
                image_orientation_patient=orientation,
                frame_positions=[[0.0, 0.0, height] for height in heights],
                is_conflict=False,
            )
        )
    return series


def test_contiguous_stack_complete() -> None:
    report = check_stack(_series([[z] for z in (0.0, 3.0, 6.0, 9.0)]), RULES)

    assert report.complete
    assert report.slice_count == 4
    assert report.spacing_mm == pytest.approx(3.0)


def test_enhanced_frames_form_stack() -> None:
    complete = check_stack(_series([[2.5 * index for index in range(12)]]), RULES)
    gapped = check_stack(_series([[2.5 * index for index in range(12) if index != 5]]), RULES)

    assert complete.complete
    assert complete.slice_count == 12
    assert gapped.problem is StackProblem.SLICE_GAP
    assert gapped.message == "missing slice between z=10.0 and z=15.0 mm, expected spacing 2.5 mm"


def test_two_missing_slices_counted() -> None:
    report = check_heights("1", [0.0, 3.0, 6.0, 15.0, 18.0, 21.0], RULES)

    assert report.message == "2 missing slices between z=6.0 and z=15.0 mm, expected spacing 3.0 mm"


def test_duplicate_position_invalid() -> None:
    report = check_stack(_series([[0.0], [3.0], [3.0], [6.0]]), RULES)

    assert report.problem is StackProblem.STACK_INVALID
    assert "same position z=3.0" in report.message


def test_conflicting_copy_ignored() -> None:
    series = _series([[0.0], [3.0], [6.0]])
    duplicate = Instance(
        sop_instance_uid="1.2.3.1", number_of_frames=1, image_orientation_patient=AXIAL,
        frame_positions=[[0.0, 0.0, 3.0]], is_conflict=True,
    )
    series.instances.append(duplicate)

    assert check_stack(series, RULES).complete


def test_uneven_spacing_reported() -> None:
    report = check_heights("1", [0.0, 3.0, 6.0, 10.5, 13.5, 16.5], RULES)

    assert report.problem is StackProblem.SLICE_GAP
    assert report.message.startswith("uneven spacing: 4.50 mm between z=6.0 and z=10.5 mm")


def test_header_spacing_reveals_half_missing() -> None:
    heights = [0.0, 6.0, 12.0, 18.0, 21.0]

    report = check_heights("1", heights, RULES, header_spacing=3.0)

    assert report.problem is StackProblem.SLICE_GAP
    assert report.spacing_mm == pytest.approx(3.0)
    assert report.message.startswith("missing slice between z=0.0 and z=6.0 mm")


def test_too_few_slices() -> None:
    report = check_heights("1", [0.0, 3.0], RULES)

    assert report.problem is StackProblem.SLICE_GAP
    assert "only 2 slice(s) received" in report.message


def test_mixed_orientation_invalid() -> None:
    tilted = [1.0, 0.0, 0.0, 0.0, 0.9397, -0.3420]
    report = check_stack(_series([[0.0], [3.0], [6.0]], orientations=[AXIAL, AXIAL, tilted]), RULES)

    assert report.problem is StackProblem.STACK_INVALID
    assert "ImageOrientationPatient" in report.message

"""Role rules against real scanner headers from the public test data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest

from config.roles import RoleRules, StackRules
from dicom_node.roles import SeriesCandidate, assign_roles
from dicom_node.role_rules import slice_normal
from dicom_node.stacks import check_heights
from inference.result import SequenceRole
from tests.roles_helpers import header_from_dataset

MPRAGE = Path("mr_dicom_series/philips_3T_T1_mprage_sag3d")
ADC = Path("mr_dicom_series/dcmqi_qin_prostate_adc/701-ADCb500")


def _series_files(test_data_dir: Path, folder: Path) -> list[Path]:
    files = sorted((test_data_dir / folder).glob("*.dcm*"))
    if not files:
        pytest.skip(f"{folder} not found in the public test data at {test_data_dir}")
    return files


def _read(path: Path, *, headers_only: bool = True) -> pydicom.Dataset:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as stream:
            return pydicom.dcmread(stream, stop_before_pixels=headers_only)
    return pydicom.dcmread(path, stop_before_pixels=headers_only)


def _candidate(files: list[Path]) -> SeriesCandidate:
    first = _read(files[0])
    return SeriesCandidate(
        series_instance_uid=str(first.SeriesInstanceUID), header=header_from_dataset(first), instance_count=len(files)
    )


def test_philips_mprage_not_ce_t1(test_data_dir: Path) -> None:
    candidate = _candidate(_series_files(test_data_dir, MPRAGE))
    assignment = assign_roles([candidate])
    evidence = assignment.evidence[candidate.series_instance_uid]

    assert evidence["role"] is None
    assert evidence["findings"]["orientation"] == "sagittal"
    assert evidence["findings"]["weighting"] == "t1"
    assert any("sagittal slices" in reason for reason in evidence["rejected"])
    assert set(assignment.missing) == set(SequenceRole)
    assert "'ADNI_Sag3D MPRAGE'" in assignment.missing[SequenceRole.CE_T1]
    assert "sagittal slices" in assignment.missing[SequenceRole.CE_T1]


def test_philips_mprage_sagittal_allowed_still_unassigned(test_data_dir: Path) -> None:
    candidate = _candidate(_series_files(test_data_dir, MPRAGE))
    assignment = assign_roles([candidate], RoleRules(accepted_orientations=["axial", "sagittal"]))
    evidence = assignment.evidence[candidate.series_instance_uid]

    # No ContrastBolusAgent and no name cue: the node must not guess CE-T1 or T1.
    assert SequenceRole.CE_T1 not in assignment.chosen
    assert evidence["findings"]["contrast"] == "unknown"
    assert any("ambiguous" in reason for reason in evidence["rejected"])
    assert "ambiguous" in assignment.missing[SequenceRole.CE_T1]


def test_ge_adc_map_gets_no_role(test_data_dir: Path) -> None:
    candidate = _candidate(_series_files(test_data_dir, ADC))
    assignment = assign_roles([candidate])
    evidence = assignment.evidence[candidate.series_instance_uid]

    assert assignment.chosen == {}
    assert any("DERIVED" in reason for reason in evidence["rejected"])
    assert any(reason.startswith("diffusion") for reason in evidence["rejected"])
    assert any("echo-planar" in reason for reason in evidence["rejected"])


def test_real_series_together_name_missing_roles(test_data_dir: Path) -> None:
    mprage = _candidate(_series_files(test_data_dir, MPRAGE))
    adc = _candidate(_series_files(test_data_dir, ADC))
    assignment = assign_roles([mprage, adc])

    assert assignment.chosen == {}
    for role in SequenceRole:
        assert mprage.series_instance_uid in assignment.missing[role]
        assert adc.series_instance_uid in assignment.missing[role]


def test_real_mprage_stack_is_contiguous(test_data_dir: Path) -> None:
    files = _series_files(test_data_dir, MPRAGE)
    datasets = [_read(path) for path in files]
    normal = np.array(slice_normal([float(value) for value in datasets[0].ImageOrientationPatient]))
    heights = sorted(float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets)

    report = check_heights("mprage", heights, StackRules())
    gapped = check_heights("mprage", heights[:80] + heights[81:], StackRules())

    assert report.complete
    assert report.slice_count == 170
    assert report.spacing_mm == pytest.approx(1.0, abs=0.01)
    assert not gapped.complete
    assert gapped.problem.value == "slice_gap"
    assert "missing slice between" in gapped.message

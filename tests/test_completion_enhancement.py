"""The image check that finds the post-contrast series among two unlabelled T1 series."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.roles import EnhancementRules
from config.settings import Settings
from db.models import Job, Series, utcnow
from db.states import JobState
from dicom_node import jobs
from dicom_node.completion import CompletionScheduler
from dicom_node.enhancement_check import SeriesVolume, compare_enhancement, load_volume, resample_onto
from tests.roles_helpers import add_series, add_study, mr_header, t2_header, write_mr_slices

SLICES = [4.0 * index for index in range(8)]
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.77"


def _phantom(*, enhanced: bool, seed: int) -> np.ndarray:
    """Return a head-sized disk of tissue; ``enhanced`` adds a bright lesion and vessel."""
    generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:64, 0:64]
    body = (rows - 32) ** 2 + (columns - 32) ** 2 < 26**2
    volume = np.zeros((len(SLICES), 64, 64))
    volume[:, body] = 400.0
    volume[:, body] += generator.normal(0.0, 15.0, size=(len(SLICES), int(body.sum())))
    volume[:, 20:30, 20:28] += 30.0
    if enhanced:
        volume[2:6, 30:42, 30:42] = 1200.0
        volume[:, 40:44, 18:22] = 1500.0
    return np.clip(volume, 0, 4000).astype(np.uint16)


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        storage={"data_dir": tmp_path},
        assembly={"quiet_period_s": 0.2, "force_complete_s": 5.0, "check_interval_s": 0.05},
    )


def _add_written_series(
    session: Session, study, header: dict, pixels: np.ndarray, spool: Path
) -> Series:
    series_uid = generate_uid()
    files = write_mr_slices(
        spool / series_uid, pixels, header, z_positions=SLICES, series_uid=series_uid, study_uid=study.study_instance_uid
    )
    series = add_series(session, study, header, SLICES, paths=[str(path.relative_to(spool)) for path in files])
    series.series_instance_uid = series_uid
    session.flush()
    return series


def _study_with_pair(
    factory: sessionmaker[Session], tmp_path: Path, *, second_enhanced: bool, received_at: dt.datetime
) -> tuple[int, str, str]:
    spool = _settings(tmp_path).storage.resolved_spool_dir
    common = {"SeriesDescription": "t1_tse_tra", "FrameOfReferenceUID": FRAME_OF_REFERENCE}
    with factory() as session:
        study = add_study(session, last_received_at=received_at)
        jobs.note_study_activity(session, study, new_instance=True)
        first = _add_written_series(
            session, study, mr_header(**common, SeriesNumber=3, AcquisitionTime="100500"), _phantom(enhanced=False, seed=1), spool
        )
        add_series(session, study, t2_header(SeriesDescription="t2_tse_tra", SeriesNumber=4), SLICES)
        second = _add_written_series(
            session,
            study,
            mr_header(**common, SeriesNumber=7, AcquisitionTime="102000"),
            _phantom(enhanced=second_enhanced, seed=2),
            spool,
        )
        session.commit()
        return study.id, first.series_instance_uid, second.series_instance_uid


def _latest_job(factory: sessionmaker[Session], study_id: int) -> Job:
    with factory() as session:
        return session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.id.desc())).first()


def test_image_check_picks_enhanced_series(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, pre_uid, post_uid = _study_with_pair(session_factory, tmp_path, second_enhanced=True, received_at=start)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    outcomes = scheduler.check_studies(start + dt.timedelta(seconds=0.3))
    job = _latest_job(session_factory, study_id)

    assert [outcome.action.value for outcome in outcomes] == ["queued"]
    assert job.state is JobState.QUEUED
    assert job.input_series["ce_t1"] == post_uid
    assert job.input_series["t1"] == pre_uid
    with session_factory() as session:
        evidence = session.scalars(select(Series).where(Series.series_instance_uid == post_uid)).one().role_evidence
    summary = evidence["image_check"]["summary"]
    assert summary.startswith("image comparison (overlapping region): series 7 't1_tse_tra' is brighter")
    assert "top 2% voxels -> CE-T1" in summary
    assert evidence["image_check"]["ratio"] > 1.15
    assert evidence["image_check"]["fraction_second_brighter"] > evidence["image_check"]["fraction_first_brighter"]


def test_image_check_undecided_fails_ambiguous(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, _, _ = _study_with_pair(session_factory, tmp_path, second_enhanced=False, received_at=start)
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    assert [outcome.action.value for outcome in scheduler.check_studies(start + dt.timedelta(seconds=0.3))] == ["waiting"]
    scheduler.check_studies(start + dt.timedelta(seconds=6.0))
    job = _latest_job(session_factory, study_id)

    assert job.state is JobState.FAILED_INPUT
    assert job.reason_code == "missing_role"
    assert "Required series CE-T1, T1" in job.error_message
    assert "ambiguous" in job.error_message
    assert "-> undecided" in job.error_message


def test_image_check_unreadable_file_is_ambiguous(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    start = utcnow()
    study_id, pre_uid, _ = _study_with_pair(session_factory, tmp_path, second_enhanced=True, received_at=start)
    spool = _settings(tmp_path).storage.resolved_spool_dir
    for path in (spool / pre_uid).iterdir():
        path.write_bytes(b"not a DICOM file")
    scheduler = CompletionScheduler(_settings(tmp_path), session_factory)

    assert [outcome.action.value for outcome in scheduler.check_studies(start + dt.timedelta(seconds=0.3))] == ["waiting"]
    with session_factory() as session:
        evidence = session.scalars(select(Series).where(Series.series_instance_uid == pre_uid)).one().role_evidence
    assert "failed: cannot read pixel data" in evidence["image_check"]["summary"]
    assert _latest_job(session_factory, study_id).state is JobState.WAITING


def _volume(pixels: np.ndarray, spacing: float, heights: list[float]) -> SeriesVolume:
    return SeriesVolume(
        pixels=pixels.astype(np.float32),
        positions=np.array([[-50.0, -60.0, height] for height in heights]),
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        row_spacing=spacing,
        column_spacing=spacing,
    )


def test_resample_maps_patient_positions() -> None:
    # Source voxels hold their own patient x coordinate, on a 1 mm grid.
    columns = np.arange(128) * 1.0 - 50.0
    source = _volume(np.broadcast_to(columns, (8, 128, 128)).copy(), 1.0, SLICES)
    target = _volume(np.zeros((8, 64, 64)), 2.0, SLICES)

    resampled, inside = resample_onto(source, target)

    expected_x = np.arange(64) * 2.0 - 50.0
    assert inside.all()
    assert np.allclose(resampled[3, 10], expected_x)


def test_compare_across_grids_finds_enhancement() -> None:
    pre = _phantom(enhanced=False, seed=3).astype(np.float32)
    post = np.kron(_phantom(enhanced=True, seed=4), np.ones((1, 2, 2))).astype(np.float32)

    verdict = compare_enhancement(
        _volume(pre, 2.0, SLICES),
        _volume(post, 1.0, SLICES),
        EnhancementRules(),
        first_uid="pre",
        second_uid="post",
        same_frame_of_reference=True,
    )

    assert verdict.post_contrast_uid == "post"
    assert verdict.details["region"] == "overlapping region"


def test_load_volume_sorts_and_reduces(tmp_path: Path) -> None:
    pixels = _phantom(enhanced=True, seed=5)
    header = mr_header(FrameOfReferenceUID=FRAME_OF_REFERENCE)
    files = write_mr_slices(tmp_path, pixels, header, z_positions=SLICES, series_uid=generate_uid(), study_uid=generate_uid())

    volume = load_volume(list(reversed(files)), EnhancementRules(max_in_plane=32, max_slices_read=4))

    assert volume.pixels.shape == (4, 32, 32)
    assert volume.row_spacing == pytest.approx(4.0)
    assert list(volume.positions[:, 2]) == sorted(volume.positions[:, 2])


def test_compare_without_shared_frame_uses_whole_series() -> None:
    pre = _phantom(enhanced=False, seed=6).astype(np.float32)
    post = _phantom(enhanced=True, seed=7).astype(np.float32)

    verdict = compare_enhancement(
        _volume(post, 2.0, SLICES),
        _volume(pre, 2.0, [height + 100.0 for height in SLICES]),
        EnhancementRules(),
        first_uid="post",
        second_uid="pre",
        same_frame_of_reference=False,
        labels=("series 7", "series 3"),
    )

    assert verdict.post_contrast_uid == "post"
    assert verdict.details["region"] == "whole series"
    assert verdict.summary.startswith("image comparison (whole series): series 7 is brighter after normalisation by")

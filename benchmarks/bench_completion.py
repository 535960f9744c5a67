"""Measure how soon a complete study's job is queued after its last instance.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_completion [--studies 20] [--database-url URL]

With a PostgreSQL URL the tables go into a new schema that is dropped at
the end, so the database is left as it was.

Each synthetic study has a localizer and axial T1, T2 and CE-T1 series of
``--slices`` 64 x 64 slices. Its instances are stored through
``dicom_node.ingest.Ingestor`` (spool files with fsync, database rows),
with the studies' starts spread over one quiet period so the scheduler
always has studies in every phase. The real :class:`CompletionScheduler`
thread runs with the default check interval and quiet period. For each
study the script prints (job queued_at - last instance received_at) - quiet
period, then the median and the maximum. The target is at most 2 s.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from config.settings import Settings
from db.migrate import upgrade_to_head
from db.models import Job, Study
from db.session import create_db_engine, make_session_factory
from db.states import JobState
from dicom_node.completion import CompletionScheduler, as_utc
from dicom_node.ingest import Ingestor, Sender
from dicom_node.spool import Spool

SERIES = (
    ("localizer", 1, 550.0, 12.0, ""),
    ("t1_tse_tra", 3, 550.0, 12.0, ""),
    ("t2_tse_tra_fs", 4, 4200.0, 95.0, ""),
    ("t1_tse_fs_tra_post", 7, 550.0, 12.0, "Gadovist"),
)


def _instance(study_uid: str, series_uid: str, series: tuple, index: int, frame_uid: str) -> tuple[Dataset, bytes]:
    description, number, repetition, echo, agent = series
    dataset = Dataset()
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = frame_uid

    dataset.Modality = "MR"
    dataset.SeriesDescription = description
    dataset.SeriesNumber = number
    dataset.InstanceNumber = index + 1
    dataset.RepetitionTime = repetition
    dataset.EchoTime = echo
    dataset.ContrastBolusAgent = agent
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    dataset.AcquisitionTime = f"10{number:02d}00"

    dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    dataset.ImagePositionPatient = [-64.0, -64.0, 3.0 * index]
    dataset.PixelSpacing = [2.0, 2.0]
    dataset.SliceThickness = 3.0
    dataset.Rows = dataset.Columns = 64
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.full((64, 64), 400, dtype=np.uint16).tobytes()

    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return dataset, buffer.getvalue()


def _send_study(ingestor: Ingestor, slices: int) -> str:
    study_uid, frame_uid = generate_uid(), generate_uid()
    sender = Sender(ae_title="BENCH", host="127.0.0.1")
    for series in SERIES:
        series_uid = generate_uid()
        for index in range(slices):
            dataset, encoded = _instance(study_uid, series_uid, series, index, frame_uid)
            result = ingestor.store(dataset, encoded, requested_sop_class=MRImageStorage, sender=sender)
            if result.status != 0:
                raise RuntimeError(f"ingest returned status 0x{result.status:04X} for study {study_uid}")
    return study_uid


def _latencies(factory, study_uids: list[str], quiet_s: float) -> list[float]:
    with factory() as session:
        rows = session.execute(
            select(Study.last_received_at, Job.queued_at).join(Job, Job.study_id == Study.id).where(
                Study.study_instance_uid.in_(study_uids)
            )
        ).all()
    return [(as_utc(queued) - as_utc(last)).total_seconds() - quiet_s for last, queued in rows]


@contextmanager
def _database(url: str | None) -> Iterator[str | None]:
    if url is None or make_url(url).get_backend_name() != "postgresql":
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_db_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    """Send the studies, wait for their jobs to be queued and print the latency figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="number of studies (default 20)")
    parser.add_argument("--slices", type=int, default=12, help="slices per series (default 12)")
    parser.add_argument("--database-url", default=None, help="job database URL (default: SQLite in a temporary folder)")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, _database(arguments.database_url) as database_url:
        settings = Settings(storage={"data_dir": Path(folder)}, database={"url": database_url})
        engine = create_db_engine(settings.database_url)
        upgrade_to_head(engine)
        factory = make_session_factory(engine)
        ingestor = Ingestor(Spool(settings.storage.resolved_spool_dir, fsync=True), factory, min_free_mb=0)
        quiet_s = settings.assembly.quiet_period_s
        scheduler = CompletionScheduler(settings, factory)
        scheduler.start()
        try:
            study_uids = []
            spread_s = quiet_s / arguments.studies
            for _ in range(arguments.studies):
                began = time.monotonic()
                study_uids.append(_send_study(ingestor, arguments.slices))
                time.sleep(max(0.0, spread_s - (time.monotonic() - began)))
            deadline = time.monotonic() + quiet_s + 60.0
            while time.monotonic() < deadline:
                with factory() as session:
                    waiting = session.scalar(
                        select(Job.id).where(Job.state == JobState.WAITING).limit(1)
                    )
                if waiting is None:
                    break
                time.sleep(0.2)
        finally:
            scheduler.stop()
        latencies = _latencies(factory, study_uids, quiet_s)
        engine.dispose()

    if len(latencies) != arguments.studies:
        raise SystemExit(f"only {len(latencies)} of {arguments.studies} jobs were queued before the deadline")
    print(f"database: {engine.url.get_backend_name()}, studies: {arguments.studies}, "
          f"instances per study: {len(SERIES) * arguments.slices}")
    print(f"quiet period {quiet_s:g} s, check interval {settings.assembly.check_interval_s:g} s")
    print(f"(queued_at - last instance) - quiet period: median {statistics.median(latencies):.3f} s, "
          f"max {max(latencies):.3f} s")


if __name__ == "__main__":
    main()

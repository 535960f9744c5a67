"""The node as a real process with real DICOM peers, for the acceptance tests and the end-to-end benchmark.

:class:`NodeProcess` runs ``otscc-node serve`` from a TOML file written by
:func:`write_node_config`, optionally inside Orthanc's network namespace.
:class:`NodeDatabase` reads the node's SQLite job database read-only.
:func:`received_results` reads what a DCMTK ``storescp`` stored, and the
``orthanc_*`` functions move files in and out of Orthanc over its REST API.
The DICOM checks (:func:`seg_mask_on_grid`, :func:`dice`,
:func:`sr_probability`, :func:`sr_algorithm_names`) read the node's SEG and
SR back with pydicom only.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from db.models import Delivery, DeliveryAttempt, Instance, Job, Series, Study
from inference.result import SequenceRole
from tests.nomogram_helpers import hand_model_document
from tests.peers import OrthancPeer, require_binary, stop_process, wait_until
from training.phantom import PhantomStudy, t_stage

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEMO_SEGMENTATION = REPOSITORY_ROOT / "models" / "demo" / "segmentation"
DEMO_NOMOGRAM = REPOSITORY_ROOT / "models" / "demo" / "nomogram.json"
NODE_AE = "OTSCC_NODE"
RESULTS_AE = "RESULTS"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"})
PROBABILITY_CODE = "LNMPROB"
# DCM 111001 "Algorithm Name": the node's SR names each model it used with this concept.
ALGORITHM_NAME_CODE = "111001"
# DCM 111245 "No algorithms succeeded; without findings", the failure report's outcome.
NONE_SUCCEEDED_CODE = "111245"
NODE_START_TIMEOUT_S = 90.0


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelFiles:
    """The segmentation package folder and nomogram file the node is configured with."""

    segmentation: Path
    nomogram: Path
    is_shipped_demo: bool


def shipped_demo_models() -> ModelFiles | None:
    """Return the demo models under ``models/demo`` where both are present."""
    if (DEMO_SEGMENTATION / "manifest.json").is_file() and DEMO_NOMOGRAM.is_file():
        return ModelFiles(DEMO_SEGMENTATION, DEMO_NOMOGRAM, True)
    return None


def threshold_models(folder: Path, input_size: int = 64) -> ModelFiles:
    """Write a threshold segmentation package and the hand-written nomogram into ``folder``.

    The 1 x 1 convolution labels tumour where the z-scored CE-T1 is bright,
    which finds the enhancing phantom lesion without any training, so the
    node runs its whole pipeline in seconds.
    """
    from inference.model_package import write_package
    from tests.inference_helpers import threshold_model

    loaded = threshold_model(["ce_t1", "t2", "t1"], input_size=input_size, background_bias=2.0)
    manifest = dataclasses.replace(loaded.manifest, name="threshold-acceptance", version="1.0.0")
    segmentation = write_package(loaded.model, folder / "segmentation", manifest)
    nomogram = folder / "nomogram.json"
    nomogram.write_text(json.dumps(hand_model_document(), indent=2), encoding="utf-8")
    return ModelFiles(segmentation, nomogram, False)


def acceptance_models(folder: Path) -> ModelFiles:
    """Return the shipped demo models, or threshold models written into ``folder`` where they are absent."""
    return shipped_demo_models() or threshold_models(folder)


def write_clinical_csv(path: Path, phantoms: Sequence[PhantomStudy]) -> Path:
    """Write the phantoms' T category and depth of invasion to a clinical CSV keyed by AccessionNumber.

    The shipped demo nomogram uses both variables and imputes neither, so
    without them the node reports no probability.
    """
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["AccessionNumber", "t_stage", "doi_mm"])
        for phantom in phantoms:
            header = pydicom.dcmread(phantom.files[SequenceRole.CE_T1][0], stop_before_pixels=True)
            writer.writerow([header.AccessionNumber, t_stage(phantom.max_diameter_mm, phantom.doi_mm), f"{phantom.doi_mm:.2f}"])
    return path


# ---------------------------------------------------------------- node configuration and process


@dataclass(frozen=True)
class Destination:
    """A peer the node sends its results to."""

    name: str
    ae_title: str
    port: int
    host: str = "127.0.0.1"


def write_node_config(
    folder: Path,
    *,
    port: int,
    models: ModelFiles,
    destinations: Sequence[Destination],
    quiet_period_s: float = 1.0,
    force_complete_s: float = 60.0,
    backoff_initial_s: float = 0.5,
    workers: int = 1,
    max_associations: int = 16,
    test_timings: bool = True,
    clinical_csv: Path | None = None,
) -> Path:
    """Write the node's TOML settings into ``folder`` and return the file.

    The database and spool live under ``folder / "data"`` and the dashboard
    is off. ``test_timings`` shortens the check and poll intervals and the
    retry backoff and turns fsync off, because the tests never cut the
    power. Without it, every setting but the quiet period, the force-complete
    timeout and the workers keeps its default. ``clinical_csv`` is the
    clinical CSV file the node looks studies up in, by AccessionNumber.
    """
    lines = [
        'log_level = "INFO"',
        "[node]",
        f'ae_title = "{NODE_AE}"',
        'bind_address = "127.0.0.1"',
        f"port = {port}",
        f"max_associations = {max_associations}",
        "[storage]",
        f'data_dir = "{folder / "data"}"',
        "min_free_mb = 0",
        *(["fsync = false"] if test_timings else []),
        "[assembly]",
        f"quiet_period_s = {quiet_period_s}",
        f"force_complete_s = {force_complete_s}",
        *(["check_interval_s = 0.5"] if test_timings else []),
        "[inference]",
        f'segmentation_model = "{models.segmentation}"',
        f'nomogram_model = "{models.nomogram}"',
        f"workers = {workers}",
        "[dashboard]",
        "enabled = false",
    ]
    if clinical_csv is not None:
        lines += ["[clinical]", f'csv_file = "{clinical_csv}"', 'key = "accession_number"']
    if test_timings:
        lines += [
            "[delivery]",
            f"backoff_initial_s = {backoff_initial_s}",
            "backoff_max_s = 4.0",
            "max_attempts = 30",
            "poll_interval_s = 0.2",
            "association_timeout_s = 10.0",
        ]
    for destination in destinations:
        lines += [
            "[[destinations]]",
            f'name = "{destination.name}"',
            f'ae_title = "{destination.ae_title}"',
            f'host = "{destination.host}"',
            f"port = {destination.port}",
        ]
    config = folder / "node.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def node_environment() -> dict[str, str]:
    """Return this environment without the node's overrides, so only the config file counts."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTSCC_") and key != "DATABASE_URL"}
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)
    return environment


def echo_succeeds(port: int, prefix: Sequence[str] = ()) -> bool:
    """Whether DCMTK ``echoscu`` gets a C-ECHO Success from the node on ``127.0.0.1:port``."""
    command = [*prefix, require_binary("echoscu"), "-aec", NODE_AE, "-to", "2", "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, timeout=20, check=False).returncode == 0


class NodeProcess:
    """``otscc-node serve`` as a subprocess that can be started again, stopped or killed.

    Parameters
    ----------
    config : Path
        The TOML settings file.
    port : int
        The node's DICOM port, as in ``config``.
    log_path : Path
        The node's output is appended here, across restarts.
    prefix : sequence of str
        Runs the node through another command, such as Orthanc's ``nsenter`` prefix.
    """

    def __init__(self, config: Path, port: int, log_path: Path, prefix: Sequence[str] = ()) -> None:
        self.config = config
        self.port = port
        self.log_path = log_path
        self.prefix = list(prefix)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """Process id of the running node."""
        if self.process is None:
            raise RuntimeError("the node is not running; call start() first")
        return self.process.pid

    def start(self) -> None:
        """Start the node and wait until it responds to C-ECHO."""
        command = [*self.prefix, sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(self.config)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=node_environment(), stdout=log, stderr=subprocess.STDOUT)
        process = self.process
        wait_until(
            lambda: process.poll() is not None or echo_succeeds(self.port, self.prefix),
            NODE_START_TIMEOUT_S,
            f"otscc-node serve to answer C-ECHO on port {self.port}",
            0.3,
        )
        if process.poll() is not None:
            raise RuntimeError(f"otscc-node serve exited with {process.returncode}: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the node with SIGTERM (SIGKILL after a timeout)."""
        if self.process is not None:
            stop_process(self.process, timeout_s=30.0)

    def kill(self) -> None:
        """Kill the node with SIGKILL and wait for it, as a power cut or the OOM killer would."""
        if self.process is None:
            raise RuntimeError("the node is not running; call start() first")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def peak_rss_kib(self) -> int:
        """Return the peak resident set size (VmHWM), in KiB, of the node and its child processes, summed.

        The pipeline runs in a worker process, so the node's memory is the
        sum over the process tree. Each process reaches its peak at its own
        time, so the sum is an upper bound of the peak of the whole.
        """
        total = _peak_rss_kib(self.pid)
        for child in _descendants(self.pid):
            try:
                total += _peak_rss_kib(child)
            except FileNotFoundError:
                continue  # it ended after it was listed
        return total

    def log_tail(self, characters: int = 4000) -> str:
        """Return the end of the node's log, for assertion messages."""
        return self.log_path.read_text(errors="replace")[-characters:]


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in listing.read_text().split()]
        except FileNotFoundError:
            continue  # the thread or process ended meanwhile
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"VmHWM not found in /proc/{pid}/status")


# ---------------------------------------------------------------- the node's database


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime, because SQLite returns stored times without a zone."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


@dataclass(frozen=True)
class JobView:
    """One job of a study, as the tests read it."""

    id: int
    state: str
    reason_code: str | None
    error_message: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result_summary: dict


class NodeDatabase:
    """The node's SQLite job database, opened read-only.

    Parameters
    ----------
    path : Path
        The database file, which the node must have created already.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine: Engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    def jobs(self, study_instance_uid: str) -> list[JobView]:
        """Return the jobs of a study, oldest first (none if the study is unknown)."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(Job).join(Study).where(Study.study_instance_uid == study_instance_uid).order_by(Job.id)
            ).all()
            return [
                JobView(
                    job.id,
                    job.state.value,
                    job.reason_code,
                    job.error_message,
                    None if job.queued_at is None else as_utc(job.queued_at),
                    None if job.started_at is None else as_utc(job.started_at),
                    None if job.finished_at is None else as_utc(job.finished_at),
                    dict(job.result_summary or {}),
                )
                for job in rows
            ]

    def job_states(self, study_instance_uid: str) -> list[str]:
        """Return the states of a study's jobs, oldest first."""
        return [job.state for job in self.jobs(study_instance_uid)]

    def instance_count(self, study_instance_uid: str) -> int:
        """Return how many instance rows the study has."""
        with Session(self._engine) as session:
            return session.scalar(
                select(func.count(Instance.id))
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .where(Study.study_instance_uid == study_instance_uid)
            )

    def last_received_at(self, study_instance_uid: str) -> dt.datetime:
        """Return when the study's last instance was received."""
        with Session(self._engine) as session:
            value = session.scalar(
                select(func.max(Instance.received_at))
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .where(Study.study_instance_uid == study_instance_uid)
            )
        if value is None:
            raise LookupError(f"no instance of study {study_instance_uid} in {self.path}")
        return as_utc(value)

    def transfer_syntaxes(self, study_instance_uid: str) -> set[str]:
        """Return the transfer syntaxes the study's instances were stored in."""
        with Session(self._engine) as session:
            return set(
                session.scalars(
                    select(Instance.transfer_syntax_uid)
                    .join(Series, Instance.series_id == Series.id)
                    .join(Study, Series.study_id == Study.id)
                    .where(Study.study_instance_uid == study_instance_uid)
                ).all()
            )

    def deliveries(self, job_id: int) -> list[tuple[str, list[str]]]:
        """Return (state, output kinds) of every delivery of a job."""
        with Session(self._engine) as session:
            rows = session.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)).all()
            return [(delivery.state.value, list(delivery.output_kinds or [])) for delivery in rows]

    def delivered_at(self, job_id: int) -> dt.datetime | None:
        """Return when the job's last delivery was completed, or None while one is not."""
        with Session(self._engine) as session:
            values = session.scalars(select(Delivery.delivered_at).where(Delivery.job_id == job_id)).all()
        if not values or any(value is None for value in values):
            return None
        return max(as_utc(value) for value in values)

    def delivery_attempts(self, job_id: int) -> list[tuple[str, float | None]]:
        """Return (outcome, duration in seconds) of every delivery attempt of a job, oldest first."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(DeliveryAttempt.outcome, DeliveryAttempt.duration_s)
                .join(Delivery, DeliveryAttempt.delivery_id == Delivery.id)
                .where(Delivery.job_id == job_id)
                .order_by(DeliveryAttempt.id)
            ).all()
        return [(outcome, duration) for outcome, duration in rows]


def jobs_from_cli(config: Path, *arguments: str) -> list[dict]:
    """Return the jobs ``otscc-node jobs --json`` lists with the node's settings file."""
    command = [sys.executable, "-m", "dicom_node.cli", "jobs", "--config", str(config), "--json", *arguments]
    completed = subprocess.run(command, cwd=REPOSITORY_ROOT, env=node_environment(), capture_output=True, text=True, timeout=60, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"otscc-node jobs failed with {completed.returncode}: {completed.stderr[-2000:]}")
    return list(json.loads(completed.stdout)["jobs"])


def wait_for_job_state(
    database: NodeDatabase, study_instance_uid: str, states: Sequence[str], timeout_s: float, node: NodeProcess | None = None
) -> JobView:
    """Wait until the study's newest job is in one of ``states`` and return it."""
    found: list[JobView] = []

    def reached() -> bool:
        if node is not None and node.process is not None and node.process.poll() is not None:
            raise RuntimeError(f"the node exited with {node.process.returncode}: {node.log_tail()}")
        found[:] = database.jobs(study_instance_uid)
        return bool(found) and found[-1].state in states

    try:
        wait_until(reached, timeout_s, f"a job of study {study_instance_uid} in state {'/'.join(states)}", 0.1)
    except TimeoutError as exc:
        seen = [job.state for job in found]
        tail = node.log_tail() if node is not None else ""
        raise TimeoutError(f"{exc}; jobs seen: {seen}\n{tail}") from exc
    return found[-1]


# ---------------------------------------------------------------- results received by storescp


def read_received(folder: Path) -> list[pydicom.Dataset]:
    """Read every complete DICOM file a ``storescp`` wrote into ``folder``.

    A file storescp is still writing fails to parse and is left for the next call.
    """
    datasets = []
    for path in sorted(folder.glob("*")):
        if not path.is_file():
            continue
        try:
            datasets.append(pydicom.dcmread(path))
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError):
            continue
    return datasets


@dataclass(frozen=True)
class StudyResults:
    """The result objects a peer received for one study."""

    seg: list[pydicom.Dataset]
    sr: list[pydicom.Dataset]
    other: list[pydicom.Dataset]


def results_by_study(datasets: Sequence[pydicom.Dataset]) -> dict[str, StudyResults]:
    """Group received objects by StudyInstanceUID into SEG, SR and anything else."""
    grouped: dict[str, StudyResults] = {}
    for ds in datasets:
        entry = grouped.setdefault(str(ds.StudyInstanceUID), StudyResults([], [], []))
        sop_class = str(ds.SOPClassUID)
        if sop_class == SEG_SOP_CLASS:
            entry.seg.append(ds)
        elif sop_class in SR_SOP_CLASSES:
            entry.sr.append(ds)
        else:
            entry.other.append(ds)
    return grouped


def received_results(folder: Path, study_instance_uid: str) -> StudyResults:
    """Return what the peer writing into ``folder`` received for one study."""
    return results_by_study(read_received(folder)).get(study_instance_uid, StudyResults([], [], []))


def storescp_args() -> list[str]:
    """``storescp`` options that keep every received copy: a duplicate gets its own file."""
    return ["+uf"]


# ---------------------------------------------------------------- Orthanc over REST


def _run_in_namespace(orthanc: OrthancPeer, script: str, arguments: Sequence[str], timeout_s: float) -> str:
    completed = subprocess.run(
        orthanc.command_in_namespace([sys.executable, "-c", script, *arguments]),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"Orthanc REST call failed: {completed.stderr.strip()[-800:]}")
    return completed.stdout


_UPLOAD_SCRIPT = """
import sys, urllib.request
url = sys.argv[1]
for path in sys.argv[2:]:
    with open(path, "rb") as handle:
        request = urllib.request.Request(url, data=handle.read(), method="POST")
    urllib.request.urlopen(request, timeout=30).read()
"""

_DOWNLOAD_SCRIPT = """
import sys, urllib.request
base, folder = sys.argv[1], sys.argv[2]
for instance_id in sys.argv[3:]:
    data = urllib.request.urlopen(f"{base}/instances/{instance_id}/file", timeout=30).read()
    with open(f"{folder}/{instance_id}.dcm", "wb") as handle:
        handle.write(data)
"""


def orthanc_upload(orthanc: OrthancPeer, paths: Sequence[Path]) -> None:
    """Store ``paths`` in Orthanc with ``POST /instances``, as a modality's upload would."""
    url = f"http://127.0.0.1:{orthanc.http_port}/instances"
    _run_in_namespace(orthanc, _UPLOAD_SCRIPT, [url, *[str(path) for path in paths]], 120)


def orthanc_study_id(orthanc: OrthancPeer, study_instance_uid: str) -> str:
    """Return Orthanc's id of the study with ``study_instance_uid``."""
    ids = orthanc.rest_post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_instance_uid}})
    if len(ids) != 1:
        raise LookupError(f"Orthanc holds {len(ids)} studies with StudyInstanceUID {study_instance_uid}")
    return ids[0]


def orthanc_series_by_modality(orthanc: OrthancPeer, study_id: str) -> dict[str, list[str]]:
    """Return Orthanc's instance ids of a study, grouped by the series' Modality."""
    grouped: dict[str, list[str]] = {}
    for series in orthanc.rest_get(f"/studies/{study_id}/series"):
        modality = series["MainDicomTags"].get("Modality", "")
        grouped.setdefault(modality, []).extend(series["Instances"])
    return grouped


def orthanc_download(orthanc: OrthancPeer, instance_ids: Sequence[str], folder: Path) -> list[pydicom.Dataset]:
    """Fetch instances with ``GET /instances/<id>/file`` into ``folder`` and read them."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{orthanc.http_port}"
    _run_in_namespace(orthanc, _DOWNLOAD_SCRIPT, [base, str(folder), *instance_ids], 60)
    return [pydicom.dcmread(folder / f"{instance_id}.dcm") for instance_id in instance_ids]


# ---------------------------------------------------------------- reading SEG and SR


def _frame_source_uid(frame_item: pydicom.Dataset) -> str | None:
    for derivation in frame_item.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            return str(source.ReferencedSOPInstanceUID)
    return None


def _frame_position(frame_item: pydicom.Dataset) -> tuple[float, ...] | None:
    positions = frame_item.get("PlanePositionSequence", [])
    if not positions:
        return None
    return tuple(round(float(value), 3) for value in positions[0].ImagePositionPatient)


def seg_mask_on_grid(
    seg: pydicom.Dataset, source_uids: Sequence[str], source_positions: Sequence[Sequence[float]], shape: tuple[int, int, int]
) -> np.ndarray:
    """Rebuild the SEG's segments as one boolean volume on the source grid.

    Each frame is placed on the slice whose SOP Instance UID its derivation
    references in its Derivation Image Functional Group, or,
    where a frame has no reference, on the slice at its ImagePositionPatient.
    ``source_uids[k]`` and ``source_positions[k]`` describe slice ``k`` of ``shape``.
    """
    slice_by_uid = {uid: index for index, uid in enumerate(source_uids)}
    slice_by_position = {tuple(round(float(v), 3) for v in position): index for index, position in enumerate(source_positions)}
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    volume = np.zeros(shape, dtype=bool)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = _frame_source_uid(item)
        index = slice_by_uid.get(uid) if uid is not None else slice_by_position.get(_frame_position(item))
        if index is None:
            raise LookupError(f"SEG {seg.SOPInstanceUID} has a frame on no slice of the source series (reference {uid})")
        volume[index] |= frame > 0
    return volume


def dice(first: np.ndarray, second: np.ndarray) -> float:
    """Return the Dice similarity coefficient of two boolean volumes (1.0 where both are empty)."""
    total = int(first.sum()) + int(second.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(first, second).sum()) / total


def walk_content(items: Sequence[pydicom.Dataset]) -> Iterator[pydicom.Dataset]:
    """Yield every content item of an SR content tree, depth first."""
    for item in items:
        yield item
        yield from walk_content(item.get("ContentSequence", []))


def _concept_value(item: pydicom.Dataset) -> str | None:
    names = item.get("ConceptNameCodeSequence", [])
    return str(names[0].CodeValue) if names else None


def sr_probability(sr: pydicom.Dataset) -> float | None:
    """Return the probability of nodal metastasis the SR states, as a fraction, or None.

    The report stores it in percent (UCUM ``%``).
    """
    for item in walk_content(sr.get("ContentSequence", [])):
        if _concept_value(item) == PROBABILITY_CODE and item.ValueType == "NUM":
            measured = item.MeasuredValueSequence[0]
            unit = str(measured.MeasurementUnitsCodeSequence[0].CodeValue)
            value = float(measured.NumericValue)
            return value / 100.0 if unit == "%" else value
    return None


def sr_algorithm_names(sr: pydicom.Dataset) -> set[str]:
    """Return every Algorithm Name (DCM 111001) in the SR's content tree."""
    return {
        str(item.TextValue)
        for item in walk_content(sr.get("ContentSequence", []))
        if _concept_value(item) == ALGORITHM_NAME_CODE and item.ValueType == "TEXT"
    }


def sr_code_values(sr: pydicom.Dataset) -> set[str]:
    """Return every concept name and coded value in the SR's content tree."""
    values = set()
    for item in walk_content(sr.get("ContentSequence", [])):
        concept = _concept_value(item)
        if concept is not None:
            values.add(concept)
        for code in item.get("ConceptCodeSequence", []):
            values.add(str(code.CodeValue))
    return values


def manifest_name(package: Path) -> str:
    """Return the model name in a segmentation package's manifest."""
    return str(json.loads((package / "manifest.json").read_text(encoding="utf-8"))["name"])

"""Peers and objects for the delivery tests: DCMTK storescp, Orthanc and pynetdicom SCPs.

Every peer listens on a free loopback port, or inside a network namespace
that only has ``lo``, and is stopped by its context manager.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from tests.conftest import free_port

PEER_START_TIMEOUT_S = 20.0


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``condition`` until it is true; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def _listening_ports(proc_net_tcp: Path) -> set[int]:
    # /proc/net/tcp lists sockets with the local port in hex and state 0A for LISTEN.
    ports = set()
    for line in proc_net_tcp.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def is_listening(port: int, *, pid: int | None = None) -> bool:
    """Return whether a TCP socket listens on ``port``, in ``pid``'s network namespace if given."""
    table = Path(f"/proc/{pid}/net/tcp") if pid else Path("/proc/net/tcp")
    return port in _listening_ports(table)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class StoreScp:
    """A running DCMTK storescp."""

    ae_title: str
    port: int
    output_dir: Path
    process: subprocess.Popen

    def received_files(self) -> list[Path]:
        """Files storescp wrote, in name order."""
        return sorted(path for path in self.output_dir.iterdir() if path.is_file())

    def received_sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of the received files, one per file."""
        return sorted(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in self.received_files())


@contextmanager
def storescp(output_dir: Path, *, ae_title: str = "STORESCP", port: int | None = None, extra: tuple[str, ...] = ()) -> Iterator[StoreScp]:
    """Run DCMTK storescp on 127.0.0.1 until the block ends."""
    if shutil.which("storescp") is None:
        pytest.skip("DCMTK storescp is not installed; install the dcmtk package")
    port = port or free_port()
    output_dir.mkdir(parents=True, exist_ok=True)
    command = ["storescp", "--aetitle", ae_title, "--output-directory", str(output_dir), *extra, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: is_listening(port) or process.poll() is not None, timeout_s=PEER_START_TIMEOUT_S, what="storescp to listen")
        if process.poll() is not None:
            pytest.fail(f"storescp exited with {process.returncode}: {process.stderr.read().decode(errors='replace')}")
        yield StoreScp(ae_title, port, output_dir, process)
    finally:
        _stop(process)


@dataclass
class PynetdicomScp:
    """A pynetdicom Storage SCP that answers with a chosen status and counts requests."""

    ae_title: str
    port: int
    statuses: list[int]
    received: list[str] = field(default_factory=list)


@contextmanager
def pynetdicom_scp(
    *, ae_title: str = "TESTSCP", statuses: list[int] | None = None, require_calling_aet: list[str] | None = None
) -> Iterator[PynetdicomScp]:
    """Run a Storage SCP that returns ``statuses`` in turn (the last one repeats), 0x0000 by default."""
    peer = PynetdicomScp(ae_title, free_port(), list(statuses or [0x0000]))

    def on_store(event: evt.Event) -> int:
        peer.received.append(str(event.request.AffectedSOPInstanceUID))
        return peer.statuses.pop(0) if len(peer.statuses) > 1 else peer.statuses[0]

    ae = AE(ae_title=ae_title)
    for sop_class in (BasicTextSRStorage, SecondaryCaptureImageStorage, Verification):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    if require_calling_aet:
        ae.require_calling_aet = require_calling_aet
    server = ae.start_server(("127.0.0.1", peer.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield peer
    finally:
        server.shutdown()


@dataclass
class Orthanc:
    """An Orthanc server inside its own network namespace, which has only ``lo``."""

    ae_title: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        """PID of the Orthanc process, whose network namespace the clients enter."""
        return self.process.pid

    def in_namespace(self, command: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``command`` inside Orthanc's network namespace."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", *command],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def rest_get(self, path: str) -> object:
        """GET ``path`` from Orthanc's REST API, from inside its namespace, and decode the JSON."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        script = f"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
        completed = self.in_namespace([sys.executable, "-c", script])
        if completed.returncode != 0:
            pytest.fail(f"Orthanc REST GET {path} failed: {completed.stderr}")
        return json.loads(completed.stdout)

    def stored_sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of every instance Orthanc stored."""
        uids = []
        for instance_id in self.rest_get("/instances"):
            tags = self.rest_get(f"/instances/{instance_id}/simplified-tags")
            uids.append(tags["SOPInstanceUID"])
        return sorted(uids)


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@contextmanager
def orthanc(workdir: Path, *, ae_title: str = "ORTHANC") -> Iterator[Orthanc]:
    """Run Orthanc with its own ports and storage inside a fresh network namespace.

    Orthanc 1.10 has no setting for its bind address, so the namespace keeps
    it off every interface but its own loopback.
    """
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed; install the orthanc package")
    if not _namespaces_available():
        pytest.skip("cannot create a network namespace here (unshare -n needs CAP_SYS_ADMIN)")
    dicom_port, http_port = free_port(), free_port()
    storage = workdir / "orthanc-storage"
    config = {
        "Name": "otscc-test",
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "Plugins": [],
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec Orthanc "{config_path}"'],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    peer = Orthanc(ae_title, dicom_port, http_port, process)
    try:
        wait_for(
            lambda: process.poll() is not None
            or (is_listening(dicom_port, pid=process.pid) and is_listening(http_port, pid=process.pid)),
            timeout_s=PEER_START_TIMEOUT_S,
            what="Orthanc to listen",
        )
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
        yield peer
    finally:
        _stop(process)


def basic_text_sr(study_instance_uid: str | None = None, text: str = "test report") -> Dataset:
    """Return a small Basic Text SR with fresh UIDs, ready to write as a Part 10 file."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "Test^Delivery"
    ds.PatientID = "DELIVERY-TEST"
    ds.StudyDate = ds.ContentDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = "120000"
    ds.SeriesNumber = 901
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "11528-7", "LN", "Radiology Report"
    ds.ConceptNameCodeSequence = DicomSequence([title])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121071", "DCM", "Finding"
    item.ConceptNameCodeSequence = DicomSequence([concept])
    item.TextValue = text
    ds.ContentSequence = DicomSequence([item])
    return ds


def write_part10(dataset: Dataset, folder: Path) -> Path:
    """Write ``dataset`` as ``<SOPInstanceUID>.dcm`` in ``folder`` and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def environment_for_subprocess() -> dict[str, str]:
    """Environment that lets a child Python import the repository's packages."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env

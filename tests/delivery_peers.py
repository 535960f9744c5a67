"""Peers and objects for the delivery tests: storescp with its received files, and pynetdicom SCPs.

DCMTK and Orthanc are started by :mod:`tests.peers`; this module adds what
the delivery tests check on top of them. Every peer listens on a free
loopback port and is stopped by its context manager.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from tests.conftest import free_port
from tests.peers import peer_environment, start_storescp


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
    """Run DCMTK storescp on ``port`` (a free one by default) until the block ends.

    Nagle's algorithm is off on storescp's side too, so each C-STORE response
    leaves at once instead of waiting for a delayed ACK.
    """
    port = port or free_port()
    environment = peer_environment(tcp_nodelay=True)
    with start_storescp(output_dir, port, ae_title=ae_title, extra_args=extra, env=environment) as process:
        yield StoreScp(ae_title, port, output_dir, process)


@dataclass
class PynetdicomScp:
    """A pynetdicom Storage SCP that returns chosen statuses and records the SOP Instance UIDs it receives."""

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
    ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ""
    ds.StudyID = ds.AccessionNumber = ds.Manufacturer = ""
    ds.StudyDate = ds.ContentDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = "120000"
    ds.SeriesNumber = 901
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    ds.PerformedProcedureCodeSequence = DicomSequence([])

    # The root content item is a titled CONTAINER, as in every SR document.
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

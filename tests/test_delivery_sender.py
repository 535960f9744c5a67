"""The C-STORE sender stores files on DCMTK, Orthanc and pynetdicom peers and classifies failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian, MRImageStorage, RLELossless

from config.settings import DestinationSettings
from dicom_node.logging_setup import configure_logging
from dicom_node.sender import SendOutcome, SendTimeouts, classify_status, send_datasets
from tests.conftest import free_port
from tests.delivery_peers import basic_text_sr, environment_for_subprocess, pynetdicom_scp, storescp, write_part10
from tests.peers import start_orthanc
from tests.runner_helpers import mr_slice

pytestmark = pytest.mark.peers

TIMEOUTS = SendTimeouts(connection_s=5.0, acse_s=5.0, dimse_s=10.0, network_s=10.0)


def _destination(ae_title: str, port: int) -> DestinationSettings:
    return DestinationSettings(name="peer", ae_title=ae_title, host="127.0.0.1", port=port)


def _reports(folder: Path, count: int) -> list[Path]:
    return [write_part10(basic_text_sr(text=f"report {n}"), folder) for n in range(count)]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, SendOutcome.DELIVERED),
        (0xB000, SendOutcome.DELIVERED),
        (0xB006, SendOutcome.DELIVERED),
        (0xB007, SendOutcome.DELIVERED),
        (0xA700, SendOutcome.TRANSIENT),
        (0xA7FF, SendOutcome.TRANSIENT),
        (0x0110, SendOutcome.TRANSIENT),
        (0xFE00, SendOutcome.TRANSIENT),
        (0xA900, SendOutcome.PERMANENT),
        (0xC000, SendOutcome.PERMANENT),
        (0xCFFF, SendOutcome.PERMANENT),
        (0x0122, SendOutcome.PERMANENT),
        (0x0124, SendOutcome.PERMANENT),
    ],
)
def test_status_classification_table(status: int, outcome: SendOutcome) -> None:
    assert classify_status(status) is outcome


def test_storescp_receives_every_file(tmp_path: Path) -> None:
    paths = _reports(tmp_path / "out", 3)
    with storescp(tmp_path / "received") as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
        received = peer.received_sop_instance_uids()

    assert report.outcome is SendOutcome.DELIVERED
    assert report.message == "3 instance(s) stored"
    assert [result.status for result in report.instances] == [0x0000] * 3
    assert received == sorted(str(dcmread(path).SOPInstanceUID) for path in paths)


def test_implicit_only_peer_still_receives(tmp_path: Path) -> None:
    paths = _reports(tmp_path / "out", 1)
    with storescp(tmp_path / "received", extra=("+xi",)) as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
        received = peer.received_files()

    assert report.outcome is SendOutcome.DELIVERED
    assert len(received) == 1
    assert dcmread(received[0]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_compressed_file_to_uncompressed_peer(tmp_path: Path) -> None:
    image = mr_slice("1.2.826.0.1.3680043.8.498.79", "1.2.826.0.1.3680043.8.498.80", 1)
    image.compress(RLELossless, encoding_plugin="pydicom")
    paths = [write_part10(image, tmp_path / "out")]
    with storescp(tmp_path / "received", extra=("+xi",)) as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
        received = peer.received_files()

    assert report.outcome is SendOutcome.PERMANENT
    assert report.instances[0].message.startswith(f"no accepted presentation context fits transfer syntax {RLELossless}")
    assert received == []


def test_warning_status_counts_as_delivered(tmp_path: Path) -> None:
    paths = _reports(tmp_path / "out", 2)
    with pynetdicom_scp(statuses=[0xB000, 0x0000]) as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)

    assert report.outcome is SendOutcome.DELIVERED
    assert report.status is None
    assert report.message == "2 instance(s) stored; stored with warning status 0xB000"
    assert len(report.delivered) == 2


def test_unsupported_sop_class_is_permanent(tmp_path: Path) -> None:
    image = mr_slice("1.2.826.0.1.3680043.8.498.77", "1.2.826.0.1.3680043.8.498.78", 1)
    paths = [write_part10(image, tmp_path / "out"), *_reports(tmp_path / "out", 1)]
    with pynetdicom_scp() as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
        stored = list(peer.received)

    assert report.outcome is SendOutcome.PERMANENT
    assert report.status == 0x0122
    assert report.instances[0].outcome is SendOutcome.PERMANENT
    assert MRImageStorage in report.instances[0].message
    assert report.instances[1].outcome is SendOutcome.DELIVERED
    assert stored == [report.instances[1].sop_instance_uid]


def test_peer_abort_is_transient(tmp_path: Path) -> None:
    paths = _reports(tmp_path / "out", 2)
    with storescp(tmp_path / "received", extra=("--abort-after",)) as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)

    assert report.outcome is SendOutcome.TRANSIENT
    assert report.delivered == []


def test_closed_port_is_transient(tmp_path: Path) -> None:
    port = free_port()
    report = send_datasets(_destination("NOBODY", port), _reports(tmp_path, 1), calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)

    assert report.outcome is SendOutcome.TRANSIENT
    assert report.message == f"cannot connect to 127.0.0.1:{port} (connection refused, unreachable or timed out)"
    assert report.instances[0].outcome is SendOutcome.TRANSIENT


def test_missing_file_raises_value_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone.dcm"
    with pytest.raises(ValueError, match="cannot read the files to send to peer: .*gone.dcm"):
        send_datasets(_destination("PEER", 104), [missing], calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)


def _product_outputs(folder: Path) -> list[Path]:
    # The SEG, TID 1500 SR and Secondary Capture the node's writers make for a synthetic study.
    from sr_writer.options import WriterOptions
    from sr_writer.outputs import build_outputs
    from tests.sr_helpers import make_study

    study = make_study(shape=(4, 32, 32))
    outputs = build_outputs(study.result, study.sources, WriterOptions(secondary_capture=True))
    return [write_part10(dataset, folder) for dataset in outputs]


_SEND_IN_NAMESPACE = """
import json, sys
from pathlib import Path
from config.settings import DestinationSettings
from dicom_node.sender import SendTimeouts, send_datasets
ae_title, port, *paths = sys.argv[1:]
destination = DestinationSettings(name="orthanc", ae_title=ae_title, host="127.0.0.1", port=int(port))
report = send_datasets(destination, [Path(p) for p in paths], calling_ae="OTSCC_NODE", timeouts=SendTimeouts(5, 5, 10, 10))
print(json.dumps({"outcome": report.outcome.value, "message": report.message}))
"""


def test_orthanc_stores_seg_sr_and_sc(tmp_path: Path) -> None:
    paths = _product_outputs(tmp_path / "out")
    with start_orthanc(tmp_path) as peer:
        command = [sys.executable, "-c", _SEND_IN_NAMESPACE, peer.ae_title, str(peer.dicom_port), *map(str, paths)]
        completed = subprocess.run(
            peer.command_in_namespace(command),
            capture_output=True,
            text=True,
            timeout=60,
            env=environment_for_subprocess(),
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        stored = sorted(
            peer.rest_get(f"/instances/{instance}/simplified-tags")["SOPInstanceUID"]
            for instance in peer.rest_get("/instances")
        )

    assert report == {"outcome": "delivered", "message": "3 instance(s) stored"}
    assert stored == sorted(str(dcmread(path).SOPInstanceUID) for path in paths)


def test_storescp_receives_seg_sr_and_sc(tmp_path: Path) -> None:
    paths = _product_outputs(tmp_path / "out")
    with storescp(tmp_path / "received") as peer:
        report = send_datasets(_destination(peer.ae_title, peer.port), paths, calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
        received = peer.received_files()

    sent_classes = sorted(str(dcmread(path).SOPClassUID) for path in paths)
    assert report.outcome is SendOutcome.DELIVERED, report.message
    assert len(set(sent_classes)) == 3
    assert sorted(str(dcmread(path).SOPClassUID) for path in received) == sent_classes
    # The data sets arrive element for element; only the file meta, which storescp writes itself, differs.
    sent = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, paths)}
    for path in received:
        arrived = dcmread(path)
        assert arrived == sent[str(arrived.SOPInstanceUID)]




class _Records(logging.Handler):
    """A handler that keeps every record it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def node_logging() -> Iterator[_Records]:
    """Return a record list on the root logger; afterwards, restore pynetdicom's loggers.

    :func:`configure_logging` replaces the root handlers, pytest's capture
    among them, so the test adds this handler after calling it.
    """
    package = logging.getLogger("pynetdicom")
    transport = logging.getLogger("pynetdicom.transport")
    level, filters = package.level, list(transport.filters)
    collected = _Records()
    yield collected
    logging.getLogger().removeHandler(collected)
    package.setLevel(level)
    transport.filters[:] = filters


def _send_to_closed_port(folder: Path, level: str, collected: _Records) -> list[logging.LogRecord]:
    configure_logging(level)
    logging.getLogger().addHandler(collected)
    send_datasets(_destination("NOBODY", free_port()), _reports(folder, 1), calling_ae="OTSCC_NODE", timeouts=TIMEOUTS)
    return collected.records


def test_refused_connection_logs_once(tmp_path: Path, node_logging: _Records) -> None:
    records = _send_to_closed_port(tmp_path, "INFO", node_logging)

    assert [record for record in records if record.name == "pynetdicom.transport"] == []
    attempts = [record.getMessage() for record in records if record.name == "dicom_node.sender"]
    assert len(attempts) == 1
    assert attempts[0].startswith("delivery attempt of 1 file(s) to peer (NOBODY@127.0.0.1:")
    assert "transient, cannot connect" in attempts[0]


def test_debug_keeps_pynetdicom_connect_errors(tmp_path: Path, node_logging: _Records) -> None:
    records = _send_to_closed_port(tmp_path, "DEBUG", node_logging)

    messages = [record.getMessage() for record in records if record.name == "pynetdicom.transport"]
    assert any(message.startswith("TCP Initialisation Error") for message in messages)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("Association request failed: unable to connect to remote", False),
        ("TCP Initialisation Error: [Errno 111] Connection refused", False),
        ("TCP Initialisation Error: timed out", True),
        ("TCP Initialisation Error: [Errno 113] No route to host", True),
    ],
)
def test_connect_filter_keeps_other_socket_errors(node_logging: _Records, message: str, kept: bool) -> None:
    configure_logging("INFO")
    logging.getLogger().addHandler(node_logging)

    logging.getLogger("pynetdicom.transport").error(message)

    assert [record.getMessage() for record in node_logging.records] == ([message] if kept else [])

"""Who may store, and what the node rejects: AE titles, hosts, SOP classes, UIDs, disk space, TLS."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import select

from config.settings import AllowedPeer, TlsSettings
from db.models import Instance, Study
from dicom_node import dimse_status
from dicom_node.ingest import Ingestor, Sender, StoreOutcome
from dicom_node.spool import Spool, is_valid_uid, validate_uid
from tests.peers import require_binary, storescu
from tests.receive_helpers import (
    CT_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    NODE_AE,
    SeriesSpec,
    make_mr_slice,
    node_settings,
    running_scp,
    sqlite_session_factory,  # noqa: F401 - a pytest fixture
    write_series,
)

pytestmark = pytest.mark.peers

T2 = SeriesSpec(3, "T2 TSE axial", 4000.0, 100.0)


def _send_with_pynetdicom(datasets: list[Dataset], port: int, *, ssl_context: ssl.SSLContext | None = None) -> list[int]:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)
    tls_args = None if ssl_context is None else (ssl_context, "localhost")
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE, tls_args=tls_args)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _files_outside(root: Path, allowed: set[Path]) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and not any(path.is_relative_to(a) for a in allowed)]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.4", True),
        ("0", True),
        ("1.0.2", True),
        ("../../evil", False),
        ("1.2.03", False),
        ("1..2", False),
        ("1.2.", False),
        ("1.2.3a", False),
        ("1" * 65, False),
        ("", False),
        (None, False),
    ],
)
def test_uid_validation_follows_ps35(value, valid):
    assert is_valid_uid(value) is valid


def test_validate_uid_names_keyword():
    with pytest.raises(ValueError, match="SOPInstanceUID is missing or invalid"):
        validate_uid("../x", keyword="SOPInstanceUID")


def test_spool_path_stays_inside_root(tmp_path):
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ValueError, match="resolves outside the spool"):
        spool.absolute("../outside.dcm")


def test_partial_files_removed_at_startup(tmp_path):
    spool = Spool(tmp_path / "spool")
    (spool.incoming / "abc.part").write_bytes(b"torn")

    assert spool.remove_partial_files() == 1
    assert not list(spool.incoming.iterdir())


def test_unknown_sop_class_rejected_in_negotiation(tmp_path, sqlite_session_factory, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "ct.dcm"
    ds = make_mr_slice(generate_uid(), generate_uid(), T2, 0)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.save_as(path, enforce_file_format=True)

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        run = storescu([path], scp.port, extra_args=["--required"])

    assert run.returncode != 0
    assert "No presentation context" in run.output or "No Acceptable Presentation Contexts" in run.output
    assert run.succeeded_files == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert CT_IMAGE_STORAGE in logged
    assert "no accepted storage presentation context" in logged
    with sqlite_session_factory() as session:
        assert session.scalars(select(Instance)).all() == []


@pytest.mark.parametrize(
    ("settings_overrides", "calling_ae", "called_ae", "reason"),
    [
        ({"allowed_peers": [AllowedPeer(ae_title="PACS")]}, "STORESCU", NODE_AE, "Calling AE Title Not Recognized"),
        ({}, "STORESCU", "SOMEONE_ELSE", "Called AE Title Not Recognized"),
        (
            {"allowed_peers": [AllowedPeer(ae_title="STORESCU", host="192.0.2.7")]},
            "STORESCU",
            NODE_AE,
            "Calling AE Title Not Recognized",
        ),
    ],
    ids=["calling-ae", "called-ae", "host"],
)
def test_association_rejected_with_reason(
    tmp_path, sqlite_session_factory, caplog, settings_overrides, calling_ae, called_ae, reason
):
    files = write_series(tmp_path / "in", T2, 1)
    settings = node_settings(**settings_overrides)

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        run = storescu(files, scp.port, calling_ae=calling_ae, called_ae=called_ae)

    assert run.returncode != 0
    assert "Association Rejected" in run.output
    assert reason in run.output
    assert any("rejected association from" in record.getMessage() for record in caplog.records)
    assert list((tmp_path / "spool").glob("1*")) == []


def test_allowed_peer_with_matching_host_accepted(tmp_path, sqlite_session_factory):
    files = write_series(tmp_path / "in", T2, 1)
    settings = node_settings(allowed_peers=[AllowedPeer(ae_title="STORESCU", host="127.0.0.0/8")])

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        run = storescu(files, scp.port)

    assert run.succeeded_files == [str(files[0])], run.output


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"])
def test_path_traversal_uid_rejected(tmp_path, sqlite_session_factory, keyword):
    ds = make_mr_slice(generate_uid(), generate_uid(), T2, 0)
    setattr(ds, keyword, "../../evil")
    spool_dir = tmp_path / "node" / "spool"

    with running_scp(spool_dir, sqlite_session_factory) as scp:
        statuses = _send_with_pynetdicom([ds], scp.port)

    assert statuses == [dimse_status.CANNOT_UNDERSTAND]
    assert _files_outside(tmp_path, {spool_dir, tmp_path / "node.db", tmp_path / "node.db-wal", tmp_path / "node.db-shm"}) == []
    assert list(tmp_path.rglob("*evil*")) == []
    assert [path for path in spool_dir.rglob("*") if path.is_file()] == []
    with sqlite_session_factory() as session:
        assert session.scalars(select(Study)).all() == []


def test_sop_class_mismatch_returns_a900(tmp_path, sqlite_session_factory):
    ds = make_mr_slice(generate_uid(), generate_uid(), T2, 0)
    ingestor = Ingestor(Spool(tmp_path / "spool"), sqlite_session_factory, min_free_mb=0)

    result = ingestor.store(
        ds, b"unused", requested_sop_class=ENHANCED_MR_IMAGE_STORAGE, sender=Sender("STORESCU", "127.0.0.1")
    )

    assert result.status == dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert result.outcome is StoreOutcome.REJECTED


def test_disk_floor_returns_out_of_resources(tmp_path, sqlite_session_factory, caplog):
    ds = make_mr_slice(generate_uid(), generate_uid(), T2, 0)
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)

    with running_scp(tmp_path / "spool", sqlite_session_factory, min_free_mb=free_mb + 1024) as scp:
        statuses = _send_with_pynetdicom([ds], scp.port)

    assert statuses == [dimse_status.OUT_OF_RESOURCES]
    assert any("below the" in record.getMessage() for record in caplog.records)
    with sqlite_session_factory() as session:
        assert session.scalars(select(Instance)).all() == []


def test_echo_answers_success(tmp_path, sqlite_session_factory):
    echoscu = require_binary("echoscu")

    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        completed = subprocess.run(
            [echoscu, "-v", "-aec", NODE_AE, "127.0.0.1", str(scp.port)], capture_output=True, text=True, timeout=30
        )

    assert completed.returncode == 0, completed.stderr
    assert "Received Echo Response (Success)" in completed.stdout + completed.stderr


def _make_certificates(folder: Path) -> dict[str, Path]:
    openssl = require_binary("openssl")
    paths = {name: folder / name for name in ("ca.key", "ca.pem", "server.key", "server.pem", "client.key", "client.pem")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=otscc test CA",
        "-keyout", str(paths["ca.key"]), "-out", str(paths["ca.pem"]))
    for name in ("server", "client"):
        request = folder / f"{name}.csr"
        extensions = folder / f"{name}.ext"
        extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="ascii")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(paths[f"{name}.key"]), "-out", str(request))
        run("x509", "-req", "-in", str(request), "-CA", str(paths["ca.pem"]), "-CAkey", str(paths["ca.key"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(paths[f"{name}.pem"]))
    return paths


def _tls_settings(certificates: dict[str, Path]) -> TlsSettings:
    return TlsSettings(
        enabled=True,
        cert_file=certificates["server.pem"],
        key_file=certificates["server.key"],
        ca_file=certificates["ca.pem"],
        require_client_cert=True,
    )


def test_tls_storescu_stores_over_tls(tmp_path, sqlite_session_factory):
    certificates = _make_certificates(tmp_path)
    files = write_series(tmp_path / "in", T2, 2)
    settings = node_settings(tls=_tls_settings(certificates))
    tls_args = [
        "--enable-tls", str(certificates["client.key"]), str(certificates["client.pem"]),
        "--add-cert-file", str(certificates["ca.pem"]),
    ]

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        secure = storescu(files, scp.port, extra_args=tls_args)
        plain = storescu(files, scp.port)

    assert len(secure.succeeded_files) == 2, secure.output
    assert plain.succeeded_files == []
    with sqlite_session_factory() as session:
        assert len(session.scalars(select(Instance)).all()) == 2


def test_tls_client_without_certificate_rejected(tmp_path, sqlite_session_factory):
    certificates = _make_certificates(tmp_path)
    settings = node_settings(tls=_tls_settings(certificates))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificates["ca.pem"]))
    ae = AE(ae_title="NOCERT")
    ae.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=NODE_AE, tls_args=(context, "localhost"))
        established = assoc.is_established
        if established:
            assoc.release()

    assert not established


def test_associations_beyond_maximum_rejected(tmp_path, sqlite_session_factory):
    settings = node_settings(max_associations=1)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        first = ae.associate("127.0.0.1", scp.port, ae_title=NODE_AE)
        second = ae.associate("127.0.0.1", scp.port, ae_title=NODE_AE)
        first_established = first.is_established
        second_rejected = second.is_rejected
        first.release()

    assert first_established
    assert second_rejected
    # PS3.8 section 9.3.4: rejected-transient (2), by the presentation
    # service-provider (3), local limit exceeded (2).
    assert (second.acceptor.primitive.result, second.acceptor.primitive.result_source, second.acceptor.primitive.diagnostic) == (2, 3, 2)


def test_tls_silent_client_does_not_block_others(tmp_path, sqlite_session_factory):
    certificates = _make_certificates(tmp_path)
    files = write_series(tmp_path / "in", T2, 1)
    settings = node_settings(tls=_tls_settings(certificates))
    tls_args = [
        "--enable-tls", str(certificates["client.key"]), str(certificates["client.pem"]),
        "--add-cert-file", str(certificates["ca.pem"]),
    ]

    with running_scp(tmp_path / "spool", sqlite_session_factory, settings) as scp:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5):
            run = storescu(files, scp.port, extra_args=tls_args, timeout_s=30)

    assert run.succeeded_files == [str(files[0])], run.output

"""The node as a process: ``otscc-node serve`` survives SIGKILL mid-transfer and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydantic import BaseModel
from sqlalchemy import select

from config.settings import Settings, load_settings
from db.models import Instance
from db.session import create_db_engine, make_session_factory
from dicom_node.app import Node
from dicom_node.cli import build_parser, main, serve_overrides
from tests.conftest import free_port
from tests.peers import parse_store_statuses, port_is_open, stop_process, storescu_command, wait_until
from tests.receive_helpers import (
    NODE_AE,
    SeriesSpec,
    running_scp,
    sqlite_session_factory,  # noqa: F401 - a pytest fixture
    write_series,
)

pytestmark = pytest.mark.peers

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
T2 = SeriesSpec(3, "T2 TSE axial", 4000.0, 100.0)
KILL_AFTER_SUCCESSES = 15


def _write_config(folder: Path, port: int) -> Path:
    config = folder / "config.toml"
    config.write_text(
        "\n".join(
            [
                'log_level = "INFO"',
                "[node]",
                f'ae_title = "{NODE_AE}"',
                'bind_address = "127.0.0.1"',
                f"port = {port}",
                "[storage]",
                f'data_dir = "{folder / "data"}"',
                "min_free_mb = 0",
                "[dashboard]",
                "enabled = false",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return config


@contextmanager
def _serve(config: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTSCC_") and key != "DATABASE_URL"}
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config)],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: process.poll() is not None or port_is_open(port), 60, f"otscc-node serve on port {port}")
        assert process.poll() is None, log_path.read_text(errors="replace")
        yield process
    finally:
        stop_process(process)


def _sop_uid(path: str) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_sigkill_mid_transfer_keeps_acknowledged_instances(tmp_path):
    files = write_series(tmp_path / "in", T2, 80, rows=256, columns=256)
    port = free_port()
    config = _write_config(tmp_path, port)
    log_path = tmp_path / "node.log"

    with _serve(config, port, log_path) as node:
        sender = subprocess.Popen(
            storescu_command(files, port, called_ae=NODE_AE),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        successes = 0
        for line in sender.stdout:
            lines.append(line)
            successes += "Received Store Response (Success)" in line
            if successes == KILL_AFTER_SUCCESSES and node.poll() is None:
                node.send_signal(signal.SIGKILL)
        sender.wait(timeout=60)
        node.wait(timeout=10)
    acknowledged = [path for path, status in parse_store_statuses("".join(lines)) if status == "Success"]

    assert node.returncode == -signal.SIGKILL
    assert KILL_AFTER_SUCCESSES <= len(acknowledged) < len(files)

    with _serve(config, port, log_path):
        spool = tmp_path / "data" / "spool"
        assert list((spool / ".incoming").glob("*.part")) == []

    engine = create_db_engine(f"sqlite:///{tmp_path / 'data' / 'otscc-node.db'}")
    with make_session_factory(engine)() as session:
        recorded = {instance.sop_instance_uid: instance.path for instance in session.scalars(select(Instance))}
    engine.dispose()
    for path in acknowledged:
        sop_uid = _sop_uid(path)
        assert sop_uid in recorded
        stored = pydicom.dcmread(spool / recorded[sop_uid])
        assert stored.PixelData == pydicom.dcmread(path).PixelData

    final_files = [path for path in spool.rglob("*.dcm")]
    assert len(final_files) >= len(acknowledged)
    for path in final_files:
        assert len(pydicom.dcmread(path).pixel_array.ravel()) == 256 * 256


def test_sigterm_stops_node_cleanly(tmp_path):
    port = free_port()
    config = _write_config(tmp_path, port)
    log_path = tmp_path / "node.log"

    with _serve(config, port, log_path) as node:
        node.send_signal(signal.SIGTERM)
        returncode = node.wait(timeout=30)

    log = log_path.read_text(errors="replace")
    assert returncode == 0, log
    assert "received SIGTERM; shutting down" in log
    assert f"node {NODE_AE} stopped" in log
    assert not port_is_open(port)


def test_cli_echo_reaches_node(tmp_path, sqlite_session_factory, capsys):
    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        returncode = main(["echo", "127.0.0.1", str(scp.port), "--call", NODE_AE])

    assert returncode == 0
    assert "Success" in capsys.readouterr().out


def test_cli_echo_reports_rejection(tmp_path, sqlite_session_factory, capsys):
    with running_scp(tmp_path / "spool", sqlite_session_factory) as scp:
        returncode = main(["echo", "127.0.0.1", str(scp.port), "--call", "WRONG_AE"])

    assert returncode == 1
    assert "rejected, aborted or failed" in capsys.readouterr().err


def test_serve_flags_become_overrides():
    args = build_parser().parse_args(
        ["serve", "11113", "-aet", "NODE2", "-od", "/srv/spool", "--max-pdu", "65536", "--acse-timeout", "5"]
    )

    overrides = serve_overrides(args)

    assert overrides == {
        "node": {"port": 11113, "ae_title": "NODE2", "max_pdu": 65536, "acse_timeout_s": 5.0},
        "storage": {"spool_dir": "/srv/spool"},
    }


def test_serve_port_given_twice_rejected():
    args = build_parser().parse_args(["serve", "11113", "--port", "11114"])

    with pytest.raises(ValueError, match="port given twice"):
        serve_overrides(args)


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        annotation = field.annotation
        for candidate in (annotation, *typing.get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= _field_names(candidate)
    return names


def test_example_config_documents_every_setting():
    example = REPOSITORY_ROOT / "deploy" / "config.example.toml"
    text = example.read_text(encoding="utf-8")

    loaded = load_settings(example, environ={})

    assert loaded.model_dump(mode="json") == Settings().model_dump(mode="json")
    undocumented = sorted(name for name in _field_names(Settings) if name not in text)
    assert undocumented == []


def test_node_starts_components_and_reports_status(tmp_path):
    settings = load_settings(
        environ={},
        overrides={
            "node": {"ae_title": NODE_AE, "bind_address": "127.0.0.1", "port": 0},
            "storage": {"data_dir": str(tmp_path / "data"), "min_free_mb": 0},
            "dashboard": {"enabled": False},
        },
    )
    node = Node(settings)
    (tmp_path / "data" / "spool" / ".incoming").mkdir(parents=True)
    (tmp_path / "data" / "spool" / ".incoming" / "left.part").write_bytes(b"torn")

    node.start()
    try:
        running = node.component_status()
        echo = main(["echo", "127.0.0.1", str(node.scp.port), "--call", NODE_AE])
    finally:
        node.stop()

    assert running["scp_listening"]
    assert running["scheduler_alive"]
    assert running["outbox_alive"]
    assert not running["runner_alive"]
    assert echo == 0
    assert not (tmp_path / "data" / "spool" / ".incoming" / "left.part").exists()
    assert not node.component_status()["scp_listening"]


def test_serve_reports_port_in_use(tmp_path, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _write_config(tmp_path, port)

        returncode = main(["serve", "--config", str(config)])

    assert returncode == 1
    assert f"cannot start on 127.0.0.1:{port}" in capsys.readouterr().err

"""Orthanc as the sending PACS: it forwards a study to ``otscc-node serve`` inside its network namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Instance, Study
from db.session import create_db_engine, make_session_factory
from tests.conftest import free_port
from tests.peers import start_orthanc, stop_process, storescu, wait_until
from tests.receive_helpers import NODE_AE, SeriesSpec, write_series

pytestmark = pytest.mark.peers

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
T2 = SeriesSpec(3, "T2 TSE axial", 4000.0, 100.0)


def _node_config(folder: Path, port: int) -> Path:
    config = folder / "config.toml"
    config.write_text(
        "\n".join(
            [
                "[node]",
                f'ae_title = "{NODE_AE}"',
                'bind_address = "127.0.0.1"',
                f"port = {port}",
                "[[node.allowed_peers]]",
                'ae_title = "ORTHANC"',
                'host = "127.0.0.1"',
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


def _echo_succeeds(orthanc, modality: str) -> bool:
    try:
        orthanc.rest_post(f"/modalities/{modality}/echo", {}, timeout_s=5)
    except RuntimeError:
        return False
    return True


def test_orthanc_forwards_study_to_node(tmp_path):
    node_port = free_port()
    files = write_series(tmp_path / "in", T2, 6)
    config = _node_config(tmp_path, node_port)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTSCC_") and key != "DATABASE_URL"}
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)

    with start_orthanc(tmp_path, modalities={"node": (NODE_AE, "127.0.0.1", node_port)}) as orthanc:
        upload = storescu(files, orthanc.dicom_port, called_ae=orthanc.ae_title, prefix=orthanc.namespace_prefix)
        assert len(upload.succeeded_files) == 6, upload.output
        assert orthanc.instance_count() == 6

        with (tmp_path / "node.log").open("wb") as log:
            node = subprocess.Popen(
                orthanc.command_in_namespace([sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(config)]),
                cwd=REPOSITORY_ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: node.poll() is not None or _echo_succeeds(orthanc, "node"), 60, "the node to answer C-ECHO", 0.5)
            assert node.poll() is None, (tmp_path / "node.log").read_text(errors="replace")
            study_ids = orthanc.rest_get("/studies")
            orthanc.rest_post("/modalities/node/store", study_ids)
        finally:
            stop_process(node)

    engine = create_db_engine(f"sqlite:///{tmp_path / 'data' / 'otscc-node.db'}")
    with make_session_factory(engine)() as session:
        study = session.scalars(select(Study)).one()
        instances = session.scalars(select(Instance)).all()
    engine.dispose()
    assert len(instances) == 6
    assert study.calling_ae_title == "ORTHANC"
    assert study.calling_host == "127.0.0.1"

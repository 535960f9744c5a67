"""The clinical source reads the CSV file and a loopback HTTP endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from config.settings import ClinicalSettings
from dicom_node.clinical_source import ClinicalSource

RECORDS = {"ACC001": {"t_stage": "T2", "doi_mm": 6.5}}


class _ClinicalHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        query = parse_qs(urlparse(self.path).query)
        key = (query.get("accession_number") or [""])[0]
        if key == "BROKEN":
            self.send_response(500)
            self.end_headers()
            return
        record = RECORDS.get(key)
        body = json.dumps(record).encode()
        self.send_response(200 if record else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if record:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClinicalHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clinical"
    server.shutdown()
    server.server_close()


def test_http_lookup_returns_record(endpoint: str) -> None:
    source = ClinicalSource(ClinicalSettings(http_url=endpoint))

    result = source.lookup(accession_number="ACC001", patient_id="P1")

    assert result.source == "http"
    assert result.values == {"t_stage": "T2", "doi_mm": 6.5}
    assert result.problems == []


def test_http_unknown_study_is_not_an_error(endpoint: str) -> None:
    source = ClinicalSource(ClinicalSettings(http_url=endpoint))

    result = source.lookup(accession_number="ACC404", patient_id=None)

    assert result.values == {}
    assert result.problems == ["clinical endpoint has no record for this study"]


def test_http_failure_falls_back_to_csv(endpoint: str, tmp_path: Path, caplog) -> None:
    csv_file = tmp_path / "clinical.csv"
    csv_file.write_text("AccessionNumber,t_stage,doi_mm\nBROKEN,T3,11\n", encoding="utf-8")
    source = ClinicalSource(ClinicalSettings(http_url=endpoint, csv_file=csv_file))

    result = source.lookup(accession_number="BROKEN", patient_id=None)

    assert result.source == "csv"
    assert result.values == {"t_stage": "T3", "doi_mm": 11.0}
    assert "clinical endpoint failed: HTTP 500" in result.problems
    assert "BROKEN" not in caplog.text


def test_unreachable_endpoint_reports_problem(tmp_path: Path) -> None:
    from tests.conftest import free_port

    source = ClinicalSource(ClinicalSettings(http_url=f"http://127.0.0.1:{free_port()}/x", http_timeout_s=2))

    result = source.lookup(accession_number="ACC001", patient_id=None)

    assert result.values == {}
    assert result.problems and result.problems[0].startswith("clinical endpoint failed")


def test_lookup_by_patient_id_uses_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "clinical.csv"
    csv_file.write_text("PatientID,t_stage\nP77,T1\n", encoding="utf-8")
    source = ClinicalSource(ClinicalSettings(csv_file=csv_file, key="patient_id"))

    assert source.lookup(accession_number="A", patient_id="P77").values == {"t_stage": "T1"}
    assert source.lookup(accession_number="A", patient_id=None).problems == [
        "the study has no patient_id to look up"
    ]

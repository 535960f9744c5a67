"""Look up a study's clinical variables in the configured CSV file or HTTP endpoint.

The HTTP endpoint is called with one query parameter, ``accession_number``
or ``patient_id`` as configured, and must return a JSON object that maps
variable names (``t_stage``, ``doi_mm``, ...) to values. A lookup that fails
is logged without the key and treated as "no values", so the nomogram lists
the variables as missing instead of the job failing.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from config.settings import ClinicalSettings
from inference.clinical import read_clinical_csv

logger = logging.getLogger(__name__)


@dataclass
class ClinicalLookup:
    """Values found for one study, and what went wrong on the way."""

    values: dict[str, object] = field(default_factory=dict)
    source: str = "none"
    problems: list[str] = field(default_factory=list)


class ClinicalSource:
    """The clinical source of one node, as configured in ``[clinical]``."""

    def __init__(self, settings: ClinicalSettings) -> None:
        self._settings = settings

    def lookup(self, *, accession_number: str | None, patient_id: str | None) -> ClinicalLookup:
        """Return the clinical values for a study, HTTP first, then the CSV file."""
        key = accession_number if self._settings.key == "accession_number" else patient_id
        result = ClinicalLookup()
        if not key:
            if self._settings.http_url or self._settings.csv_file:
                result.problems.append(f"the study has no {self._settings.key} to look up")
            return result

        if self._settings.http_url:
            self._lookup_http(key, result)
        if not result.values and self._settings.csv_file:
            self._lookup_csv(key, result)
        return result

    def _lookup_http(self, key: str, result: ClinicalLookup) -> None:
        query = urllib.parse.urlencode({self._settings.key: key})
        url = f"{self._settings.http_url}{'&' if '?' in self._settings.http_url else '?'}{query}"
        try:
            with urllib.request.urlopen(url, timeout=self._settings.http_timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                result.problems.append("clinical endpoint has no record for this study")
                return
            self._http_failed(result, f"HTTP {exc.code}")
            return
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            self._http_failed(result, type(exc).__name__)
            return

        if not isinstance(payload, dict):
            self._http_failed(result, "the response is not a JSON object")
            return
        result.values = {name: value for name, value in payload.items() if value not in (None, "")}
        result.source = "http"

    def _http_failed(self, result: ClinicalLookup, failure: str) -> None:
        # The key (an accession number or patient ID) is patient data: it is
        # not logged, only the endpoint and the failure.
        logger.warning("clinical endpoint %s failed: %s", self._settings.http_url, failure)
        result.problems.append(f"clinical endpoint failed: {failure}")

    def _lookup_csv(self, key: str, result: ClinicalLookup) -> None:
        try:
            values = read_clinical_csv(self._settings.csv_file, key)
        except (OSError, ValueError) as exc:
            logger.warning("clinical CSV %s cannot be read: %s", self._settings.csv_file, type(exc).__name__)
            result.problems.append(f"clinical CSV cannot be read: {exc}")
            return
        if values:
            result.values = values
            result.source = "csv"
        else:
            result.problems.append("clinical CSV has no row for this study")

"""The settings model of the node.

Every value has an embedded default, so the node starts with no file at all.
A TOML file overrides the defaults, and environment variables override the
file: ``OTSCC_<SECTION>__<FIELD>`` (for example ``OTSCC_NODE__PORT=11113``),
plus ``DATABASE_URL`` for the database, as most deployment tools expect.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.roles import RoleRules

ENV_PREFIX = "OTSCC_"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL_DIR = REPOSITORY_ROOT / "models" / "demo"

# PS3.5 section 6.2: an AE title is at most 16 characters of the default
# repertoire, excluding backslash and control characters. Leading and
# trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def validate_ae_title(value: str, *, field_name: str = "ae_title") -> str:
    """Return ``value`` stripped, or raise ``ValueError`` if it is not a valid AE title."""
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(stripped):
        raise ValueError(
            f"{field_name} {value!r} is not a valid AE title; use 1 to 16 printable "
            "ASCII characters without a backslash"
        )
    return stripped


class _Section(BaseModel):
    # Unknown keys are an error, so a typo in the file is reported instead of ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_string_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # TOML has no null, so an empty string is how a file or an
        # environment variable turns off an optional path or URL.
        field = cls.model_fields.get(info.field_name)
        if value == "" and field is not None and type(None) in get_args(field.annotation):
            return None
        return value


class AllowedPeer(_Section):
    """A calling AE title that may store to the node, optionally tied to a host."""

    ae_title: str
    host: str | None = None

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return validate_ae_title(value, field_name="allowed_peers.ae_title")


class TlsSettings(_Section):
    """DICOM TLS (PS3.15 Annex B.9, the BCP 195 profile) for the receiving port."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _check_files(self) -> TlsSettings:
        if self.enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError(
                "tls.enabled is true but tls.cert_file or tls.key_file is missing; "
                "set both paths or set tls.enabled = false"
            )
        if self.enabled and self.require_client_cert and self.ca_file is None:
            raise ValueError(
                "tls.require_client_cert is true but tls.ca_file is missing; set the CA "
                "that signs the PACS certificates or set require_client_cert = false"
            )
        return self


class NodeSettings(_Section):
    """The receiving side: AE title, port, access control and network limits."""

    ae_title: str = "OTSCC_NODE"
    bind_address: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    require_called_ae_title: bool = True
    allowed_peers: list[AllowedPeer] = Field(default_factory=list)
    max_associations: int = Field(default=8, ge=1)
    max_pdu: int = Field(default=16382, ge=0)
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return validate_ae_title(value, field_name="node.ae_title")


class StorageSettings(_Section):
    """Folders for received instances and produced objects, and the spool's safety limits."""

    data_dir: Path = Path("var")
    spool_dir: Path | None = None
    min_free_mb: int = Field(default=1024, ge=0)
    fsync: bool = True

    @property
    def resolved_spool_dir(self) -> Path:
        """Spool folder: ``spool_dir`` if set, else ``<data_dir>/spool``."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    @property
    def outputs_dir(self) -> Path:
        """Folder for the SEG, SR and SC objects the node writes."""
        return self.data_dir / "outputs"


class DatabaseSettings(_Section):
    """The job database. ``url`` None means SQLite in the data folder."""

    url: str | None = None
    echo: bool = False


class AssemblySettings(_Section):
    """When a study counts as complete."""

    quiet_period_s: float = Field(default=10.0, ge=0)
    force_complete_s: float = Field(default=900.0, gt=0)
    check_interval_s: float = Field(default=1.0, gt=0)
    required_roles: list[Literal["ce_t1", "t2", "t1"]] = Field(
        default_factory=lambda: ["ce_t1", "t2", "t1"]
    )


class InferenceSettings(_Section):
    """The models and pipeline options."""

    segmentation_model: Path = DEMO_MODEL_DIR / "segmentation"
    nomogram_model: Path | None = DEMO_MODEL_DIR / "nomogram.json"
    radiomics_params: Path | None = None
    register_series: bool = False
    batch_size: int = Field(default=8, ge=1)
    min_component_mm3: float = Field(default=50.0, ge=0)
    workers: int = Field(default=1, ge=1)


class ClinicalSettings(_Section):
    """Source of clinical variables beyond age and sex: a CSV file, an HTTP endpoint or none."""

    csv_file: Path | None = None
    http_url: str | None = None
    key: Literal["accession_number", "patient_id"] = "accession_number"
    http_timeout_s: float = Field(default=5.0, gt=0)


class DestinationSettings(_Section):
    """A DICOM peer that receives the node's results."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = None
    omit_empty_seg_frames: bool = False
    send_failure_report: bool = True
    secondary_capture: bool = False

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return validate_ae_title(value, field_name="destinations.ae_title")


class DeliverySettings(_Section):
    """Retry policy of the outbox."""

    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    association_timeout_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)


class DashboardUser(_Section):
    """A dashboard login. ``password_hash`` is a PBKDF2 hash from ``otscc-node hash-password``."""

    username: str
    password_hash: str


class DashboardToken(_Section):
    """An API token for scripted dashboard actions. ``token_hash`` comes from ``otscc-node hash-password``."""

    name: str
    token_hash: str


class DashboardSettings(_Section):
    """The administrators' web dashboard and metrics endpoint."""

    enabled: bool = True
    bind_address: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    secret_key: str | None = None
    users: list[DashboardUser] = Field(default_factory=list)
    api_tokens: list[DashboardToken] = Field(default_factory=list)
    show_patient_data: bool = False

    @model_validator(mode="after")
    def _check_auth(self) -> DashboardSettings:
        loopback = self.bind_address in ("127.0.0.1", "::1", "localhost")
        if self.enabled and not loopback and not self.users:
            raise ValueError(
                f"dashboard.bind_address {self.bind_address!r} is not loopback but no "
                "dashboard.users are configured; add a user or bind to 127.0.0.1"
            )
        return self


class Settings(_Section):
    """All settings of one node."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    assembly: AssemblySettings = Field(default_factory=AssemblySettings)
    # Rules that give series their roles; the defaults are in config/roles.py.
    roles: RoleRules = Field(default_factory=RoleRules)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    clinical: ClinicalSettings = Field(default_factory=ClinicalSettings)
    destinations: list[DestinationSettings] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the job database."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.storage.data_dir / 'otscc-node.db').resolve()}"


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _parse_env_value(raw: str) -> Any:
    # A value that parses as a TOML literal (number, boolean, array, inline
    # table) is taken as such; anything else is a plain string.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``OTSCC_<SECTION>__<FIELD>`` variables and ``DATABASE_URL`` into a nested dict.

    Only variables whose first part names a settings section or top-level
    setting count. Others with the prefix, such as ``OTSCC_CONFIG`` or the
    install script's ``OTSCC_GPU``, belong to the tools around the node.
    """
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        if path and path[0] in Settings.model_fields:
            _set_nested(overrides, path, _parse_env_value(raw))
    if environ.get("DATABASE_URL"):
        _set_nested(overrides, ["database", "url"], environ["DATABASE_URL"])
    return overrides


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from defaults, an optional TOML file, the environment and explicit overrides.

    Parameters
    ----------
    path : Path, optional
        TOML file. When omitted, ``OTSCC_CONFIG`` names one if set.
    environ : Mapping, optional
        Environment to read overrides from; ``os.environ`` by default.
    overrides : Mapping, optional
        Values that win over everything else, for example command-line flags.

    Raises
    ------
    ValueError
        If the file cannot be read or a value is invalid; the message names the setting.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get("OTSCC_CONFIG"):
        path = Path(environ["OTSCC_CONFIG"])

    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config file {path}: {exc}; fix or remove the file") from exc

    data = _merge(data, environment_overrides(environ))
    data = _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"invalid configuration: {exc}") from exc

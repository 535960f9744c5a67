"""Settings come from defaults, a TOML file, the environment and explicit overrides, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import DEMO_MODEL_DIR, load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file() -> None:
    settings = load_settings(environ={})

    assert settings.node.ae_title == "OTSCC_NODE"
    assert settings.node.port == 11112
    assert settings.assembly.quiet_period_s == 10.0
    assert settings.inference.segmentation_model == DEMO_MODEL_DIR / "segmentation"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("otscc-node.db")
    assert settings.destinations == []


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = _write(tmp_path, '[node]\nport = 104\nae_title = "FROM_FILE"\n[assembly]\nquiet_period_s = 3\n')

    settings = load_settings(
        config,
        environ={"OTSCC_NODE__PORT": "11113", "OTSCC_ASSEMBLY__QUIET_PERIOD_S": "2.5"},
        overrides={"assembly": {"quiet_period_s": 1.0}},
    )

    assert settings.node.ae_title == "FROM_FILE"
    assert settings.node.port == 11113
    assert settings.assembly.quiet_period_s == 1.0


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = _write(tmp_path, 'log_level = "DEBUG"\n')

    settings = load_settings(environ={"OTSCC_CONFIG": str(config)})

    assert settings.log_level == "DEBUG"


def test_database_url_from_environment() -> None:
    settings = load_settings(environ={"DATABASE_URL": "postgresql://otscc@db/otscc"})

    assert settings.database_url == "postgresql://otscc@db/otscc"


def test_tool_variables_are_not_settings() -> None:
    environ = {
        "OTSCC_GPU": "1",
        "OTSCC_VENV": "/opt/venv",
        "OTSCC_SKIP_APT": "1",
        "OTSCC_TEST_DATA": "/data",
        "OTSCC_TEST_POSTGRES_URL": "postgresql://x",
        "OTSCC_LOG_LEVEL": "WARNING",
    }

    settings = load_settings(environ=environ)

    assert settings.log_level == "WARNING"


def test_unknown_key_in_file_rejected(tmp_path: Path) -> None:
    config = _write(tmp_path, "[node]\nprot = 104\n")

    with pytest.raises(ValueError, match="prot"):
        load_settings(config, environ={})


def test_unknown_field_in_known_section_rejected() -> None:
    with pytest.raises(ValueError, match="quiet_period"):
        load_settings(environ={"OTSCC_ASSEMBLY__QUIET_PERIOD": "3"})


def test_empty_string_unsets_optional_path() -> None:
    settings = load_settings(environ={"OTSCC_INFERENCE__NOMOGRAM_MODEL": ""})

    assert settings.inference.nomogram_model is None


def test_empty_ae_title_rejected() -> None:
    with pytest.raises(ValueError, match="ae_title"):
        load_settings(environ={"OTSCC_NODE__AE_TITLE": ""})


@pytest.mark.parametrize("title", ["THIS_TITLE_IS_TOO_LONG", "BACK\\SLASH"])
def test_invalid_ae_title_rejected(title: str) -> None:
    with pytest.raises(ValueError, match="not a valid AE title"):
        load_settings(environ={}, overrides={"node": {"ae_title": title}})


def test_public_dashboard_needs_users() -> None:
    with pytest.raises(ValueError, match="no dashboard.users"):
        load_settings(environ={}, overrides={"dashboard": {"bind_address": "0.0.0.0"}})


def test_tls_without_key_rejected() -> None:
    with pytest.raises(ValueError, match="cert_file or tls.key_file is missing"):
        load_settings(environ={}, overrides={"node": {"tls": {"enabled": True, "cert_file": "/x.pem"}}})


def test_unreadable_file_names_path(tmp_path: Path) -> None:
    config = _write(tmp_path, "[node\n")

    with pytest.raises(ValueError, match="cannot read config file"):
        load_settings(config, environ={})


def test_destinations_from_file(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\nsecondary_capture = true\n',
    )

    settings = load_settings(config, environ={})

    assert [d.name for d in settings.destinations] == ["pacs"]
    assert settings.destinations[0].secondary_capture is True
    assert settings.destinations[0].send_failure_report is True


def test_shipped_node_config_loads() -> None:
    shipped = Path(__file__).resolve().parents[1] / "config" / "node.toml"

    settings = load_settings(shipped, environ={})

    assert settings.destinations[0].ae_title == "ORTHANC"
    assert settings.destinations[0].port == 4242

"""Settings of the node: defaults, the TOML file and environment overrides."""

from config.settings import (
    AllowedPeer,
    ClinicalSettings,
    DashboardSettings,
    DatabaseSettings,
    DeliverySettings,
    DestinationSettings,
    InferenceSettings,
    NodeSettings,
    Settings,
    StorageSettings,
    TlsSettings,
    load_settings,
)

__all__ = [
    "AllowedPeer",
    "ClinicalSettings",
    "DashboardSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "DestinationSettings",
    "InferenceSettings",
    "NodeSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "load_settings",
]

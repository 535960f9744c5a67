"""The administrators' web dashboard: job list, study pages, actions, metrics and health."""

from dicom_node.dashboard.app import create_app
from dicom_node.dashboard.server import DashboardServer

__all__ = ["DashboardServer", "create_app"]

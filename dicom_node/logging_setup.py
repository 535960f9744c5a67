"""Logging for the command line: one format, on standard error.

Only the CLI calls :func:`configure_logging`; library modules just create
their loggers. Log lines carry UIDs, AE titles and job ids, never patient
names or IDs: pynetdicom's identifier logging is turned off in
:mod:`dicom_node.scp`, and pynetdicom's own INFO lines (one per PDU step)
are shown only at DEBUG.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# pynetdicom 3.0 logs two ERROR lines whenever an outgoing connection fails.
# The sender and the outbox log each failed attempt with the destination and
# the next retry. So above DEBUG the generic line is always dropped, and the
# socket error line only when the peer refused the connection, as a stopped
# destination does. Timeouts and routing errors keep it.
_GENERIC_CONNECT_FAILURE = "Association request failed: unable to connect"
_SOCKET_ERROR = "TCP Initialisation Error"
_CONNECTION_REFUSED = "Connection refused"


class _ConnectFailureFilter(logging.Filter):
    """A filter that drops pynetdicom's lines about a refused outgoing connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_GENERIC_CONNECT_FAILURE):
            return False
        return not (message.startswith(_SOCKET_ERROR) and _CONNECTION_REFUSED in message)


def configure_logging(level: str = "INFO") -> None:
    """Send all log records at ``level`` or above to standard error in :data:`LOG_FORMAT`.

    Raises
    ------
    ValueError
        If ``level`` is not one of :data:`LOG_LEVELS`.
    """
    name = level.upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}; pick one of them")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(name)

    logging.getLogger("pynetdicom").setLevel("DEBUG" if name == "DEBUG" else "WARNING")
    transport = logging.getLogger("pynetdicom.transport")
    for existing in [item for item in transport.filters if isinstance(item, _ConnectFailureFilter)]:
        transport.removeFilter(existing)
    if name != "DEBUG":
        transport.addFilter(_ConnectFailureFilter())
    quiet = "DEBUG" if name == "DEBUG" else "WARNING"
    logging.getLogger("apscheduler").setLevel(quiet)
    # Alembic logs its plugins and migration context at INFO on every
    # command; the node logs the database revision itself.
    logging.getLogger("alembic").setLevel(quiet)

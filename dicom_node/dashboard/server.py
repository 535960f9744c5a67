"""Runs the dashboard with uvicorn in a background thread of the node process."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from dicom_node.dashboard.app import create_app
from dicom_node.dashboard.health import NodeStatus

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose
    # proto is IPPROTO_TCP, and with Nagle on, uvicorn's separate writes of
    # headers and body wait for the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot bind the dashboard to {address}:{port}: {exc}; "
            "choose another dashboard.port or dashboard.bind_address"
        ) from exc
    sock.listen(128)
    return sock


class DashboardServer:
    """The dashboard on ``settings.dashboard.bind_address:port``; port 0 takes a free port.

    Parameters
    ----------
    settings : Settings
        All node settings.
    session_factory : sessionmaker
        Sessions on the job database.
    node_status : callable, optional
        Component states for ``/healthz``, see :func:`create_app`.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        node_status: NodeStatus | None = None,
    ) -> None:
        self._settings = settings
        self.app = create_app(settings, session_factory, node_status=node_status)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port the dashboard listens on, once started."""
        if self._socket is None:
            raise RuntimeError("the dashboard is not started; call start() first")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        """Base URL of the running dashboard."""
        host = self._settings.dashboard.bind_address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind the port and serve in a daemon thread; return once uvicorn accepts connections.

        Raises
        ------
        OSError
            If the address cannot be bound.
        RuntimeError
            If uvicorn does not start within ``START_TIMEOUT_S``.
        """
        dashboard = self._settings.dashboard
        self._socket = _bind(dashboard.bind_address, dashboard.port)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="dashboard", daemon=True
        )
        self._thread.start()

        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dashboard did not start within {START_TIMEOUT_S:g} s; see the log")
            time.sleep(0.02)
        logger.info("dashboard listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning("dashboard thread did not stop within %g s", STOP_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._thread = None
        self._server = None

    @property
    def alive(self) -> bool:
        """Return whether the server thread is running."""
        return self._thread is not None and self._thread.is_alive()

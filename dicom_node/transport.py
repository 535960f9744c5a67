"""TCP_NODELAY on the node's DICOM connections, which pynetdicom 3.0 does not set.

With Nagle's algorithm on, a small C-STORE response waits for the peer's
delayed ACK (up to 40 ms on Linux), which caps one association at a few
dozen instances per second. Both classes here turn it off on every socket:
the server on each accepted connection, the application entity on each
connection it opens as a requestor.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

if TYPE_CHECKING:
    from ssl import SSLContext

    from pynetdicom.association import Association
    from pynetdicom.transport import AddressInformation

logger = logging.getLogger(__name__)


def set_tcp_nodelay(sock: socket.socket) -> None:
    """Turn off Nagle's algorithm on a TCP socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayAssociationServer(ThreadedAssociationServer):
    """A threaded association server that sets TCP_NODELAY and does the TLS handshake per thread.

    pynetdicom 3.0 wraps an accepted socket in TLS in the accepting thread,
    so one slow or silent client would stop all others from connecting.
    Here the handshake runs in the connection's own thread, bounded by the
    ACSE timeout.
    """

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection and set TCP_NODELAY on it; TLS follows in the connection's thread."""
        client_socket, address = self.socket.accept()
        set_tcp_nodelay(client_socket)
        return client_socket, address

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Complete the TLS handshake if TLS is on, then serve the association."""
        if self.ssl_context:
            try:
                request = self._wrap_tls(request)
            except (ssl.SSLError, OSError) as exc:
                logger.warning("TLS handshake with %s failed: %s", client_address[0], exc)
                request.close()
                return
        super().process_request_thread(request, client_address)

    def _wrap_tls(self, request: socket.socket) -> socket.socket:
        request.settimeout(self.ae.acse_timeout)
        wrapped = self.ssl_context.wrap_socket(request, server_side=True)
        # pynetdicom polls its sockets with select(), so they stay blocking
        # without a timeout, as plain TCP sockets are here.
        wrapped.settimeout(None)
        return wrapped


class NoDelayApplicationEntity(AE):
    """A pynetdicom ``AE`` whose outgoing associations have TCP_NODELAY set."""

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[SSLContext, str] | None,
    ) -> AssociationSocket:
        association_socket = super()._create_socket(assoc, address, tls_args)
        if association_socket.socket is not None:
            set_tcp_nodelay(association_socket.socket)
        return association_socket

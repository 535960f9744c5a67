"""TCP_NODELAY on the node's DICOM connections, which pynetdicom 3.0 does not set.

With Nagle's algorithm on, a small C-STORE response waits for the peer's
delayed ACK (up to 40 ms on Linux), which caps one association at a few
dozen instances per second. Both classes here turn it off on every socket:
the server on each accepted connection, the application entity on each
connection it opens as a requestor.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

if TYPE_CHECKING:
    from ssl import SSLContext

    from pynetdicom.association import Association
    from pynetdicom.transport import AddressInformation


def set_tcp_nodelay(sock: socket.socket) -> None:
    """Turn off Nagle's algorithm on a TCP socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayAssociationServer(ThreadedAssociationServer):
    """A threaded association server whose accepted sockets have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection, set TCP_NODELAY, then wrap it in TLS if configured."""
        client_socket, address = self.socket.accept()
        set_tcp_nodelay(client_socket)
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True)
        return client_socket, address


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

"""Association checks of the node: calling and called AE titles, peer hosts and DICOM TLS."""

from __future__ import annotations

import enum
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from config.settings import AllowedPeer, NodeSettings, TlsSettings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RejectReason(enum.Enum):
    """A-ASSOCIATE-RJ reasons the node uses, with their PS3.8 section 9.3.4 diagnostic values.

    Both are sent as result 1 (rejected-permanent) from source 1 (DICOM UL
    service-user).
    """

    CALLING_AE_NOT_RECOGNISED = 0x03
    CALLED_AE_NOT_RECOGNISED = 0x07

    @property
    def result_source_diagnostic(self) -> tuple[int, int, int]:
        """The (result, source, diagnostic) triple for ``ACSE.send_reject``."""
        return 0x01, 0x01, self.value


def _resolve_host(host: str) -> tuple[IpNetwork, ...]:
    try:
        return (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ValueError(
            f"allowed_peers host {host!r} does not resolve ({exc}); use an IP address, "
            "a network such as 10.0.0.0/24 or a resolvable host name"
        ) from exc
    return tuple(ipaddress.ip_network(info[4][0]) for info in infos)


@dataclass(frozen=True)
class _Rule:
    ae_title: str
    networks: tuple[IpNetwork, ...] | None

    def allows_host(self, host: str) -> bool:
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class PeerPolicy:
    """The association checks of :class:`NodeSettings`.

    An empty ``allowed_peers`` list lets any calling AE title in. Otherwise
    the calling AE title must match an entry, and where that entry names a
    host (an IP address, a network or a host name resolved at start-up), the
    peer's address must match too.
    """

    def __init__(self, ae_title: str, allowed_peers: list[AllowedPeer], *, require_called_ae_title: bool) -> None:
        self.ae_title = ae_title.strip()
        self.require_called_ae_title = require_called_ae_title
        self._rules = [
            _Rule(peer.ae_title.strip(), None if peer.host is None else _resolve_host(peer.host))
            for peer in allowed_peers
        ]

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> PeerPolicy:
        """Build the policy of ``settings``; raise ``ValueError`` if a host does not resolve."""
        return cls(settings.ae_title, settings.allowed_peers, require_called_ae_title=settings.require_called_ae_title)

    def check(self, calling_ae_title: str, called_ae_title: str, host: str) -> RejectReason | None:
        """Return why an association request must be rejected, or None to go on."""
        if self.require_called_ae_title and called_ae_title.strip() != self.ae_title:
            return RejectReason.CALLED_AE_NOT_RECOGNISED
        if not self._rules:
            return None
        calling = calling_ae_title.strip()
        if any(rule.ae_title == calling and rule.allows_host(host) for rule in self._rules):
            return None
        return RejectReason.CALLING_AE_NOT_RECOGNISED


def build_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """Return the server-side TLS context of ``tls``, or None when TLS is off.

    TLS 1.2 is the minimum, as the BCP 195 profiles of PS3.15 Annex B.9
    require. With ``require_client_cert`` the peer must present a
    certificate signed by ``ca_file``.

    Raises
    ------
    ValueError
        If a certificate, key or CA file cannot be loaded.
    """
    if not tls.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
        if tls.ca_file is not None:
            context.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the TLS certificate {tls.cert_file}, key {tls.key_file} or CA {tls.ca_file}: "
            f"{exc}; check the node.tls paths and file permissions"
        ) from exc
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return context

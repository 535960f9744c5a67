"""Identify the dashboard visitor: a logged-in user, the loopback local administrator, or none.

The session lives in a cookie signed with itsdangerous by Starlette's
``SessionMiddleware`` (HttpOnly, SameSite=Strict), so the server keeps no
session state and a restart with the same ``secret_key`` keeps users logged in.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass

from starlette.requests import Request

from config.settings import DashboardSettings, DashboardToken, DashboardUser
from dicom_node.passwords import hash_password, verify_password

logger = logging.getLogger(__name__)

LOCAL_ADMIN = "local-admin"
SESSION_USER_KEY = "user"
SESSION_PATIENT_DATA_KEY = "show_patient_data"
# Compared against when the user name is unknown, so a wrong name costs as
# much time as a wrong password and does not reveal which names exist.
_UNKNOWN_USER_HASH = hash_password("unknown user", iterations=1_000)


@dataclass(frozen=True)
class Visitor:
    """The person behind a request.

    ``authenticated`` is true for a user who logged in with a password, and
    false for the anonymous local administrator of a loopback dashboard
    without users.
    """

    name: str
    authenticated: bool

    @property
    def anonymous(self) -> bool:
        """Whether this is the anonymous local administrator."""
        return not self.authenticated


def is_loopback_address(address: str) -> bool:
    """Return whether ``address`` (an IP address or ``localhost``) is a loopback address."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def anonymous_access(settings: DashboardSettings) -> bool:
    """Return whether local visitors get the anonymous ``local-admin`` session: a loopback bind with no users."""
    return is_loopback_address(settings.bind_address) and not settings.users


def current_visitor(request: Request, settings: DashboardSettings) -> Visitor | None:
    """Return the visitor of ``request``, or None when a login is required."""
    if anonymous_access(settings):
        return Visitor(LOCAL_ADMIN, authenticated=False)

    name = request.session.get(SESSION_USER_KEY)
    # A user removed from the settings loses access at the next request,
    # although their signed cookie is still valid.
    if isinstance(name, str) and any(user.username == name for user in settings.users):
        return Visitor(name, authenticated=True)
    return None


def authenticate(users: list[DashboardUser], username: str, password: str) -> str | None:
    """Return the user name if ``password`` is right for ``username``, else None.

    Raises
    ------
    ValueError
        If the user's stored hash is malformed; the message names the user.
    """
    match = next((user for user in users if hmac.compare_digest(user.username, username)), None)
    if match is None:
        verify_password(password, _UNKNOWN_USER_HASH)
        logger.warning("dashboard login failed: unknown user name")
        return None
    try:
        ok = verify_password(password, match.password_hash)
    except ValueError as exc:
        raise ValueError(f"dashboard user {match.username!r}: {exc}") from exc
    if not ok:
        logger.warning("dashboard login failed for user %s: wrong password", match.username)
        return None
    logger.info("dashboard user %s logged in", match.username)
    return match.username


def shows_patient_data(request: Request, settings: DashboardSettings, visitor: Visitor | None) -> bool:
    """Return whether patient names and IDs are shown: the option is on, the user logged in and asked for them."""
    if visitor is None or not visitor.authenticated or not settings.show_patient_data:
        return False
    return bool(request.session.get(SESSION_PATIENT_DATA_KEY, False))


def may_toggle_patient_data(settings: DashboardSettings, visitor: Visitor | None) -> bool:
    """Return whether the visitor may switch the patient data display on."""
    return visitor is not None and visitor.authenticated and settings.show_patient_data


def bearer_token(request: Request) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_visitor(tokens: list[DashboardToken], token: str) -> Visitor | None:
    """Return the visitor an API token stands for, ``token:<name>``, or None if it matches no token.

    Browsers never add this header on their own, so a request that carries
    it cannot be forged across sites and needs no CSRF token.
    """
    for entry in tokens:
        try:
            matched = verify_password(token, entry.token_hash)
        except ValueError as exc:
            raise ValueError(f"dashboard API token {entry.name!r}: {exc}") from exc
        if matched:
            return Visitor(f"token:{entry.name}", authenticated=True)
    logger.warning("dashboard request with an unknown API token rejected")
    return None

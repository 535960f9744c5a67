"""Guards against cross-site request forgery and DNS rebinding.

Every POST needs the session's CSRF token in its form (the synchroniser
token pattern) and an Origin, or failing that a Referer, of this very
dashboard. On a loopback bind, the Host header must name a loopback host
too: otherwise a web page whose DNS name was rebound to 127.0.0.1 would be
same-origin with itself and could drive the anonymous local administrator.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from config.settings import DashboardSettings
from dicom_node.dashboard.auth import is_loopback_address

CSRF_SESSION_KEY = "csrf_token"
CSRF_FORM_FIELD = "csrf_token"


class CsrfError(Exception):
    """A POST without a valid CSRF token or from another origin."""


def ensure_token(request: Request) -> str:
    """Return the session's CSRF token, creating one if the session has none."""
    token = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_SESSION_KEY] = token
    return token


def rotate_token(request: Request) -> str:
    """Replace the session's CSRF token, as a login does."""
    request.session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return request.session[CSRF_SESSION_KEY]


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: Request) -> None:
    """Raise :class:`CsrfError` unless Origin (or Referer) names this dashboard."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        source = origin.lower()
    elif request.headers.get("referer"):
        source = _origin_of(request.headers["referer"])
    else:
        raise CsrfError("POST without Origin or Referer header")
    if source != _own_origin(request):
        raise CsrfError(f"POST from origin {source!r}, expected {_own_origin(request)!r}")


def check_token(request: Request, submitted: str | None) -> None:
    """Raise :class:`CsrfError` unless ``submitted`` equals the session's CSRF token."""
    expected = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(expected, str) or not expected or not submitted:
        raise CsrfError("POST without a CSRF token, or the session has none")
    if not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfError("POST with a CSRF token that does not match the session")


def host_allowed(request: Request, settings: DashboardSettings) -> bool:
    """Return whether the Host header is acceptable: any host, unless the dashboard is bound to loopback."""
    if not is_loopback_address(settings.bind_address):
        return True
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    return is_loopback_address(host)

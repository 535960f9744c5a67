"""The dashboard's FastAPI application: job list, study page, actions, metrics and health."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from config.settings import Settings
from db.models import Study
from db.session import session_scope
from db.states import JobState
from dicom_node import actions
from dicom_node.dashboard import auth, csrf, i18n
from dicom_node.dashboard.health import Health, NodeStatus, health_report
from dicom_node.dashboard.listing import SUPPORTS_UNTIL, ListQuery, parse_list_query
from dicom_node.dashboard.patient import display_id, display_name
from dicom_node.dashboard.study_view import format_duration, format_time, job_duration_s, load_study, timeline
from dicom_node.dashboard.thumbnails import ThumbnailCache, ThumbnailUnavailable, find_source
from dicom_node.event_text import event_reason
from dicom_node.job_list import list_jobs
from dicom_node.metrics import build_registry
from inference.result import SequenceRole

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SESSION_COOKIE = "otscc_session"
SESSION_MAX_AGE_S = 12 * 3600
LANGUAGE_COOKIE_MAX_AGE_S = 365 * 24 * 3600
FLASH_KEY = "flash"
ROLE_LABELS = {role.value: role.label for role in SequenceRole}
# No inline script or style, so an injected tag cannot run; forms post only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """A page that needs a logged-in user was requested without one."""


def _language(request: Request) -> tuple[str, bool]:
    # Returns the language and whether it came from ?lang= (and so goes in a cookie).
    requested = i18n.normalise_language(request.query_params.get("lang"))
    if requested is not None:
        return requested, True
    remembered = i18n.normalise_language(request.cookies.get(i18n.LANGUAGE_COOKIE))
    if remembered is not None:
        return remembered, False
    return i18n.language_from_accept(request.headers.get("accept-language")), False


def _language_url(request: Request, language: str) -> str:
    # The current page and filters, in another language.
    params = [(key, value) for key, value in request.query_params.multi_items() if key != "lang"]
    return request.url.path + "?" + urlencode([*params, ("lang", language)])


def _safe_next(target: str | None) -> str:
    # Only local paths, so the login form cannot send a user to another site.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _flash(request: Request, key: str, *, ok: bool, **values: Any) -> None:
    request.session[FLASH_KEY] = {"key": key, "ok": ok, "values": {k: str(v) for k, v in values.items()}}


class DashboardApp:
    """The request handlers, bound to one node's settings and database."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        node_status: NodeStatus | None,
    ) -> None:
        self.settings = settings
        self.dashboard = settings.dashboard
        self.session_factory = session_factory
        self.node_status = node_status
        self.registry = build_registry(settings, session_factory)
        self.thumbnails = ThumbnailCache()
        self.templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
        self.templates.env.globals.update(
            role_label=lambda role: ROLE_LABELS.get(role, role or ""),
            event_reason=event_reason,
            format_duration=format_duration,
            format_time=format_time,
        )

    def visitor(self, request: Request) -> auth.Visitor:
        """Return the visitor or raise :class:`LoginRequired`."""
        visitor = auth.current_visitor(request, self.dashboard)
        if visitor is None:
            raise LoginRequired()
        return visitor

    def render(
        self, request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
    ) -> HTMLResponse:
        """Render ``template`` with the common context: language, visitor, CSRF token and flash."""
        language, from_query = _language(request)
        visitor = auth.current_visitor(request, self.dashboard)
        base = {
            "t": i18n.translator(language),
            "language": language,
            "languages": i18n.LANGUAGE_NAMES,
            "visitor": visitor,
            "csrf_token": csrf.ensure_token(request),
            "flash": request.session.pop(FLASH_KEY, None),
            "show_patient_data": auth.shows_patient_data(request, self.dashboard, visitor),
            "may_toggle_patient_data": auth.may_toggle_patient_data(self.dashboard, visitor),
            "path": request.url.path,
            "path_with_query": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "language_urls": {code: _language_url(request, code) for code in i18n.LANGUAGE_NAMES},
        }
        response = self.templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
        if from_query:
            response.set_cookie(
                i18n.LANGUAGE_COOKIE, language, max_age=LANGUAGE_COOKIE_MAX_AGE_S, httponly=True, samesite="strict"
            )
        return response

    def check_post(self, request: Request, form: Any) -> auth.Visitor:
        """Check origin and CSRF token of a POST and return its visitor.

        A request with an ``Authorization: Bearer`` API token is checked
        against the configured tokens instead of the session.

        Raises
        ------
        CsrfError
            If the origin, the CSRF token or the API token is wrong.
        LoginRequired
            If no user is logged in.
        """
        token = auth.bearer_token(request)
        if token is not None:
            visitor = auth.token_visitor(self.dashboard.api_tokens, token)
            if visitor is None:
                raise csrf.CsrfError("unknown API token")
            return visitor
        csrf.check_origin(request)
        csrf.check_token(request, form.get(csrf.CSRF_FORM_FIELD))
        return self.visitor(request)

    async def job_list(self, request: Request) -> Response:
        visitor = self.visitor(request)
        query = parse_list_query(request.query_params)
        with self.session_factory() as session:
            page = list_jobs(session, query.filters, query.page, query.page_size, include_patient_data=True)
        show = auth.shows_patient_data(request, self.dashboard, visitor)
        rows = [{"row": row, "patient": display_name(row.patient_name, show=show)} for row in page.rows]
        return self.render(
            request,
            "jobs.html",
            {
                "page": page,
                "rows": rows,
                "query": query,
                "states": list(JobState),
                "page_sizes": (25, 50, 100, 200),
                "supports_until": SUPPORTS_UNTIL,
                "previous_url": self._page_url(query, query.page - 1) if query.page > 1 else None,
                "next_url": self._page_url(query, query.page + 1) if query.page < page.page_count else None,
            },
        )

    @staticmethod
    def _page_url(query: ListQuery, page: int) -> str:
        return "/?" + urlencode({**query.as_params(), "page": page})

    async def study_page(self, request: Request, study_id: int) -> Response:
        visitor = self.visitor(request)
        show = auth.shows_patient_data(request, self.dashboard, visitor)
        now = dt.datetime.now(dt.timezone.utc)
        with self.session_factory() as session:
            study = load_study(session, study_id)
            if study is None:
                return self.render(request, "error.html", {"message_key": "error.not_found"}, status_code=404)
            jobs = [
                {"job": job, "timeline": timeline(job), "duration_s": job_duration_s(job, now)}
                for job in sorted(study.jobs, key=lambda job: job.id, reverse=True)
            ]
            return self.render(
                request,
                "study.html",
                {
                    "study": study,
                    "patient_name": display_name(study.patient_name, show=show),
                    "patient_id": display_id(study.patient_id, show=show),
                    "jobs": jobs,
                    "has_ce_t1": any(series.role == SequenceRole.CE_T1.value for series in study.series),
                    "retryable": actions.RETRYABLE_JOB_STATES,
                    "cancellable": actions.CANCELLABLE_JOB_STATES,
                    "delivery_retryable": actions.RETRYABLE_DELIVERY_STATES,
                    "waiting": JobState.WAITING,
                },
            )

    async def study_by_uid(self, request: Request, study_instance_uid: str) -> Response:
        self.visitor(request)
        with self.session_factory() as session:
            study_id = session.scalar(select(Study.id).where(Study.study_instance_uid == study_instance_uid))
        if study_id is None:
            return self.render(request, "error.html", {"message_key": "error.not_found"}, status_code=404)
        return RedirectResponse(f"/studies/{study_id}", status_code=303)

    async def thumbnail(self, request: Request, study_id: int) -> Response:
        self.visitor(request)
        with self.session_factory() as session:
            try:
                source = find_source(session, study_id, self.settings.storage.resolved_spool_dir)
            except ThumbnailUnavailable as exc:
                return PlainTextResponse(str(exc), status_code=404)
        try:
            png = self.thumbnails.get_or_build(source)
        except ThumbnailUnavailable as exc:
            logger.warning("thumbnail of study %s unavailable: %s", study_id, exc)
            return PlainTextResponse(str(exc), status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    async def login_form(self, request: Request) -> Response:
        if auth.anonymous_access(self.dashboard):
            return RedirectResponse("/", status_code=303)
        return self.render(request, "login.html", {"next": _safe_next(request.query_params.get("next")), "failed": False})

    async def login(self, request: Request) -> Response:
        form = await request.form()
        csrf.check_origin(request)
        csrf.check_token(request, form.get(csrf.CSRF_FORM_FIELD))
        target = _safe_next(form.get("next"))
        name = auth.authenticate(self.dashboard.users, str(form.get("username", "")), str(form.get("password", "")))
        if name is None:
            return self.render(request, "login.html", {"next": target, "failed": True}, status_code=401)
        # A fresh session and token on login, so a token planted before it is worthless.
        request.session.clear()
        request.session[auth.SESSION_USER_KEY] = name
        csrf.rotate_token(request)
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        self.check_post(request, form)
        request.session.clear()
        return RedirectResponse("/login" if not auth.anonymous_access(self.dashboard) else "/", status_code=303)

    async def toggle_patient_data(self, request: Request) -> Response:
        form = await request.form()
        visitor = self.check_post(request, form)
        if not auth.may_toggle_patient_data(self.dashboard, visitor):
            return self.render(request, "error.html", {"message_key": "error.forbidden"}, status_code=403)
        request.session[auth.SESSION_PATIENT_DATA_KEY] = form.get("show") == "1"
        logger.info("dashboard user %s set patient data display to %s", visitor.name, form.get("show") == "1")
        return RedirectResponse(_safe_next(form.get("next")), status_code=303)

    async def run_action(self, request: Request, action: str, target_id: int) -> Response:
        form = await request.form()
        visitor = self.check_post(request, form)
        study_id: int | None = None
        try:
            with session_scope(self.session_factory) as session:
                study_id = self._apply(session, action, target_id, visitor.name)
        except ValueError as exc:
            logger.warning("dashboard action %s on %s by %s failed: %s", action, target_id, visitor.name, exc)
            _flash(request, "action.failed", ok=False, detail=exc)
            return RedirectResponse(_safe_next(form.get("next")), status_code=303)
        _flash(request, f"action.done.{action}", ok=True, id=target_id)
        return RedirectResponse(f"/studies/{study_id}", status_code=303)

    @staticmethod
    def _apply(session: Session, action: str, target_id: int, actor: str) -> int:
        # Returns the study id of the page to go back to.
        if action == "retry_job":
            return actions.retry_job(session, target_id, actor).study_id
        if action == "cancel_job":
            return actions.cancel_job(session, target_id, actor).study_id
        if action == "retry_delivery":
            return actions.retry_delivery(session, target_id, actor).job.study_id
        if action == "force_complete":
            actions.force_complete(session, target_id, actor)
            return target_id
        raise ValueError(f"unknown action {action!r}")

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        report = health_report(self.settings, self.session_factory, self.node_status)
        status_code = 503 if report["status"] == Health.FAILING.value else 200
        return JSONResponse(report, status_code=status_code)


def _add_routes(app: FastAPI, handlers: DashboardApp) -> None:
    app.add_api_route("/", handlers.job_list, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/studies/{study_id}", handlers.study_page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/studies/uid/{study_instance_uid}", handlers.study_by_uid, methods=["GET"])
    app.add_api_route("/studies/{study_id}/thumbnail.png", handlers.thumbnail, methods=["GET"])
    app.add_api_route("/login", handlers.login_form, methods=["GET"])
    app.add_api_route("/login", handlers.login, methods=["POST"])
    app.add_api_route("/logout", handlers.logout, methods=["POST"])
    app.add_api_route("/patient-data", handlers.toggle_patient_data, methods=["POST"])
    app.add_api_route("/metrics", handlers.metrics, methods=["GET"])
    app.add_api_route("/healthz", handlers.healthz, methods=["GET"])

    def action_route(action: str) -> Callable[..., Any]:
        async def handle(request: Request, target_id: int) -> Response:
            return await handlers.run_action(request, action, target_id)

        return handle

    app.add_api_route("/jobs/{target_id}/retry", action_route("retry_job"), methods=["POST"])
    app.add_api_route("/jobs/{target_id}/cancel", action_route("cancel_job"), methods=["POST"])
    app.add_api_route("/deliveries/{target_id}/retry", action_route("retry_delivery"), methods=["POST"])
    app.add_api_route("/studies/{target_id}/force-complete", action_route("force_complete"), methods=["POST"])


def _add_error_handlers(app: FastAPI, handlers: DashboardApp) -> None:
    async def on_login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.method != "GET":
            return PlainTextResponse("login required", status_code=403)
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)

    async def on_csrf(request: Request, exc: csrf.CsrfError) -> Response:
        logger.warning("dashboard rejected a POST to %s: %s", request.url.path, exc)
        return handlers.render(request, "error.html", {"message_key": "error.csrf"}, status_code=403)

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(csrf.CsrfError, on_csrf)


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    node_status: NodeStatus | None = None,
) -> FastAPI:
    """Build the dashboard application.

    Parameters
    ----------
    settings : Settings
        All node settings; the dashboard reads ``settings.dashboard`` and the storage folders.
    session_factory : sessionmaker
        Sessions on the job database.
    node_status : callable, optional
        Returns ``{"scp_listening": bool, "runner_alive": bool, ...}`` for
        ``/healthz``; see :data:`dicom_node.dashboard.health.NODE_COMPONENTS`.
    """
    handlers = DashboardApp(settings, session_factory, node_status)
    app = FastAPI(title="OTSCC node dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    _add_routes(app, handlers)
    _add_error_handlers(app, handlers)
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")

    @app.middleware("http")
    async def guard_host_and_add_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        if not csrf.host_allowed(request, settings.dashboard):
            return PlainTextResponse("invalid Host header for a loopback dashboard", status_code=400)
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    secret = settings.dashboard.secret_key or secrets.token_urlsafe(32)
    # Added last so it runs first: the handlers and the host guard see request.session.
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=False,
    )
    app.state.handlers = handlers
    return app

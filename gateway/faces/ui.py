"""The live control-plane page: GET /ui (HTML), /ui/events (SSE of snapshots), its static files.

The page is plain HTML, CSS and JavaScript under gateway/faces/static/ with the vendored uPlot
for its charts: no build step, no network beyond the gateway. It follows one EventSource on
/ui/events, where the Dashboard's snapshot (gateway/core/dashboard.py) arrives once a second,
cut down to the accounts the caller may act on. Its cancel buttons call the jobs cancel route
(POST /v1/jobs/{id}:cancel), which checks the caller's permission as for any other caller.

Auth is the API's (gateway/faces/auth.py): with auth off (the embedded default on loopback) the
page is open; with callers configured, a browser signs in once with its bearer token through
the page's form, which sets an HttpOnly, SameSite=Strict cookie holding it (EventSource cannot
send an Authorization header); docs/security.md says why and what it costs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from gateway.core.dashboard import Dashboard, Snapshot
from gateway.errors import ErrorKind, GatewayError
from gateway.faces.assets import STATIC
from gateway.faces.auth import (
    UI_COOKIE,
    Access,
    Caller,
    http_caller,
    request_caller,
)
from gateway.faces.http import error_response
from gateway.faces.sse import retry_frame
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

SSE = "text/event-stream"
#: The page's files, by the path after /ui/static/ (served from memory: nothing else is).
_FILES: dict[str, str] = {
    "ui.js": "application/javascript",
    "ui.css": "text/css",
    "vendor/uplot/uPlot.iife.min.js": "application/javascript",
    "vendor/uplot/uPlot.min.css": "text/css",
    "vendor/uplot/LICENSE": "text/plain",
}
#: What the page may load and where it may connect: itself only (no inline script, no CDN).
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
#: Paths that authenticate by themselves (the sign-in form must be reachable signed out; the
#: page's own static files are code, not data). Everything else under /ui goes through the
#: auth middleware.
SELF_AUTHENTICATED = frozenset({"/ui", "/ui/login", "/ui/logout"})
STATIC_PREFIX = "/ui/static/"


def self_authenticating(request: web.Request) -> bool:
    """For the auth middleware's `skip`: the page's own routes that answer 401 themselves."""
    return request.path in SELF_AUTHENTICATED or request.path.startswith(STATIC_PREFIX)


def _no_accounts(caller: Caller) -> GatewayError | None:
    """PERMISSION_DENIED for a caller that may act on no account (a metrics scraper, say):
    there is nothing of the page it may see."""
    if caller.accounts is not None and not caller.accounts:
        return GatewayError(
            ErrorKind.PERMISSION_DENIED,
            f"caller {caller.name!r} may act on no account: the live page has nothing for it",
            {"caller": caller.name},
        )
    return None


def snapshot_json(snapshot: Snapshot, caller: Caller | None) -> dict[str, Any]:
    """A snapshot as the page reads it (plain JSON of the dataclasses), with who is looking."""
    body = dataclasses.asdict(snapshot)
    body["caller"] = caller.name if caller is not None else "anonymous"
    return body


class UiRoutes:
    """The page, its stream and its files on the HTTP face."""

    def __init__(
        self,
        dashboard: Dashboard,
        metrics: Metrics,
        *,
        access: Access,
        secure_cookie: bool = False,
    ) -> None:
        self._dashboard = dashboard
        self._metrics = metrics
        self._access = access
        self._secure = secure_cookie
        self._files = {name: (STATIC / name).read_bytes() for name in _FILES}
        self._page = (STATIC / "ui.html").read_text(encoding="utf-8")
        self._login = (STATIC / "login.html").read_text(encoding="utf-8")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ui", self.page, allow_head=False)
        app.router.add_get("/ui/events", self.events, allow_head=False)
        app.router.add_get("/ui/static/{name:.+}", self.static, allow_head=False)
        app.router.add_post("/ui/login", self.login)
        app.router.add_post("/ui/logout", self.logout)

    # -- the page ---------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        """The page, or (signed out, auth on) the sign-in form with 401."""
        try:
            caller = http_caller(self._access, request)
        except GatewayError as exc:
            return self._sign_in(str(exc.message) if request.cookies.get(UI_COOKIE) else "")
        refused = _no_accounts(caller)
        if refused is not None:
            return self._sign_in(refused.message, status=403)
        signed_in = self._access.enabled and caller.method == "token"
        page = self._page.replace("{{caller}}", html.escape(caller.name)).replace(
            "{{signout}}", "" if signed_in else "hidden"
        )
        return web.Response(text=page, content_type="text/html", headers=_HEADERS)

    def _sign_in(self, problem: str, status: int = 401) -> web.Response:
        body = self._login.replace("{{problem}}", html.escape(problem))
        headers = {**_HEADERS, "WWW-Authenticate": 'Bearer realm="transfer-gateway"'}
        return web.Response(text=body, status=status, content_type="text/html", headers=headers)

    async def login(self, request: web.Request) -> web.Response:
        """The sign-in form's POST: a recognised token becomes the page's cookie (303 to /ui);
        any other answer is the form again with 401. The token never appears in a URL."""
        if not self._access.enabled:
            raise web.HTTPSeeOther("/ui")
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if not token:
            return self._sign_in("paste a token")
        try:
            caller = self._access.authenticate(f"Bearer {token}", None)
        except GatewayError:
            return self._sign_in("that token is not recognised")
        log.info("ui.signed_in", caller=caller.name)
        response = web.HTTPSeeOther("/ui")
        response.set_cookie(
            UI_COOKIE,
            urllib.parse.quote(token, safe=""),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self._secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/ui")
        response.del_cookie(UI_COOKIE, path="/")
        raise response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _FILES:
            # The table's 404, as every other error of the face (not aiohttp's text/plain).
            return error_response(
                GatewayError(ErrorKind.ROUTE_NOT_FOUND, f"no file {name[:100]!r} under /ui/static/")
            )
        return web.Response(
            body=self._files[name],
            content_type=_FILES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    # -- the stream -------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        """SSE: `event: snapshot` with the snapshot's JSON, each time the sampler makes one."""
        caller = request_caller(request)
        refused = _no_accounts(caller)
        if refused is not None:
            return error_response(refused)
        may_act_on: Callable[[str], bool] | None = (
            caller.may_act_on if self._access.enabled else None
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": SSE,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._metrics.open_streams.labels("http").inc()
        try:
            # A reconnect after a lost connection waits this long (EventSource's own retry).
            await response.write(retry_frame())
            # Closed on the way out (a dropped client, a failed write), so the sampler counts
            # this viewer gone at once and stops when it was the last (gateway/core/dashboard.py).
            async with contextlib.aclosing(self._dashboard.follow()) as snapshots:
                async for snapshot in snapshots:
                    body = json.dumps(
                        snapshot_json(snapshot.visible_to(may_act_on), caller),
                        separators=(",", ":"),
                    )
                    await response.write(f"event: snapshot\ndata: {body}\n\n".encode())
        finally:
            self._metrics.open_streams.labels("http").dec()
        return response

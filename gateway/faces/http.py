"""The HTTP face: stop, start and watch as NDJSON or SSE streams; health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.clock import Clock
from gateway.core.operation import START, STOP, WATCH, Operation
from gateway.core.operations import Core
from gateway.domain import StateUpdate
from gateway.errors import ErrorKind, FieldViolation, GatewayError, InvalidArgument
from gateway.faces.auth import Access, request_caller
from gateway.faces.bodies import BodyError, BodyProblem, parse_json, read_body
from gateway.faces.call import Ask, Calls
from gateway.faces.connections import raw_response
from gateway.faces.messages import error_to_status, update_to_proto
from gateway.faces.openapi import GRPC_TIMEOUT, NDJSON, SSE, openapi_document
from gateway.faces.request_ids import echo as echo_request_id
from gateway.faces.request_ids import of_request as request_id_of
from gateway.faces.sse import LAST_EVENT_ID, EventIds, ResumeFrom, parse_last_event_id, retry_frame
from gateway.faces.sse import frame as sse_frame
from gateway.limiting.callers import CallerLimits
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

#: Fields as HTTP callers spell them (proto JSON's lowerCamelCase), so errors name them so too.
FIELD_NAMES = ("serverId", "accountId", "region")
_BODY_FIELDS = frozenset({"accountId", "region"})
#: grpc-gateway reads a deadline from `Grpc-Timeout` in gRPC's own format (e.g. `2S`, `500m`).
_TIMEOUT_RE = GRPC_TIMEOUT
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: Request bodies are two short strings; anything much larger is a mistake or an attack.
MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class Readiness:
    """The answer of /readyz: ready or not, and each check's verdict ("ok" or why not)."""

    ready: bool
    checks: Mapping[str, str] = field(default_factory=dict)


ReadinessProbe = Callable[[], Awaitable[Readiness]]


class HttpApi:
    """Each streaming route: read the fields, run the core's stream, render updates and errors.
    Validation, budget, single flight and watching all live in the core, as for gRPC."""

    def __init__(
        self,
        core: Core,
        metrics: Metrics,
        *,
        readiness: ReadinessProbe,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
        heartbeat_seconds: float = 15.0,
        access: Access | None = None,
        body_timeout_seconds: float | None = None,
        limits: CallerLimits | None = None,
    ) -> None:
        self._core = core
        self._access = access
        #: /openapi.json, made on first ask (the settings it reflects do not change).
        self._openapi: dict[str, Any] | None = None
        #: How long a request body may take to arrive (None: as long as it likes).
        self._body_timeout = body_timeout_seconds
        #: The call wrapper; `access` says who may act on which account (gateway.faces.auth;
        #: the app's middleware authenticated the caller already). None: anyone, on any account.
        self._calls = Calls("http", core, metrics, access, field_names=FIELD_NAMES, limits=limits)
        self._metrics = metrics
        self._readiness = readiness
        self._before_scrape = before_scrape
        self._heartbeat_seconds = heartbeat_seconds

    def add_routes(self, app: web.Application) -> None:
        # `[^/]+` backtracks to leave `:stop` to the literal, so the route reads as
        # grpc-gateway's custom verbs do; any id (a stray colon, a brace, which aiohttp's
        # default `[^{}/]+` would turn into a plain-text 404) reaches validation and gets a
        # JSON 400 naming the field.
        app.router.add_post("/v1/servers/{serverId:[^/]+}:stop", self.stop)
        app.router.add_post("/v1/servers/{serverId:[^/]+}:start", self.start)
        # No HEAD: it would hold a watch open for a body nobody reads.
        app.router.add_get("/v1/servers/{serverId:[^/]+}:watch", self.watch, allow_head=False)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        # Every answer of this app (the AWS face's, 404s, the middlewares' 401s) names its id.
        app.on_response_prepare.append(echo_request_id)

    # -- streaming routes --------------------------------------------------------------------
    async def stop(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, STOP, self._body_ask(request))

    async def start(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, START, self._body_ask(request))

    def _body_ask(self, request: web.Request) -> Callable[[], Awaitable[Ask]]:
        """A change's Ask: the path's server, account and region from the JSON body."""

        async def ask() -> Ask:
            body, violations = await _read_json_body(request, self._body_timeout)
            # A bad body is reported with the path's and the header's bad fields, not alone.
            return Ask(
                request.match_info["serverId"],
                body.get("accountId", ""),
                body.get("region", ""),
                violations=violations,
            )

        return ask

    async def watch(self, request: web.Request) -> web.StreamResponse:
        # A reconnecting EventSource names the last event it had (gateway.faces.sse). Only a
        # watch resumes: EventSource never POSTs, and a POST asked again is a new ask.
        resume = _last_event_id(request)
        violations = (resume,) if isinstance(resume, FieldViolation) else ()

        async def ask() -> Ask:
            query, bad = _query_fields(request)
            return Ask(
                request.match_info["serverId"],
                query.get("accountId", ""),
                query.get("region", ""),
                violations=violations + bad,
            )

        if isinstance(resume, ResumeFrom) and resume.ended:
            return await self._ended(request, ask)
        return await self._serve(
            request, WATCH, ask, resume=resume if isinstance(resume, ResumeFrom) else None
        )

    async def _ended(self, request: web.Request, ask: Callable[[], Awaitable[Ask]]) -> web.Response:
        """A reconnect after the stream's end: 204, which tells EventSource to stop. Still a
        call like any watch (logged, counted, on the caller's limits, its fields and access
        checked), so no request reaches the gateway unseen; it reads nothing upstream and
        spends no budget."""
        async with self._calls.open(
            WATCH.name,
            server=request.match_info["serverId"],
            streaming=False,
            request_id=request_id_of(request),
        ) as call:
            try:
                await call.admit(
                    await ask(),
                    who=lambda access: request_caller(request),
                    timeout=lambda: _timeout(request),
                )
            except Exception as exc:
                return error_response(call.failed(exc))
            return web.Response(status=204, headers={"Cache-Control": "no-cache"})

    async def _serve(
        self,
        request: web.Request,
        operation: Operation,
        ask: Callable[[], Awaitable[Ask]],
        *,
        resume: ResumeFrom | None = None,
    ) -> web.StreamResponse:
        sse = _wants_sse(request)
        ids = EventIds(request.match_info["serverId"], resume) if sse else None
        clock = self._core.clock
        async with self._calls.open(
            operation.name,
            server=request.match_info["serverId"],
            request_id=request_id_of(request),
        ) as call:
            updates = call.stream(
                operation,
                ask,
                who=lambda access: request_caller(request),
                timeout=lambda: _timeout(request),
            )
            # The status line waits for the first update, so an error known before it (bad
            # field, unknown server, no budget) gets its own HTTP status, as grpc-gateway does.
            try:
                first = await anext(updates, None)
            except Exception as exc:
                return error_response(call.failed(exc))
            response = web.StreamResponse(
                headers={
                    "Content-Type": SSE if sse else NDJSON,
                    "Cache-Control": "no-cache",
                    # Proxies (nginx) must pass each line on at once, not buffer the stream.
                    "X-Accel-Buffering": "no",
                }
            )
            heartbeat: asyncio.Task[None] | None = None
            try:
                await response.prepare(request)
                if sse:
                    await response.write(retry_frame())
                    heartbeat = asyncio.create_task(self._heartbeat(response, clock))
                # None only if the core ended without an update; it always sends one first.
                if first is not None:
                    # A resumed watch whose client has this state already sends only news.
                    if ids is None or not ids.seen(first):
                        await _send_update(response, ids, first)
                    async for update in updates:
                        await _send_update(response, ids, update)
            except Exception as exc:
                error = call.failed(exc)  # a reset connection is re-raised: nobody to tell
                if not response.prepared:
                    return error_response(error)
                # After the status line, an error is the stream's last line.
                event_id = ids.for_status() if ids is not None else None
                await _send(response, sse, "error", status_json(error), event_id=event_id)
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                        await heartbeat
            await response.write_eof()
            return response

    async def _heartbeat(self, response: web.StreamResponse, clock: Clock) -> None:
        """An SSE comment every interval: no event to EventSource, but bytes on an idle line.
        Each write is one whole frame, so it cannot split an event being sent."""
        while True:
            await clock.sleep(self._heartbeat_seconds)
            await response.write(b": keep-alive\n\n")

    # -- health, metrics, description ----------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        """Alive: the event loop answers. Says nothing of AWS or the limiter (that is /readyz)."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        readiness = await self._readiness()
        return web.json_response(
            {"status": "ready" if readiness.ready else "not ready", "checks": readiness.checks},
            status=200 if readiness.ready else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            await self._before_scrape()
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            auth = self._access.settings if self._access is not None else None
            # Off the loop: the first one reads botocore's Transfer model (~0.2 s).
            self._openapi = await asyncio.to_thread(openapi_document, self._core.settings, auth)
        return web.json_response(self._openapi)


# -- rendering -----------------------------------------------------------------------------------
def _update_json(update: StateUpdate) -> dict[str, Any]:
    # grpc-gateway's marshaler emits unpopulated fields, so every line has every key.
    return json_format.MessageToDict(
        update_to_proto(update), always_print_fields_with_no_presence=True
    )


def status_json(error: GatewayError) -> dict[str, Any]:
    """google.rpc.Status in proto JSON: code, message, details with `@type`."""
    return json_format.MessageToDict(error_to_status(error))


def retry_after_header(error: GatewayError) -> str | None:
    """Whole seconds for `Retry-After` (HTTP allows no fractions), rounded up, at least 1."""
    if error.retry_after is None and error.kind.http_status != 429:
        return None
    seconds = error.retry_after if error.retry_after is not None else 1.0
    return str(max(1, math.ceil(seconds)))


def body_error(error: BodyError) -> GatewayError:
    """A body that could not be had, as the table's error: REQUEST_TIMEOUT when too slow,
    else INVALID_ARGUMENT naming `body`."""
    if error.problem is BodyProblem.TOO_SLOW:
        return GatewayError(ErrorKind.REQUEST_TIMEOUT, error.message)
    if error.problem is BodyProblem.TOO_LARGE:
        return InvalidArgument([FieldViolation("body", f"must be at most {MAX_BODY_BYTES} bytes")])
    return InvalidArgument([FieldViolation("body", f"must be a JSON object ({error.message})")])


@web.middleware
async def routing_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The router's own 404 and 405 as the table's errors: the same google.rpc.Status JSON as
    every other error, not aiohttp's text/plain. Only the router's: a route's own answers
    pass as they are."""
    routing_error = getattr(request.match_info, "http_exception", None)
    if routing_error is None:
        return await handler(request)
    if isinstance(routing_error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(routing_error.allowed_methods))
        error = GatewayError(
            ErrorKind.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path[:200]} (allowed: {allowed})",
            metadata={"allow": allowed},
        )
        _log_refused(request, error)
        response = error_response(error)
        response.headers["Allow"] = allowed
        return response
    if isinstance(routing_error, web.HTTPNotFound):
        error = GatewayError(
            ErrorKind.ROUTE_NOT_FOUND, f"no route for {request.path[:200]} (see /openapi.json)"
        )
        _log_refused(request, error)
        return error_response(error)
    return await handler(request)


def _log_refused(request: web.Request, error: GatewayError) -> None:
    """A request no route takes never becomes a call, so no call.end tells of it: this line,
    the same one the auth middleware writes for a 401, is its only trace (a client calling
    a misspelt route would otherwise fail unseen)."""
    log.warning(
        "http.refused",
        request_id=request_id_of(request),
        face="http",
        method=request.method,
        path=request.path[:200],
        outcome=error.kind.grpc_code.name,
        reason=error.kind.reason,
        message=str(error),
    )


def error_response(error: GatewayError) -> web.Response:
    """An error before the first byte: the table's HTTP status and a google.rpc.Status body."""
    headers = {}
    retry_after = retry_after_header(error)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return web.json_response(status_json(error), status=error.kind.http_status, headers=headers)


def raw_error_response(error: GatewayError) -> bytes:
    """error_response's status and body as a whole HTTP/1.1 response, for a connection the
    listener answers without reading its request (the connection cap)."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    retry_after = retry_after_header(error)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = json.dumps(status_json(error), separators=(",", ":")).encode()
    status = error.kind.http_status
    return raw_response(status, HTTPStatus(status).phrase, body, headers)


async def _send(
    response: web.StreamResponse,
    sse: bool,
    event: str,
    payload: Any,
    *,
    event_id: str | None = None,
) -> None:
    """One update or the final error: `{event: payload}` on NDJSON ("result", "error"), an SSE
    event named as gateway.faces.sse.EVENT_NAMES says (the error is `status`)."""
    if sse:
        data = sse_frame(event, json.dumps(payload, separators=(",", ":")), event_id)
    else:
        data = (json.dumps({event: payload}, separators=(",", ":")) + "\n").encode()
    # write() hands the frame to the transport now; nothing buffers it on our side.
    await response.write(data)


async def _send_update(
    response: web.StreamResponse, ids: EventIds | None, update: StateUpdate
) -> None:
    """An update; on SSE (`ids` given) with its id."""
    event_id = ids.for_update(update) if ids is not None else None
    await _send(response, ids is not None, "result", _update_json(update), event_id=event_id)


# -- request fields -----------------------------------------------------------------------------
def _wants_sse(request: web.Request) -> bool:
    return any(SSE in part for part in request.headers.getall("Accept", []))


def _last_event_id(request: web.Request) -> ResumeFrom | FieldViolation | None:
    """Where a reconnecting EventSource left off; None without the header (or an empty one,
    which EventSource never sends: it means no id), and on NDJSON, which has no ids."""
    raw = request.headers.get(LAST_EVENT_ID, "")
    if not raw or not _wants_sse(request):
        return None
    return parse_last_event_id(raw, request.match_info["serverId"])


def _timeout(request: web.Request) -> float | None:
    """Seconds of the caller's `Grpc-Timeout`, or None without one."""
    raw = request.headers.get("Grpc-Timeout")
    if raw is None:
        return None
    match = _TIMEOUT_RE.fullmatch(raw.strip())
    if match is None:
        raise InvalidArgument(
            [FieldViolation("Grpc-Timeout", "must be 1-8 digits and a unit H, M, S, m, u or n")]
        )
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


async def _read_json_body(
    request: web.Request, seconds: float | None
) -> tuple[dict[str, str], tuple[FieldViolation, ...]]:
    """The stop body: an optional JSON object with string `accountId` and `region`, and what
    is wrong with it (the call wrapper reports it with every other bad field). A body too slow
    to arrive raises REQUEST_TIMEOUT.

    Unknown fields are refused rather than ignored (grpc-gateway ignores them): a misspelt
    `acountId` would otherwise stop a server in the default account."""
    try:
        raw = await read_body(request, max_bytes=MAX_BODY_BYTES, seconds=seconds)
        body = parse_json(raw) if raw.strip() else {}
    except BodyError as exc:
        error = body_error(exc)
        if isinstance(error, InvalidArgument):
            return {}, tuple(error.violations)
        raise error from None
    if not isinstance(body, dict):
        return {}, (FieldViolation("body", "must be a JSON object"),)
    violations: list[FieldViolation] = []
    out: dict[str, str] = {}
    for key, value in body.items():
        name = _FIELD_ALIASES.get(key, key)
        if name not in _BODY_FIELDS:
            violations.append(FieldViolation(_shown(key), "is not a field of this request"))
        elif value is None:
            continue  # proto JSON reads null as the default
        elif not isinstance(value, str):
            violations.append(FieldViolation(key, "must be a string"))
        elif name in out:
            violations.append(FieldViolation(key, f"is given twice (as {name} and {key})"))
        else:
            out[name] = value
    return out, tuple(violations)


#: The proto field names, which grpc-gateway (protojson) accepts beside the JSON names: a
#: caller that writes `account_id` must act on that account, never on the default one.
_FIELD_ALIASES = {"account_id": "accountId"}


def _shown(key: str) -> str:
    """A caller's field name as a violation shows it: at most 40 characters."""
    return key if len(key) <= 40 else key[:40] + "..."


def _query_fields(request: web.Request) -> tuple[dict[str, str], tuple[FieldViolation, ...]]:
    """A watch's `accountId` (or `account_id`) and `region` from the query, and what is wrong
    with it. An unknown parameter is refused, as an unknown body field is: a misspelt
    `acountId` would otherwise watch the default account's server of that id and report its
    state as the caller's. Parameters whose name starts with `_` are cache busters (jQuery's
    `_=`, a proxy's), ignored."""
    violations: list[FieldViolation] = []
    out: dict[str, str] = {}
    for key, value in request.query.items():
        name = _FIELD_ALIASES.get(key, key)
        if key.startswith("_"):
            continue
        if name not in _BODY_FIELDS:
            violations.append(FieldViolation(_shown(key), "is not a parameter of this request"))
        elif name in out:
            violations.append(FieldViolation(key, "is given twice"))
        else:
            out[name] = value
    return out, tuple(violations)

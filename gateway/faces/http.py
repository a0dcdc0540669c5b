"""The HTTP face: stop, start and watch as NDJSON or SSE streams; health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.clock import Clock
from gateway.core.operations import Core
from gateway.core.validation import validate_target
from gateway.domain import StateUpdate, Target
from gateway.errors import ErrorKind, FieldViolation, GatewayError, InvalidArgument
from gateway.faces.auth import Access, request_caller
from gateway.faces.bodies import BodyError, BodyProblem, parse_json, read_body
from gateway.faces.connections import raw_response
from gateway.faces.messages import error_to_status, update_to_proto
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
#: Fields as HTTP callers spell them (proto JSON's lowerCamelCase), so errors name them so too.
FIELD_NAMES = ("serverId", "accountId", "region")
_BODY_FIELDS = frozenset({"accountId", "region"})
#: grpc-gateway reads a deadline from `Grpc-Timeout` in gRPC's own format (e.g. `2S`, `500m`).
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: Request bodies are two short strings; anything much larger is a mistake or an attack.
MAX_BODY_BYTES = 16 * 1024

Operation = Callable[..., AsyncIterator[StateUpdate]]


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
    ) -> None:
        self._core = core
        #: How long a request body may take to arrive (None: as long as it likes).
        self._body_timeout = body_timeout_seconds
        #: Who may act on which account (gateway.faces.auth); the app's middleware authenticated the
        #: caller already. None: anyone, on any account.
        self._access = access
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

    # -- streaming routes --------------------------------------------------------------------
    async def stop(self, request: web.Request) -> web.StreamResponse:
        async def fields() -> tuple[str, str]:
            body = await _read_json_body(request, self._body_timeout)
            return body.get("accountId", ""), body.get("region", "")

        return await self._serve(request, "StopServer", self._core.stop, fields)

    async def start(self, request: web.Request) -> web.StreamResponse:
        async def fields() -> tuple[str, str]:
            body = await _read_json_body(request, self._body_timeout)
            return body.get("accountId", ""), body.get("region", "")

        return await self._serve(request, "StartServer", self._core.start, fields)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        async def fields() -> tuple[str, str]:
            # Unknown query parameters are ignored: browsers and EventSource polyfills add
            # cache busters, and a watch changes nothing.
            query = request.query
            return query.get("accountId", ""), query.get("region", "")

        return await self._serve(request, "WatchServer", self._core.watch, fields)

    async def _serve(
        self,
        request: web.Request,
        method: str,
        operation: Operation,
        read_fields: Callable[[], Awaitable[tuple[str, str]]],
    ) -> web.StreamResponse:
        started = time.monotonic()
        sse = _wants_sse(request)
        server_id = request.match_info["serverId"]
        log_fields: dict[str, Any] = {"method": method, "server": server_id[:40], "sse": sse}
        outcome = "OK"
        last: StateUpdate | None = None
        stream: AsyncIterator[StateUpdate] | None = None
        response: web.StreamResponse | None = None
        heartbeat: asyncio.Task[None] | None = None
        self._metrics.open_streams.labels("http").inc()
        log.info("call.start", transport="http", **log_fields)
        try:
            try:
                account, region = await read_fields()
                deadline = _deadline(request, self._core.clock)
                target: Target = validate_target(
                    server_id,
                    account,
                    region,
                    default_account=self._core.settings.default_account,
                    default_region=self._core.settings.default_region,
                    extra_regions=self._core.settings.extra_regions,
                    field_names=FIELD_NAMES,
                )
                log_fields.update(account=target.account_id, region=target.region)
                if self._access is not None:
                    # Before the core runs: a denied caller spends no budget, calls no AWS.
                    self._access.authorize(request_caller(request), target)
                stream = operation(target, deadline=deadline)
                # The status line waits for the first update, so an error known before it (bad
                # field, unknown server, no budget) gets its own HTTP status, as grpc-gateway does.
                last = await anext(stream)
            except GatewayError as exc:
                outcome = exc.kind.grpc_code.name
                return error_response(exc)
            except StopAsyncIteration:
                last = None  # the core always yields a terminal update first; keep it honest
            response = web.StreamResponse(
                headers={
                    "Content-Type": SSE if sse else NDJSON,
                    "Cache-Control": "no-cache",
                    # Proxies (nginx) must pass each line on at once, not buffer the stream.
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            if sse:
                heartbeat = asyncio.create_task(self._heartbeat(response))
            if last is not None and stream is not None:
                await _send(response, sse, "result", _update_json(last))
                try:
                    async for update in stream:
                        last = update
                        await _send(response, sse, "result", _update_json(update))
                except GatewayError as exc:
                    outcome = exc.kind.grpc_code.name
                    await _send(response, sse, "error", status_json(exc))
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            outcome = "CANCELLED"  # the caller went away; the core drops its share of the work
            raise
        except Exception:
            # A bug: log it whole, tell the caller no more than INTERNAL.
            outcome = "INTERNAL"
            log.exception("call.bug", transport="http", **log_fields)
            bug = GatewayError(ErrorKind.INTERNAL, "internal error in the gateway")
            if response is None:
                return error_response(bug)
            with contextlib.suppress(Exception):
                await _send(response, sse, "error", status_json(bug))
                await response.write_eof()
            return response
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await heartbeat
            if stream is not None:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            self._metrics.open_streams.labels("http").dec()
            self._metrics.calls.labels("http", method, outcome).inc()
            log.info(
                "call.end",
                transport="http",
                **log_fields,
                outcome=outcome,
                duration=round(time.monotonic() - started, 4),
                state=str(last.state) if last else None,
                aws_request_id=last.aws_request_id if last else None,
            )

    async def _heartbeat(self, response: web.StreamResponse) -> None:
        """An SSE comment every interval: no event to EventSource, but bytes on an idle line.
        Each write is one whole frame, so it cannot split an event being sent."""
        while True:
            await self._core.clock.sleep(self._heartbeat_seconds)
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
        return web.json_response(openapi_document())


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


async def _send(response: web.StreamResponse, sse: bool, event: str, payload: Any) -> None:
    data = json.dumps(payload, separators=(",", ":"))
    if sse:
        frame = f"event: {event}\ndata: {data}\n\n"
    else:
        frame = json.dumps({event: payload}, separators=(",", ":")) + "\n"
    # write() hands the frame to the transport now; nothing buffers it on our side.
    await response.write(frame.encode())


# -- request fields -----------------------------------------------------------------------------
def _wants_sse(request: web.Request) -> bool:
    return any(SSE in part for part in request.headers.getall("Accept", []))


def _deadline(request: web.Request, clock: Clock) -> float | None:
    raw = request.headers.get("Grpc-Timeout")
    if raw is None:
        return None
    match = _TIMEOUT_RE.fullmatch(raw.strip())
    if match is None:
        raise InvalidArgument(
            [FieldViolation("Grpc-Timeout", "must be 1-8 digits and a unit H, M, S, m, u or n")]
        )
    return clock.monotonic() + int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


async def _read_json_body(request: web.Request, seconds: float | None) -> dict[str, str]:
    """The stop body: an optional JSON object with string `accountId` and `region`.

    Unknown fields are refused rather than ignored (grpc-gateway ignores them): a misspelt
    `acountId` would otherwise stop a server in the default account."""
    try:
        raw = await read_body(request, max_bytes=MAX_BODY_BYTES, seconds=seconds)
        body = parse_json(raw) if raw.strip() else {}
    except BodyError as exc:
        raise body_error(exc) from None
    if not isinstance(body, dict):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    violations: list[FieldViolation] = []
    out: dict[str, str] = {}
    for key, value in body.items():
        shown = key if len(key) <= 40 else key[:40] + "..."
        if key not in _BODY_FIELDS:
            violations.append(FieldViolation(shown, "is not a field of this request"))
        elif value is None:
            continue  # proto JSON reads null as the default
        elif not isinstance(value, str):
            violations.append(FieldViolation(key, "must be a string"))
        else:
            out[key] = value
    if violations:
        raise InvalidArgument(violations)
    return out


# -- OpenAPI --------------------------------------------------------------------------------------
_SERVER_ID_PARAM: dict[str, Any] = {
    "name": "serverId",
    "in": "path",
    "required": True,
    "description": "Transfer Family server id: `s-` and 17 lower-case hex digits.",
    "schema": {"type": "string", "example": "s-0123456789abcdef0"},
}
_TIMEOUT_PARAM: dict[str, Any] = {
    "name": "Grpc-Timeout",
    "in": "header",
    "required": False,
    "description": "Deadline in gRPC's format (digits and a unit H, M, S, m, u, n), e.g. `30S`.",
    "schema": {"type": "string"},
}
_ERROR_STATUSES = ("400", "401", "403", "404", "409", "429", "500", "503", "504")


def _stream_responses(summary: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Status"}
    responses: dict[str, Any] = {
        "200": {
            "description": summary,
            "content": {
                NDJSON: {"schema": {"$ref": "#/components/schemas/StreamLine"}},
                SSE: {"schema": {"type": "string"}},
            },
        }
    }
    for status in _ERROR_STATUSES:
        entry: dict[str, Any] = {
            "description": "An error known before the first update (google.rpc.Status).",
            "content": {"application/json": {"schema": ref}},
        }
        if status == "429":
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
            }
        responses[status] = entry
    return responses


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 description of the JSON routes (tests check it against the router)."""
    region_schema = {"type": "string", "description": "AWS region; default: the gateway's."}
    account_schema = {"type": "string", "description": "12-digit account; default: the gateway's."}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "transfer-gateway HTTP API",
            "version": "v1",
            "description": "Stop, start and watch AWS Transfer Family servers under a"
            " per-account budget.",
        },
        "paths": {
            "/v1/servers/{serverId}:stop": {
                "post": {
                    "operationId": "StopServer",
                    "summary": "Stop a server and stream its state until it is terminal.",
                    "parameters": [_SERVER_ID_PARAM, _TIMEOUT_PARAM],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StopServerBody"}
                            }
                        },
                    },
                    "responses": _stream_responses("One line (or SSE event) per state update."),
                }
            },
            "/v1/servers/{serverId}:start": {
                "post": {
                    "operationId": "StartServer",
                    "summary": "Start a server and stream its state until it is terminal"
                    " (ONLINE, or START_FAILED then the error). A no-op on an ONLINE server.",
                    "parameters": [_SERVER_ID_PARAM, _TIMEOUT_PARAM],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StopServerBody"}
                            }
                        },
                    },
                    "responses": _stream_responses("One line (or SSE event) per state update."),
                }
            },
            "/v1/servers/{serverId}:watch": {
                "get": {
                    "operationId": "WatchServer",
                    "summary": "Stream a server's state without changing it, until terminal.",
                    "parameters": [
                        _SERVER_ID_PARAM,
                        {"name": "accountId", "in": "query", "schema": account_schema},
                        {"name": "region", "in": "query", "schema": region_schema},
                        _TIMEOUT_PARAM,
                    ],
                    "responses": _stream_responses("One line (or SSE event) per state update."),
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "Healthz",
                    "summary": "The process is alive.",
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "Readyz",
                    "summary": "Ready to serve: started, not draining, upstream and limiter up.",
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "Starting, draining, or a dependency is down."},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "Metrics",
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {"200": {"description": "Metrics."}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "OpenApi",
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3 JSON."}},
                }
            },
            "/": {
                "post": {
                    "operationId": "AwsJson11",
                    "summary": "AWS-compatible Transfer Family endpoint (JSON 1.1, X-Amz-Target"
                    " TransferService.StopServer, StartServer, DescribeServer, ListServers).",
                    "responses": {
                        "200": {"description": "As AWS answers."},
                        "400": {"description": "An AWS error (`__type`, `Message`)."},
                        "500": {"description": "An AWS server error (`__type`, `Message`)."},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "StopServerBody": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"accountId": account_schema, "region": region_schema},
                },
                "ServerStateUpdate": {
                    "type": "object",
                    "required": [
                        "serverId",
                        "accountId",
                        "region",
                        "state",
                        "stage",
                        "terminal",
                        "awsRequestId",
                        "budgetWait",
                    ],
                    "properties": {
                        "serverId": {"type": "string"},
                        "accountId": {"type": "string"},
                        "region": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": [
                                "SERVER_STATE_UNSPECIFIED",
                                "SERVER_STATE_OFFLINE",
                                "SERVER_STATE_ONLINE",
                                "SERVER_STATE_STARTING",
                                "SERVER_STATE_STOPPING",
                                "SERVER_STATE_START_FAILED",
                                "SERVER_STATE_STOP_FAILED",
                            ],
                        },
                        # From the proto, so a new operation's stage shows up by itself.
                        "stage": {"type": "string", "enum": list(pb.Stage.keys())},
                        "observedAt": {"type": "string", "format": "date-time"},
                        "terminal": {"type": "boolean"},
                        "awsRequestId": {"type": "string"},
                        "budgetWait": {"type": "string", "description": "Duration, e.g. `0.5s`."},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "integer"},
                        "message": {"type": "string"},
                        "details": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["@type"],
                                "properties": {"@type": {"type": "string"}},
                            },
                        },
                    },
                },
                "StreamLine": {
                    "type": "object",
                    "description": "One NDJSON line: a result, or a last error.",
                    "properties": {
                        "result": {"$ref": "#/components/schemas/ServerStateUpdate"},
                        "error": {"$ref": "#/components/schemas/Status"},
                    },
                },
            }
        },
    }

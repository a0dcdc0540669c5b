"""The HTTP face's OpenAPI document, derived at run time from gateway.proto and botocore's model.

The gRPC service's methods and their google.api.http annotations give the routes, their
request messages the path, query and body fields, their response messages the answers (proto3
JSON: gateway.faces.openapi_schemas); botocore's Transfer model gives the AWS-compatible face's
bodies. What neither contract can say is kept here, in one place: the name patterns (from
gateway.names), the headers (Grpc-Timeout, x-request-id), media types, the error statuses of
the one table (gateway.errors), the routes that are not RPCs, and who may call which route.
tests/http/test_openapi.py holds the document to the router and to the annotations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, Final

import botocore.session
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.rpc import error_details_pb2, status_pb2

from gateway import names
from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.awsjson import CONTENT_TYPE as AWS_JSON
from gateway.awsjson import TARGET_PREFIX
from gateway.config import AuthSettings, CoreSettings
from gateway.core.jobs import JOB_ID_PREFIX
from gateway.errors import ErrorKind
from gateway.faces.aws import AwsApi
from gateway.faces.openapi_schemas import ProtoSchemas, Schema, ref, shape_schema
from gateway.faces.request_ids import HEADER as REQUEST_ID_HEADER
from gateway.faces.request_ids import PATTERN as REQUEST_ID_PATTERN
from gateway.faces.sse import EVENT_NAMES, ID_RE, JOB_ID_RE, LAST_EVENT_ID
from gateway.regions import transfer_regions

OPENAPI_VERSION: Final = "3.2.0"
NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"
JSON: Final = "application/json"
#: grpc-gateway reads a deadline from `Grpc-Timeout` in gRPC's own format (e.g. `2S`, `500m`).
GRPC_TIMEOUT_HEADER: Final = "Grpc-Timeout"
GRPC_TIMEOUT: Final = re.compile(r"([0-9]{1,8})([HMSmun])")
SERVICE: Final = pb.DESCRIPTOR.services_by_name["TransferGateway"]
#: The RPCs whose HTTP routes read Grpc-Timeout (gateway.faces.http); the job routes do not.
_TIMED = frozenset({"StopServer", "StartServer", "WatchServer"})
#: Only a watch resumes from Last-Event-ID (gateway.faces.sse): EventSource never POSTs. Each
#: takes its own stream's ids: the Last-Event-ID parameter (a component) and the ids' spelling.
_RESUMED: Final[dict[str, tuple[str, str]]] = {
    "WatchServer": ("LastEventId", "<serverId>.<n>.<STATE>[.end]"),
    "WatchJob": ("JobLastEventId", "<jobId>.<n>[.end]"),
}
#: The streamed message -> its watch's event ids (stop and start send none).
_EVENT_IDS: Final[dict[str, str]] = {
    SERVICE.methods_by_name[name].output_type.full_name: ids for name, (_, ids) in _RESUMED.items()
}
STATUS = status_pb2.Status.DESCRIPTOR
#: What error_to_status (gateway.faces.messages) packs into google.rpc.Status.details.
_ERROR_DETAILS = (
    error_details_pb2.ErrorInfo.DESCRIPTOR,
    error_details_pb2.ResourceInfo.DESCRIPTOR,
    error_details_pb2.BadRequest.DESCRIPTOR,
    error_details_pb2.RetryInfo.DESCRIPTOR,
)
#: Statuses that are never an answer to this route: 499 is logged only (the caller is gone),
#: 405 answers another method than the route's.
_NOT_ANSWERED = frozenset({499, 405})
#: HTTP status -> the table's reasons answered with it.
_REASONS: Final[dict[int, list[str]]] = {}
for _kind in ErrorKind:
    if _kind.http_status not in _NOT_ANSWERED:
        _REASONS.setdefault(_kind.http_status, []).append(_kind.reason)


def _field_facts(core: CoreSettings) -> dict[str, Schema]:
    """Field keywords the proto cannot say, by field name (the same name means the same thing
    in every message: "the fields mean what they mean in StopServerRequest") or full name."""
    # The regions validation accepts (gateway.core.validation), "" for the default.
    regions = sorted(transfer_regions() | set(core.extra_regions))
    account = f"(?:{names.ACCOUNT_ID.pattern})"
    return {
        "server_id": {
            "pattern": f"^{names.SERVER_ID_PATTERN}$",
            "minLength": names.SERVER_ID_LENGTH,
            "maxLength": names.SERVER_ID_LENGTH,
            "description": "Transfer Family server id: `s-` and 17 lower-case hex digits.",
        },
        "account_id": {
            "pattern": f"^{account}?$",
            "description": "12-digit AWS account; empty or absent: the gateway's default"
            f" ({core.default_account}).",
        },
        "region": {
            "enum": ["", *regions],
            "description": "A region that serves Transfer Family (or one of core.extra_regions);"
            f" empty or absent: the gateway's default ({core.default_region}).",
        },
        "job_id": {
            "pattern": f"^{JOB_ID_PREFIX}[0-9a-f]{{16}}$",
            "description": f"A job id: `{JOB_ID_PREFIX}` and 16 hex digits.",
        },
        "page_size": {"minimum": 0, "description": "At most this many (0: 50; at most 1000)."},
        "page_token": {"description": "From the previous page's nextPageToken (only those)."},
        "transfer_gateway.v1.CreateJobRequest.request_id": {"maxLength": 128},
        "transfer_gateway.v1.CreateJobRequest.operation": {
            "enum": ["JOB_OPERATION_STOP", "JOB_OPERATION_START"]
        },
        "transfer_gateway.v1.JobSelector.account_ids": {"items": {"pattern": f"^{account}$"}},
        "transfer_gateway.v1.JobSelector.regions": {"items": {"enum": regions}},
        "transfer_gateway.v1.JobSelector.states": {
            "items": {"enum": [v.name for v in pb.ServerState.DESCRIPTOR.values if v.number != 0]}
        },
        "transfer_gateway.v1.JobSelector.tags": {
            "propertyNames": {"minLength": 1, "maxLength": 128}
        },
        # Listed targets or a selector, exactly one (an empty list is no targets in proto3).
        "transfer_gateway.v1.CreateJobRequest": {
            "required": ["operation"],
            "oneOf": [
                {"required": ["targets"], "properties": {"targets": {"minItems": 1}}},
                {"required": ["selector"]},
            ],
        },
        "transfer_gateway.v1.JobTarget": {"required": ["serverId"]},
        # status_json writes no unpopulated field; every error has a code and a message.
        "google.rpc.Status": {"required": ["code", "message"]},
    }


def _inputs() -> set[str]:
    """Every message a caller sends (nothing in it is required by the proto)."""
    found: set[str] = set()

    def walk(message: Descriptor) -> None:
        if message.full_name in found:
            return
        found.add(message.full_name)
        for field in message.fields:
            if field.message_type is not None:
                walk(field.message_type)

    for method in SERVICE.methods:
        walk(method.input_type)
    return found


def http_rule(method: MethodDescriptor) -> tuple[str, str, str]:
    """(HTTP method, path as OpenAPI and the router spell it, body) of an RPC's annotation;
    path variables name proto fields and become their JSON names (`{serverId}`)."""
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise ValueError(f"{method.full_name} has no plain google.api.http annotation")
    fields = method.input_type.fields_by_name
    template: str = getattr(rule, verb)
    path = re.sub(r"\{(\w+)\}", lambda m: "{" + fields[m.group(1)].json_name + "}", template)
    return verb, path, rule.body


class _Document:
    """One document being written: its components fill as routes ask for schemas."""

    def __init__(self, core: CoreSettings, auth: AuthSettings | None) -> None:
        self.auth_on = auth is not None and auth.enabled
        self.metrics_auth = self.auth_on and auth is not None and auth.metrics_require_auth
        self.schemas: dict[str, Schema] = {}
        self.responses: dict[str, Schema] = {}
        self.proto = ProtoSchemas(
            self.schemas,
            facts=_field_facts(core),
            inputs=_inputs(),
            sparse=lambda name: name.startswith("google.rpc."),
            any_types={
                "google.rpc.Status.details": _ERROR_DETAILS,
                "google.longrunning.Operation.metadata": (pb.Job.DESCRIPTOR,),
                "google.longrunning.Operation.response": (pb.Job.DESCRIPTOR,),
            },
        )

    # -- the RPC routes ---------------------------------------------------------------------
    def rpc(self, method: MethodDescriptor) -> tuple[str, str, Schema]:
        verb, path, body = http_rule(method)
        request = method.input_type
        in_path = set(re.findall(r"\{(\w+)\}", path))
        rest = [f for f in request.fields if f.json_name not in in_path]
        parameters: list[Schema] = [
            {"name": f.json_name, "in": "path", "required": True, "schema": self.proto.field(f)}
            for f in request.fields
            if f.json_name in in_path
        ]
        operation: Schema = {
            "operationId": method.name,
            "summary": _summary(method),
            "description": _comment(method),
        }
        if body == "*":
            if rest:
                operation["requestBody"] = self._body(request, rest)
        elif body:
            raise ValueError(f"{method.full_name}: only body '*' or none is served")
        else:
            parameters += [
                {"name": f.json_name, "in": "query", "schema": self.proto.field(f)} for f in rest
            ]
        if method.name in _TIMED:
            parameters.append(ref_parameter("GrpcTimeout"))
        if method.name in _RESUMED:
            parameters.append(ref_parameter(_RESUMED[method.name][0]))
        parameters.append(ref_parameter("RequestId"))
        operation["parameters"] = parameters
        if method.server_streaming:
            ok = self._stream(method.output_type)
        else:
            ok = {
                "description": f"{method.output_type.full_name} in proto3 JSON.",
                "headers": _request_id(),
                "content": {JSON: {"schema": self.proto.message(method.output_type)}},
            }
        operation["responses"] = {"200": ok, **self._errors(body=bool(rest) and body == "*")}
        if method.name in _RESUMED:
            operation["responses"]["204"] = {
                "description": "SSE: the Last-Event-ID was the stream's last event (EventSource"
                " stops reconnecting).",
                "headers": _request_id(),
            }
        operation["security"] = self._api_security()
        return path, verb, operation

    def _body(self, request: Descriptor, fields: list[FieldDescriptor]) -> Schema:
        if len(fields) == len(request.fields):
            schema = self.proto.message(request)
            required = True
        else:
            # The path carries the rest (grpc-gateway's body "*" with path variables).
            name = f"{request.full_name}.Body"
            self.schemas[name] = self.proto.fields(request, fields)
            schema, required = ref(name), False
        return {"required": required, "content": {JSON: {"schema": schema}}}

    def _stream(self, message: Descriptor) -> Schema:
        update = self.proto.message(message)
        status = self.proto.message(STATUS)
        line = f"{message.full_name}.StreamLine"
        self.schemas[line] = {
            "type": "object",
            "description": f"One NDJSON line: a {message.full_name} as `result`, or the"
            " stream's last line, a google.rpc.Status as `error`.",
            "properties": {"result": update, "error": status},
            "additionalProperties": False,
            "oneOf": [{"required": ["result"]}, {"required": ["error"]}],
        }
        event = f"{message.full_name}.Event"
        watched = _EVENT_IDS.get(message.full_name)
        ids = f" A watch's events carry ids it resumes from (`id: {watched}`)." if watched else ""

        def sse(kind: str, payload: Schema) -> Schema:
            return {
                "properties": {
                    "event": {"const": EVENT_NAMES[kind]},
                    "data": {"contentMediaType": JSON, "contentSchema": payload},
                }
            }

        self.schemas[event] = {
            "type": "object",
            "description": f"One server-sent event: `{EVENT_NAMES['result']}` with a"
            f" {message.full_name} as its JSON data, or last `{EVENT_NAMES['error']}` with a"
            f" google.rpc.Status.{ids} Each stream opens with `retry:` (the reconnection"
            " delay, ms); it and comments (`: keep-alive`) carry no event.",
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": [EVENT_NAMES["result"], EVENT_NAMES["error"]]},
                "data": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
            },
            "oneOf": [sse("result", update), sse("error", status)],
        }
        return {
            "description": "One NDJSON line (or, with `Accept: text/event-stream`, one"
            " server-sent event) per update, written as it happens.",
            "headers": _request_id(),
            "content": {
                NDJSON: {"schema": {"type": "array", "items": ref(line)}, "itemSchema": ref(line)},
                SSE: {"itemSchema": ref(event)},
            },
        }

    def _errors(self, *, body: bool) -> Schema:
        """The table's statuses (gateway/errors.py), each a google.rpc.Status JSON body; 408
        only where a body is read."""
        return {
            str(status): self._error(status) for status in sorted(_REASONS) if status != 408 or body
        }

    def _error(self, status: int) -> Schema:
        """A `$ref` to the table's answer for `status` (written on first use)."""
        name = f"Error{status}"
        if name not in self.responses:
            self.responses[name] = self._error_response(status)
        return {"$ref": f"#/components/responses/{name}"}

    def _error_response(self, status: int) -> Schema:
        reasons = _REASONS[status]
        headers = _request_id(required=status != 503)
        if status == 401:
            headers["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
        if status in (429, 503):
            headers["Retry-After"] = {
                "required": status == 429,
                "description": "Whole seconds, rounded up.",
                "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            }
        return {
            "description": "google.rpc.Status (ErrorInfo reason "
            + ", ".join(reasons)
            + "); docs/errors.md.",
            "headers": headers,
            "content": {JSON: {"schema": self.proto.message(STATUS)}},
        }

    def _api_security(self) -> list[Schema]:
        if not self.auth_on:
            return []
        return [{"bearer": []}, {"mutualTLS": []}]

    # -- the routes that are not RPCs -------------------------------------------------------
    def probes(self) -> Iterator[tuple[str, str, Schema]]:
        busy = {"503": self._error(503)}
        yield (
            "/healthz",
            "get",
            {
                "operationId": "Healthz",
                "summary": "Alive: the event loop answers (nothing of AWS or the limiter).",
                "parameters": [ref_parameter("RequestId")],
                "security": [],
                "responses": {
                    "200": _json_answer(
                        "Alive.",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                            "additionalProperties": False,
                        },
                    ),
                    **busy,
                },
            },
        )
        readiness = {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"enum": ["ready", "not ready"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        }
        not_ready = _json_answer("Starting, draining, or a check failed.", readiness)
        not_ready["content"][JSON]["schema"] = {"anyOf": [readiness, self.proto.message(STATUS)]}
        yield (
            "/readyz",
            "get",
            {
                "operationId": "Readyz",
                "summary": "Ready to serve: started, not draining, upstream and limiter up.",
                "parameters": [ref_parameter("RequestId")],
                "security": [],
                "responses": {"200": _json_answer("Ready.", readiness), "503": not_ready},
            },
        )
        metrics: Schema = {
            "200": {
                "description": "Prometheus text exposition format.",
                "headers": _request_id(),
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **busy,
        }
        if self.metrics_auth:
            metrics["401"] = self._error(401)
        yield (
            "/metrics",
            "get",
            {
                "operationId": "Metrics",
                "summary": "Prometheus metrics.",
                "parameters": [ref_parameter("RequestId")],
                "security": [{"bearer": []}, {"mutualTLS": []}] if self.metrics_auth else [],
                "responses": metrics,
            },
        )
        yield (
            "/openapi.json",
            "get",
            {
                "operationId": "OpenApi",
                "summary": "This document.",
                "parameters": [ref_parameter("RequestId")],
                "security": [],
                "responses": {"200": _json_answer("OpenAPI JSON.", {"type": "object"}), **busy},
            },
        )

    def ui(self) -> Iterator[tuple[str, str, Schema]]:
        """The live page (gateway/faces/ui.py; docs/ui.md): HTML for people, not an API. The
        page, its sign-in and its files authenticate by themselves (a cookie); its stream
        goes through the API's authentication (the cookie, a token or a certificate)."""
        html = {"text/html": {"schema": {"type": "string"}}}

        def page(operation: str, summary: str, responses: Schema) -> Schema:
            return {
                "operationId": operation,
                "summary": summary,
                "parameters": [ref_parameter("RequestId")],
                "security": [],
                "responses": responses,
            }

        def answer(description: str, content: Schema | None = None) -> Schema:
            out: Schema = {"description": description, "headers": _request_id()}
            if content is not None:
                out["content"] = content
            return out

        signed_out = {"401": answer("Auth on and no credentials: the sign-in form.", html)}
        to_page = {"303": answer("To /ui.")}
        yield (
            "/ui",
            "get",
            page(
                "UiPage",
                "The live control-plane page.",
                {
                    "200": answer("The page.", html),
                    "403": answer("The caller may act on no account.", html),
                    **signed_out,
                },
            ),
        )
        events = page(
            "UiEvents",
            "The page's stream: one SSE `snapshot` event a second.",
            {
                "200": answer("SSE", {SSE: {"itemSchema": {"type": "object"}}}),
                "401": self._error(401),
                "403": self._error(403),
            },
        )
        events["security"] = self._api_security()
        yield "/ui/events", "get", events
        static = page(
            "UiStatic",
            "The page's script, styles and the vendored uPlot.",
            {
                "200": answer("The file.", {"*/*": {"schema": {"type": "string"}}}),
                "404": self._error(404),
            },
        )
        static["parameters"].insert(
            0, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        )
        yield "/ui/static/{name}", "get", static
        yield (
            "/ui/login",
            "post",
            page(
                "UiLogin",
                "The sign-in form (field `token`): sets the page's cookie (docs/security.md).",
                {**to_page, **signed_out},
            ),
        )
        yield "/ui/logout", "post", page("UiLogout", "Forget the page's cookie.", to_page)

    def aws(self) -> tuple[str, str, Schema]:
        """`POST /`: AWS JSON 1.1 for the operations the AWS face answers, bodies from
        botocore's Transfer model (the same model the upstream client speaks)."""
        model = _transfer_model()
        inputs, outputs = [], []
        for name in AwsApi.OPERATIONS:
            op = model.operation_model(name)
            inputs.append(shape_schema(op.input_shape, self.schemas, "aws.transfer.", closed=False))
            if op.output_shape is None:
                # No output shape: AWS answers `{}`.
                self.schemas[f"aws.transfer.{name}Response"] = {
                    "type": "object",
                    "additionalProperties": False,
                }
                outputs.append(ref(f"aws.transfer.{name}Response"))
            else:
                outputs.append(shape_schema(op.output_shape, self.schemas, "aws.transfer."))
        self.schemas["aws.Error"] = {
            "type": "object",
            "description": "An AWS error: `__type` (the code, e.g. ResourceNotFoundException,"
            " ValidationException, ThrottlingException) and `Message`, with the code's own"
            " fields (Resource, ResourceType, RetryAfterSeconds).",
            "required": ["__type", "Message"],
            "properties": {"__type": {"type": "string"}, "Message": {"type": "string"}},
            "additionalProperties": {"type": "string"},
        }
        aws_headers = {
            **_request_id(),
            "x-amzn-RequestId": {"required": True, "schema": {"type": "string"}},
        }
        responses: Schema = {
            "200": {
                "description": "What AWS answers (StopServer and StartServer: `{}` once"
                " accepted; the server goes on stopping or starting).",
                "headers": aws_headers,
                "content": {AWS_JSON: {"schema": {"anyOf": outputs}}},
            }
        }
        for status, when in (
            (
                400,
                "every client error, as AWS JSON 1.1 answers them (an unknown server,"
                " a bad field, a refused signature, throttling)",
            ),
            (401, "more than one Authorization value"),
            (403, "no credentials (MissingAuthenticationTokenException)"),
            (408, "the body was too slow (RequestTimeoutException)"),
            (413, "the body was too large (SerializationException)"),
            (500, "AWS or the gateway failed"),
        ):
            responses[str(status)] = {
                "description": f"An AWS error: {when}.",
                "headers": aws_headers,
                "content": {AWS_JSON: {"schema": ref("aws.Error")}},
            }
        responses["503"] = self._error(503)
        targets = [f"{TARGET_PREFIX}.{name}" for name in AwsApi.OPERATIONS]
        security: list[Schema] = (
            [{"sigv4": []}, {"bearer": []}, {"mutualTLS": []}]
            if self.auth_on
            else [{}, {"sigv4": []}]
        )
        return (
            "/",
            "post",
            {
                "operationId": "AwsJson11",
                "summary": "AWS-compatible Transfer Family endpoint (AWS JSON 1.1): AWS tools"
                " and SDKs with --endpoint-url.",
                "parameters": [
                    {
                        "name": "X-Amz-Target",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string", "enum": targets},
                    },
                    ref_parameter("RequestId"),
                ],
                "requestBody": {
                    "required": False,
                    "description": "The operation's input; empty reads as `{}`.",
                    # The face reads the body as JSON whatever its type; the SDKs send
                    # AWS JSON 1.1's own.
                    "content": {
                        AWS_JSON: {"schema": {"anyOf": inputs}},
                        JSON: {"schema": {"anyOf": inputs}},
                    },
                },
                "responses": responses,
                "security": security,
            },
        )

    def security_schemes(self) -> Schema:
        return {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A caller's token (auth.callers[].token_sha256 holds its"
                " SHA-256); docs/security.md.",
            },
            "mutualTLS": {
                "type": "mutualTLS",
                "description": "A client certificate (tls.client_ca_file) whose subject CN is"
                " a caller's name.",
            },
            "sigv4": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "AWS Signature Version 4 (`AWS4-HMAC-SHA256 Credential=...`,"
                " service `transfer`), with a key the gateway issued"
                " (auth.callers[].aws_keys); X-Amz-Date, Host and X-Amz-Target signed. With"
                " auth off it is read for its account (key id) and region, not verified.",
            },
        }


def openapi_document(
    core: CoreSettings | None = None, auth: AuthSettings | None = None
) -> dict[str, Any]:
    """The OpenAPI document of the HTTP face as this gateway serves it (its regions, whether
    auth is on), derived anew (the face keeps the one it made)."""
    doc = _Document(core or CoreSettings(), auth)
    paths: dict[str, dict[str, Schema]] = {}
    routes = [doc.rpc(m) for m in SERVICE.methods]
    routes += [doc.aws(), *doc.probes(), *doc.ui()]
    for path, verb, operation in routes:
        paths.setdefault(path, {})[verb] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "transfer-gateway HTTP API",
            "version": "v1",
            "description": "Stop, start and watch AWS Transfer Family servers under a"
            " per-account budget. Derived from protos/transfer_gateway/v1/gateway.proto"
            " (google.api.http annotations) by gateway/faces/openapi.py; docs/http.md.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(doc.schemas.items())),
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "responses": dict(sorted(doc.responses.items())),
            "securitySchemes": doc.security_schemes(),
        },
    }


_PARAMETERS: Final[Schema] = {
    "GrpcTimeout": {
        "name": GRPC_TIMEOUT_HEADER,
        "in": "header",
        "required": False,
        "description": "Deadline in gRPC's format: 1-8 digits and a unit (H, M, S, m, u, n),"
        " e.g. `30S`. Without it: budget.max_wait_seconds and watch.max_watch_seconds.",
        "schema": {"type": "string", "pattern": f"^{GRPC_TIMEOUT.pattern}$"},
    },
    "LastEventId": {
        "name": LAST_EVENT_ID,
        "in": "header",
        "required": False,
        "description": "SSE only: the `id` of the last event had, to resume the watch after it"
        " (docs/http.md); only ids of this server's stream (another is a 400 naming it).",
        "schema": {"type": "string", "pattern": f"^{ID_RE.pattern}$"},
    },
    "JobLastEventId": {
        "name": LAST_EVENT_ID,
        "in": "header",
        "required": False,
        "description": "SSE only: the `id` of the last event had, to resume the watch after it"
        " (docs/jobs.md); only ids of this job's stream (another is a 400 naming it).",
        "schema": {"type": "string", "pattern": f"^{JOB_ID_RE.pattern}$"},
    },
    "RequestId": {
        "name": REQUEST_ID_HEADER,
        "in": "header",
        "required": False,
        "description": "The call's id in the logs, echoed back when it is 1-128 of"
        " `A-Za-z0-9._:/+=@-`; any other value (or two) is replaced by a new id, not refused.",
        "schema": {"type": "string"},
    },
}


def ref_parameter(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


_HEADERS: Final[Schema] = {
    "RequestId": {
        "required": True,
        "description": "The request's id (the caller's when sane, else a new one).",
        "schema": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"},
    },
    # The connection cap's refusal (gateway.faces.connections) is written before any request
    # is read, so it has no id.
    "RequestIdIfRead": {
        "required": False,
        "description": "The request's id, when the request was read.",
        "schema": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"},
    },
}


def _request_id(*, required: bool = True) -> dict[str, Any]:
    name = "RequestId" if required else "RequestIdIfRead"
    return {REQUEST_ID_HEADER: {"$ref": f"#/components/headers/{name}"}}


def _json_answer(description: str, schema: Schema) -> Schema:
    content = {JSON: {"schema": schema}}
    return {"description": description, "headers": _request_id(), "content": content}


def _comment(method: MethodDescriptor) -> str:
    """Where the RPC's own comment is (generated code keeps no source comments)."""
    return f"{method.full_name}: see its comment in protos/transfer_gateway/v1/gateway.proto."


def _summary(method: MethodDescriptor) -> str:
    """ "The StopServer RPC over HTTP: a stream of ServerStateUpdate." and so on."""
    answer = ("a stream of " if method.server_streaming else "") + method.output_type.name
    return f"The {method.name} RPC over HTTP: {answer}."


@functools.cache
def _transfer_model() -> Any:
    """botocore's Transfer service model (read once)."""
    return botocore.session.get_session().get_service_model("transfer")


__all__ = [
    "GRPC_TIMEOUT",
    "GRPC_TIMEOUT_HEADER",
    "NDJSON",
    "OPENAPI_VERSION",
    "SERVICE",
    "SSE",
    "http_rule",
    "openapi_document",
]

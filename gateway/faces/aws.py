"""The AWS-compatible face: `POST /` in AWS JSON 1.1, so AWS SDKs and the CLI use the gateway."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway import awsjson as protocol
from gateway.awsjson import AwsError
from gateway.core.operation import START, STOP, Operation
from gateway.core.operations import Core
from gateway.domain import Stage
from gateway.errors import AWS_CODES, ErrorKind, GatewayError, UpstreamError
from gateway.faces import sigv4
from gateway.faces.auth import ANONYMOUS, TWO_AUTHORIZATIONS, Access, Caller, peer_common_name
from gateway.faces.bodies import BodyError, BodyProblem, read_body
from gateway.faces.call import Admitted, Ask, Call, Calls
from gateway.faces.request_ids import of_request as request_id_of
from gateway.limiting.callers import CallerLimits
from gateway.observability import Metrics

#: Transfer's inputs are a few short fields; aiohttp's own default limit, and the emulator's.
MAX_BODY_BYTES = 1024 * 1024

#: The first AWS code the error table maps to each kind, read backwards: what AWS itself would
#: have said for that situation. Kinds with no AWS code of their own fall back on their status.
_AWS_CODE_OF: dict[ErrorKind, str] = {}
for _code, _kind in AWS_CODES.items():
    _AWS_CODE_OF.setdefault(_kind, _code)


def is_aws_request(request: web.Request) -> bool:
    """A request for the AWS-compatible endpoint (`POST /`), which authenticates by itself."""
    return request.method == "POST" and request.path == "/"


#: An AWS operation's work once the call is admitted: (the answer's payload, its request id).
_Handler = Callable[[Call, Admitted, dict[str, Any]], Awaitable[tuple[dict[str, Any], str]]]


#: AWS's codes for a request whose credentials are refused, and the call outcome they count as.
_AUTH_OUTCOMES = {
    "MissingAuthenticationTokenException": "UNAUTHENTICATED",
    "IncompleteSignatureException": "UNAUTHENTICATED",
    "UnrecognizedClientException": "UNAUTHENTICATED",
    "InvalidSignatureException": "UNAUTHENTICATED",
}


class AwsApi:
    """Answers StopServer, StartServer, DescribeServer and ListServers through the call
    wrapper and the core (budget, single flight, watchers, the one retry policy). The caller's
    signature is never forwarded: upstream calls use the gateway's own credentials.

    Who calls (auth on): a SigV4 signature made with a key the gateway issued (verified by
    `sigv4.Verifier`; the key names the caller and its one account), a client certificate
    (mutual TLS), or a bearer token; refusals are AWS-shaped. With auth off the signature is
    read for its access key id (the account) and scope (the region) only."""

    OPERATIONS = ("StopServer", "StartServer", "DescribeServer", "ListServers")

    def __init__(
        self,
        core: Core,
        metrics: Metrics,
        *,
        access_keys: Mapping[str, str],
        emulator_mode: bool,
        max_wait_seconds: float,
        access: Access | None = None,
        verifier: sigv4.Verifier | None = None,
        body_timeout_seconds: float | None = None,
        limits: CallerLimits | None = None,
    ) -> None:
        #: How long a request body may take to arrive (None: as long as it likes).
        self._body_timeout = body_timeout_seconds
        self._core = core
        self._calls = Calls("aws", core, metrics, access, limits=limits)
        self._access_keys = dict(access_keys)
        self._emulator_mode = emulator_mode
        self._max_wait = max_wait_seconds
        self._access = access
        self._verifier = verifier or sigv4.Verifier((), lambda: 0.0)
        self._handlers: dict[str, _Handler] = {
            "StopServer": self._stop_server,
            "StartServer": self._start_server,
            "DescribeServer": self._describe_server,
            "ListServers": self._list_servers,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        target_header = request.headers.get("X-Amz-Target", "")
        prefix, _, name = target_header.partition(".")
        handler = self._handlers.get(name) if prefix == protocol.TARGET_PREFIX else None
        server_id = ""
        # Not a stream: AWS answers once, so the call is not an open stream in the metrics.
        async with self._calls.open(
            name if handler else "unknown", streaming=False, request_id=request_id_of(request)
        ) as call:
            try:
                raw = await self._read(request)
                _note_server(call, raw)
                # Who calls comes first: a refused caller learns nothing, not even the
                # operations. The signature names the caller, its account and region at once.
                caller, account, region = self._identify(request, raw)
                call.fields["caller"] = caller.name
                if handler is None:
                    raise protocol.unknown_operation(target_header)
                body = protocol.parse_body(raw)
                # AWS's own wording for a bad ServerId, before the gateway's checks.
                server_id = protocol.server_id_of(body) if name != "ListServers" else ""
                admitted = await call.admit(
                    Ask(server_id or None, account, region),
                    who=lambda access: caller,
                    timeout=self._timeout,
                )
                payload, request_id = await handler(call, admitted, body)
                return protocol.ok_response(payload, request_id or protocol.new_request_id())
            except AwsError as exc:
                # Refused in AWS's own terms (credentials, unknown operation, bad body).
                call.decide(
                    _AUTH_OUTCOMES.get(exc.code)
                    or ("INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL")
                )
                return protocol.error_response(exc, protocol.new_request_id())
            except Exception as exc:
                error, request_id = aws_error_for(call.failed(exc), server_id)
                return protocol.error_response(error, request_id or protocol.new_request_id())

    def _timeout(self) -> float:
        """AWS callers send no deadline the gateway can see: aws_max_wait_seconds bounds the
        budget wait and the call (the SDKs time out and retry on their own)."""
        return self._max_wait

    async def _read(self, request: web.Request) -> bytes:
        """The body within MAX_BODY_BYTES and the body timeout, refused in AWS's words."""
        try:
            return await read_body(request, max_bytes=MAX_BODY_BYTES, seconds=self._body_timeout)
        except BodyError as exc:
            raise aws_body_error(exc) from None

    # -- identity -------------------------------------------------------------------------------
    def _identify(self, request: web.Request, body: bytes) -> tuple[Caller, str, str]:
        """(caller, account, region) of a request, or the AwsError AWS would answer."""
        values = request.headers.getall("Authorization", [])
        if len(values) > 1:
            # Auth on or off: which one counts would be a guess (docs/security.md). 401, not
            # AWS's 400: this is the gateway's own rule, answered alike on every face.
            raise AwsError("IncompleteSignatureException", TWO_AUTHORIZATIONS, 401)
        authorization = values[0] if values else None
        access = self._access
        if access is None or not access.enabled:
            account, region = self._unverified(authorization)
            return ANONYMOUS, account, region
        cn = peer_common_name(request)
        by_certificate = self._certificate_caller(access, cn)
        if authorization is not None and sigv4.is_sigv4(authorization):
            parsed = sigv4.parse_authorization(authorization)
            if (
                by_certificate is not None
                and access.settings.mtls_sigv4 == "scope_only"
                and not self._has_keys(by_certificate.name)
            ):
                # The certificate says who calls; the header only says where.
                return by_certificate, self._account_of_key(parsed.access_key_id), parsed.region
            received = sigv4.Received(
                request.method, request.raw_path, list(request.headers.items()), body
            )
            verified = self._verifier.verify(received, parsed)
            if by_certificate is not None and verified.key.caller != by_certificate.name:
                raise sigv4.unrecognized(
                    "The access key and the client certificate belong to different callers."
                )
            caller = access.caller_named(verified.key.caller, "sigv4")
            return caller, verified.key.account, verified.region
        # A bearer token, a client certificate alone, or nothing.
        try:
            caller = access.authenticate(authorization, cn)
        except GatewayError:
            if authorization:
                if authorization[:7].lower() == "bearer ":
                    raise sigv4.unrecognized() from None
                raise sigv4.incomplete(
                    "Authorization header requires 'Credential' parameter. Authorization header"
                    " requires 'Signature' parameter. Authorization header requires"
                    " 'SignedHeaders' parameter."
                ) from None
            if cn is not None:
                raise sigv4.unrecognized(
                    "The client certificate names no caller of this gateway."
                ) from None
            raise sigv4.missing_token() from None
        settings = self._core.settings
        return caller, settings.default_account, settings.default_region

    def _certificate_caller(self, access: Access, cn: str | None) -> Caller | None:
        if cn is None:
            return None
        try:
            return access.authenticate(None, cn)
        except GatewayError:
            return None  # not a caller's name (or mutual TLS off): the certificate says nothing

    def _has_keys(self, caller_name: str) -> bool:
        return any(self._verifier.keys_of(caller_name))

    def _account_of_key(self, key_id: str) -> str:
        """The account an unverified access key id stands for: `access_keys`, else a 12-digit
        key id is the account."""
        account = self._access_keys.get(key_id) or protocol.account_of_key(key_id)
        if account is None:
            raise sigv4.unrecognized(
                "The access key id names no account (list it in access_keys or use the"
                " 12-digit account as the key id)."
            )
        return account

    def _unverified(self, authorization: str | None) -> tuple[str, str]:
        """(account, region) with auth off: the account from the access key id, the region
        from the scope; the signature is not checked (nobody was issued a key)."""
        credential = protocol.credential_of(authorization)
        if credential is None:
            if self._emulator_mode:
                return self._core.settings.default_account, self._core.settings.default_region
            raise sigv4.missing_token()
        key_id, region = credential
        account = self._access_keys.get(key_id)
        if account is None and self._emulator_mode:
            account = protocol.account_of_key(key_id) or self._core.settings.default_account
        if account is None:
            raise sigv4.unrecognized()
        return account, region

    # -- operations: translation only, the work is the core's -----------------------------------
    async def _stop_server(
        self, call: Call, admitted: Admitted, body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        return await self._change(call, STOP, admitted)

    async def _start_server(
        self, call: Call, admitted: Admitted, body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        return await self._change(call, START, admitted)

    async def _change(
        self, call: Call, operation: Operation, admitted: Admitted
    ) -> tuple[dict[str, Any], str]:
        # AWS answers StopServer (StartServer) once it is accepted, not when the server is
        # OFFLINE (ONLINE): so does this, at the core's first update past the budget queue.
        # Leaving the stream early costs nothing: other callers of the same flight keep it,
        # and the server changes either way.
        async for update in call.updates(operation, admitted):
            if update.stage is not Stage.WAITING_FOR_BUDGET:
                return {}, update.aws_request_id
        raise GatewayError(ErrorKind.INTERNAL, f"the {operation.verb} ended without an update")

    async def _describe_server(
        self, call: Call, admitted: Admitted, body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        assert admitted.target is not None  # DescribeServer names its server
        reply = call.replied(
            await self._core.describe_server(admitted.target, deadline=admitted.deadline)
        )
        return _json(reply.payload), reply.aws_request_id

    async def _list_servers(
        self, call: Call, admitted: Admitted, body: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        limit, token = protocol.paging_of(body, 1000)
        reply = call.replied(
            await self._core.list_servers(
                admitted.key,
                max_results=limit if "MaxResults" in body else None,
                next_token=token,
                deadline=admitted.deadline,
            )
        )
        return _json(reply.payload), reply.aws_request_id


def _note_server(call: Call, raw: bytes) -> None:
    """The body's ServerId in the call's log fields at once, so that a refusal before the
    call is admitted (401: who calls comes first) still says which server was asked for."""
    try:
        body = protocol.parse_body(raw)
    except AwsError:
        return
    server = body.get("ServerId")
    if isinstance(server, str):
        call.fields["server"] = server[:40] or None


def _json(payload: dict[str, Any]) -> dict[str, Any]:
    # botocore parsed timestamps into datetimes; JSON 1.1 sends epoch seconds.
    out: dict[str, Any] = json.loads(json.dumps(payload, default=_epoch_seconds))
    return out


def _epoch_seconds(value: object) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    raise TypeError(f"cannot encode {type(value).__name__}")


def aws_body_error(error: BodyError) -> AwsError:
    """A body that could not be had, as AWS words it: 413 SerializationException when too
    large (as the emulator, and aiohttp's own limit, answer), 408 RequestTimeoutException
    when too slow (the SDKs retry that code), 400 SerializationException when not JSON."""
    if error.problem is BodyProblem.TOO_LARGE:
        return AwsError("SerializationException", f"Request body too large: {error.message}", 413)
    if error.problem is BodyProblem.TOO_SLOW:
        return AwsError("RequestTimeoutException", error.message, 408)
    return protocol.serialization_error(f"Malformed request body: {error.message}")


def aws_error_for(error: GatewayError, server_id: str = "") -> tuple[AwsError, str]:
    """Our error as AWS would have worded it, and the AWS request id when AWS gave one."""
    request_id = error.aws_request_id if isinstance(error, UpstreamError) else ""
    status = error.kind.http_status
    if status == 429 or error.kind is ErrorKind.DEADLINE_EXCEEDED:
        # No budget within the wait: the SDKs know to back off and retry on this one.
        seconds = error.retry_after if error.retry_after is not None else 1.0
        return protocol.throttling(max(1, math.ceil(seconds))), request_id
    if error.kind is ErrorKind.SERVER_NOT_FOUND:
        server_id = server_id or error.metadata.get("server_id", "")
        not_found = AwsError(
            "ResourceNotFoundException",
            error.message,
            fields={"Resource": server_id, "ResourceType": "Server"} if server_id else {},
        )
        return not_found, request_id
    code = (error.aws_code if isinstance(error, UpstreamError) else "") or _AWS_CODE_OF.get(
        error.kind, ""
    )
    if not code:
        if status in (401, 403, 404):
            code = "AccessDeniedException"
        elif status in (503, 504):
            code = "ServiceUnavailableException"
        elif status < 500:
            code = "InvalidRequestException"
        else:
            code = "InternalServiceError"
    return AwsError(code, error.message, 500 if status >= 500 else 400), request_id

"""The gateway's errors and the ONE table mapping each to a gRPC code, HTTP status and reason.

Hierarchy::

    GatewayError                 every expected failure; carries an ErrorKind row of the table
    ├── InvalidArgument          bad request fields (with field violations)
    ├── BudgetExhausted          the budget wait cannot fit (with retry_after)
    └── UpstreamError            an AWS answer or a network failure, after our retries

Anything else raised inside the gateway is a bug: transports log it and answer INTERNAL.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from grpc import StatusCode

#: google.rpc.ErrorInfo.domain for every error the gateway raises.
ERROR_DOMAIN = "transfer-gateway"


@dataclass(frozen=True)
class _Row:
    grpc_code: StatusCode
    http_status: int
    reason: str


class ErrorKind(enum.Enum):
    """One row per situation of the error table (docs/errors.md)."""

    INVALID_ARGUMENT = _Row(StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT")
    UNAUTHENTICATED = _Row(StatusCode.UNAUTHENTICATED, 401, "UNAUTHENTICATED")
    PERMISSION_DENIED = _Row(StatusCode.PERMISSION_DENIED, 403, "PERMISSION_DENIED")
    ACCOUNT_NOT_CONFIGURED = _Row(StatusCode.NOT_FOUND, 404, "ACCOUNT_NOT_CONFIGURED")
    SERVER_NOT_FOUND = _Row(StatusCode.NOT_FOUND, 404, "SERVER_NOT_FOUND")
    JOB_NOT_FOUND = _Row(StatusCode.NOT_FOUND, 404, "JOB_NOT_FOUND")
    STATE_CONFLICT = _Row(StatusCode.FAILED_PRECONDITION, 400, "STATE_CONFLICT")
    BUDGET_EXHAUSTED = _Row(StatusCode.RESOURCE_EXHAUSTED, 429, "BUDGET_EXHAUSTED")
    TOO_MANY_PAIRS = _Row(StatusCode.RESOURCE_EXHAUSTED, 429, "TOO_MANY_PAIRS")
    CALLER_LIMITED = _Row(StatusCode.RESOURCE_EXHAUSTED, 429, "CALLER_LIMITED")
    UPSTREAM_THROTTLED = _Row(StatusCode.RESOURCE_EXHAUSTED, 429, "UPSTREAM_THROTTLED")
    UPSTREAM_UNAVAILABLE = _Row(StatusCode.UNAVAILABLE, 503, "UPSTREAM_UNAVAILABLE")
    UPSTREAM_INTERNAL = _Row(StatusCode.INTERNAL, 500, "UPSTREAM_INTERNAL")
    UPSTREAM_ACCESS_DENIED = _Row(StatusCode.PERMISSION_DENIED, 403, "UPSTREAM_ACCESS_DENIED")
    UPSTREAM_REJECTED = _Row(StatusCode.FAILED_PRECONDITION, 400, "UPSTREAM_REJECTED")
    OPERATION_IN_FLIGHT = _Row(StatusCode.FAILED_PRECONDITION, 400, "OPERATION_IN_FLIGHT")
    STOP_FAILED = _Row(StatusCode.ABORTED, 409, "STOP_FAILED")
    START_FAILED = _Row(StatusCode.ABORTED, 409, "START_FAILED")
    JOB_FAILED = _Row(StatusCode.ABORTED, 409, "JOB_FAILED")
    DEADLINE_EXCEEDED = _Row(StatusCode.DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED")
    SHUTTING_DOWN = _Row(StatusCode.UNAVAILABLE, 503, "SHUTTING_DOWN")
    #: HTTP only: the request body did not arrive within http_body_timeout_seconds.
    REQUEST_TIMEOUT = _Row(StatusCode.DEADLINE_EXCEEDED, 408, "REQUEST_TIMEOUT")
    #: HTTP only: http_max_connections are open, every one serving a request.
    TOO_MANY_CONNECTIONS = _Row(StatusCode.UNAVAILABLE, 503, "TOO_MANY_CONNECTIONS")
    #: HTTP only: no route has this path (grpc-gateway: NOT_FOUND, 404).
    ROUTE_NOT_FOUND = _Row(StatusCode.NOT_FOUND, 404, "ROUTE_NOT_FOUND")
    #: HTTP only: the path is routed, but not for this method (grpc-gateway answers
    #: UNIMPLEMENTED; the status stays HTTP's own 405, with Allow).
    METHOD_NOT_ALLOWED = _Row(StatusCode.UNIMPLEMENTED, 405, "METHOD_NOT_ALLOWED")
    #: HTTP only: the request could not be parsed as HTTP/1.1 (aiohttp refused it).
    MALFORMED_REQUEST = _Row(StatusCode.INVALID_ARGUMENT, 400, "MALFORMED_REQUEST")
    CANCELLED = _Row(StatusCode.CANCELLED, 499, "CANCELLED")
    INTERNAL = _Row(StatusCode.INTERNAL, 500, "INTERNAL")

    @property
    def grpc_code(self) -> StatusCode:
        return self.value.grpc_code

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def reason(self) -> str:
        return self.value.reason


#: AWS error codes (botocore's `Error.Code`) -> the row they become once our retries are spent.
#: It covers every error botocore's transfer model declares for the operations the gateway
#: calls (StopServer, StartServer, DescribeServer, ListServers: tests/upstream checks this with
#: botocore's loader), the credential and signature errors AWS answers before any operation,
#: ConflictException (other emulators' answer to a stop in the wrong state), and the throttling
#: codes botocore's own retry logic knows. A code not here is classed by its HTTP status
#: (see `kind_of_unknown`).
AWS_CODES: Mapping[str, ErrorKind] = {
    "ResourceNotFoundException": ErrorKind.SERVER_NOT_FOUND,
    "InvalidRequestException": ErrorKind.STATE_CONFLICT,
    "ConflictException": ErrorKind.STATE_CONFLICT,
    "ThrottlingException": ErrorKind.UPSTREAM_THROTTLED,
    "Throttling": ErrorKind.UPSTREAM_THROTTLED,
    "TooManyRequestsException": ErrorKind.UPSTREAM_THROTTLED,
    "RequestLimitExceeded": ErrorKind.UPSTREAM_THROTTLED,
    "ServiceUnavailableException": ErrorKind.UPSTREAM_UNAVAILABLE,
    "InternalServiceError": ErrorKind.UPSTREAM_INTERNAL,
    "AccessDeniedException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "AccessDenied": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "UnrecognizedClientException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "InvalidClientTokenId": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "ExpiredTokenException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "InvalidSignatureException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "SignatureDoesNotMatch": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "MissingAuthenticationTokenException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "IncompleteSignatureException": ErrorKind.UPSTREAM_ACCESS_DENIED,
    "ValidationException": ErrorKind.INVALID_ARGUMENT,
    # After ValidationException: the AWS face words our own INVALID_ARGUMENT as the first code.
    "InvalidNextTokenException": ErrorKind.INVALID_ARGUMENT,
}


def kind_of_unknown(http_status: int | None) -> ErrorKind:
    """The row of an AWS error code the table does not know, by the HTTP status AWS sent.

    A 4xx is AWS's answer about this request: asking again gets the same answer, so it is
    UPSTREAM_REJECTED and never retried (once it was UPSTREAM_INTERNAL, retried five times at
    five tokens). Only 429 (too many requests) and 401/403 (who we are) mean something without
    the code. A 503 is a passing outage; any other status, or none, is AWS failing (retried)."""
    if http_status is None:
        return ErrorKind.UPSTREAM_INTERNAL
    if http_status == 429:
        return ErrorKind.UPSTREAM_THROTTLED
    if http_status in (401, 403):
        return ErrorKind.UPSTREAM_ACCESS_DENIED
    if 400 <= http_status < 500:
        return ErrorKind.UPSTREAM_REJECTED
    if http_status == 503:
        return ErrorKind.UPSTREAM_UNAVAILABLE
    return ErrorKind.UPSTREAM_INTERNAL


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass
class GatewayError(Exception):
    """An expected failure with its row of the table and the details callers get."""

    kind: ErrorKind
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    #: Seconds after which a retry may succeed (google.rpc.RetryInfo, HTTP Retry-After).
    retry_after: float | None = None
    violations: Sequence[FieldViolation] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.kind.reason}: {self.message}"


class InvalidArgument(GatewayError):
    """The request names a bad field; nothing was spent on it."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(
            ErrorKind.INVALID_ARGUMENT,
            f"invalid field(s): {fields}",
            {"fields": fields},
            violations=tuple(violations),
        )


class BudgetExhausted(GatewayError):
    """The account's budget cannot be had within the caller's deadline or queue limit."""

    def __init__(self, message: str, retry_after: float, metadata: dict[str, str] | None = None):
        super().__init__(
            ErrorKind.BUDGET_EXHAUSTED, message, metadata or {}, retry_after=retry_after
        )


class UpstreamError(GatewayError):
    """AWS answered with an error (or could not be reached), after our retries."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        aws_code: str = "",
        aws_request_id: str = "",
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        meta = dict(metadata or {})
        if aws_code:
            meta["aws_code"] = aws_code
        if aws_request_id:
            meta["aws_request_id"] = aws_request_id
        super().__init__(kind, message, meta, retry_after=retry_after)
        self.aws_code = aws_code
        self.aws_request_id = aws_request_id


def from_aws(
    code: str,
    message: str,
    *,
    request_id: str = "",
    retry_after: float | None = None,
    http_status: int | None = None,
) -> UpstreamError:
    """An AWS error code as our error. A code the table does not know is classed by the HTTP
    status AWS answered with (`kind_of_unknown`); ErrorInfo still carries the AWS code (and
    the status) for the caller."""
    kind = AWS_CODES.get(code)
    metadata: dict[str, str] = {}
    if kind is None:
        kind = kind_of_unknown(http_status)
        if http_status is not None:
            metadata["aws_http_status"] = str(http_status)
    return UpstreamError(
        kind,
        message or code,
        aws_code=code,
        aws_request_id=request_id,
        retry_after=retry_after,
        metadata=metadata,
    )

"""AWS JSON 1.1 framing shared by the AWS face and the emulator: errors, bodies, identity."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway.config import DEFAULT_EMULATOR_ACCOUNT, DEFAULT_REGION
from gateway.names import SERVER_ID_LENGTH, SERVER_ID_PATTERN, is_account_id, is_server_id

TARGET_PREFIX: Final = "TransferService"
CONTENT_TYPE: Final = "application/x-amz-json-1.1"

MAX_RESULTS_RANGE: Final = (1, 1000)
NEXT_TOKEN_LENGTH: Final = (1, 6144)

# `Credential=AKID/20261128/us-east-1/transfer/aws4_request`: the key id and the scope's region.
_CREDENTIAL_RE: Final = re.compile(r"Credential=([^/,\s]+)/[^/,\s]*/([^/,\s]+)/")


class AwsError(Exception):
    """An AWS error answer: `{"__type": code, "Message": ..., **fields}` and its HTTP status."""

    def __init__(
        self, code: str, message: str, status: int = 400, fields: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.fields: Mapping[str, str] = fields or {}

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "Message": self.message, **self.fields}


def resource_not_found(server_id: str) -> AwsError:
    """What AWS answers for a server that does not exist in the caller's account and region."""
    return AwsError(
        "ResourceNotFoundException",
        f"Unknown server: {server_id}",
        fields={"Resource": server_id, "ResourceType": "Server"},
    )


def invalid_request(message: str) -> AwsError:
    return AwsError("InvalidRequestException", message)


def invalid_next_token() -> AwsError:
    return AwsError("InvalidNextTokenException", "The NextToken is not valid for this request")


def throttling(retry_after_seconds: int) -> AwsError:
    # The model types RetryAfterSeconds as a string, so it goes on the wire as one.
    return AwsError(
        "ThrottlingException",
        "Rate exceeded",
        fields={"RetryAfterSeconds": str(retry_after_seconds)},
    )


def internal_service_error() -> AwsError:
    return AwsError("InternalServiceError", "An internal error occurred (emulated fault)", 500)


def service_unavailable() -> AwsError:
    return AwsError(
        "ServiceUnavailableException", "The service is unavailable (emulated fault)", 500
    )


def unknown_operation(target: str) -> AwsError:
    return AwsError("UnknownOperationException", f"Unknown operation: {target or '(none)'}")


def serialization_error(message: str) -> AwsError:
    return AwsError("SerializationException", message)


class Violations:
    """Collects field violations and raises one ValidationException worded the way AWS words it."""

    def __init__(self) -> None:
        self._items: list[str] = []

    def add(self, field: str, value: object, constraint: str) -> None:
        # AWS names the member in lowerCamelCase and quotes the offending value.
        shown = "null" if value is None else f"'{value}'"
        name = field[:1].lower() + field[1:]
        self._items.append(
            f"Value {shown} at '{name}' failed to satisfy constraint: Member {constraint}"
        )

    def has_any(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        n = len(self._items)
        noun = "error" if n == 1 else "errors"
        raise AwsError(
            "ValidationException", f"{n} validation {noun} detected: " + "; ".join(self._items)
        )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object; an empty body (curl, not botocore) reads as an empty input."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        # `[[[[...` a few KB deep overflows json's recursion: bad input, not a server error.
        raise serialization_error("Malformed JSON request body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise serialization_error(f"Malformed JSON request body: {exc}") from exc
    if not isinstance(body, dict):
        raise serialization_error("The request body must be a JSON object")
    return body


def server_id_of(body: Mapping[str, Any]) -> str:
    """`ServerId`, required, checked against botocore's model (length 19 and the pattern)."""
    value = body.get("ServerId")
    if isinstance(value, str) and is_server_id(value):
        return value
    problems = Violations()
    if value is None:
        problems.add("ServerId", None, "must not be null")
    elif not isinstance(value, str):
        problems.add("ServerId", value, "must be a string")
    else:
        # AWS reports every broken constraint of the member, so a short id gets two.
        if len(value) < SERVER_ID_LENGTH:
            problems.add(
                "ServerId", value, f"must have length greater than or equal to {SERVER_ID_LENGTH}"
            )
        elif len(value) > SERVER_ID_LENGTH:
            problems.add(
                "ServerId", value, f"must have length less than or equal to {SERVER_ID_LENGTH}"
            )
        problems.add(
            "ServerId", value, f"must satisfy regular expression pattern: {SERVER_ID_PATTERN}"
        )
    problems.raise_if_any()
    raise AssertionError("unreachable: an invalid ServerId always has a violation")


def paging_of(body: Mapping[str, Any], default_limit: int) -> tuple[int, str | None]:
    """`MaxResults` (1..1000) and `NextToken` (1..6144 characters), both optional."""
    problems = Violations()
    limit = body.get("MaxResults")
    token = body.get("NextToken")
    low, high = MAX_RESULTS_RANGE
    if limit is not None:
        # bool is an int in Python, not in JSON's model of an integer.
        if isinstance(limit, bool) or not isinstance(limit, int):
            problems.add("MaxResults", limit, "must be an integer")
        elif limit < low:
            problems.add("MaxResults", limit, f"must have value greater than or equal to {low}")
        elif limit > high:
            problems.add("MaxResults", limit, f"must have value less than or equal to {high}")
    if token is not None:
        tlow, thigh = NEXT_TOKEN_LENGTH
        if not isinstance(token, str):
            problems.add("NextToken", token, "must be a string")
        elif len(token) < tlow:
            problems.add("NextToken", token, f"must have length greater than or equal to {tlow}")
        elif len(token) > thigh:
            problems.add("NextToken", token, f"must have length less than or equal to {thigh}")
    problems.raise_if_any()
    return (default_limit if limit is None else limit), token


def caller_of(authorization: str | None) -> tuple[str, str]:
    """(account, region) from a SigV4 credential; signatures are not verified.

    An access key id of exactly 12 digits is taken as the account, so tests and load generators can
    act as many accounts with nothing but a key id; any other key is the default account.
    """
    credential = credential_of(authorization)
    if credential is None:
        return DEFAULT_EMULATOR_ACCOUNT, DEFAULT_REGION
    key_id, region = credential
    return account_of_key(key_id) or DEFAULT_EMULATOR_ACCOUNT, region


def credential_of(authorization: str | None) -> tuple[str, str] | None:
    """(access key id, region) of a SigV4 `Authorization` header's credential scope, or None."""
    if not authorization:
        return None
    match = _CREDENTIAL_RE.search(authorization)
    if match is None:
        return None
    key_id, region = match.groups()
    return key_id, region


def account_of_key(key_id: str) -> str | None:
    """The account an access key id names by the 12-digit convention, or None."""
    return key_id if is_account_id(key_id) else None


def new_request_id() -> str:
    return str(uuid.uuid4())


def _headers(request_id: str) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id}


def ok_response(payload: Mapping[str, Any], request_id: str) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), headers=_headers(request_id))


def error_response(error: AwsError, request_id: str) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        headers=_headers(request_id),
    )

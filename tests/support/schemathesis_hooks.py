"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks): the gateway's media
types that schemathesis does not read by itself, so their bodies are checked too, and the one
check the gateway's state rules need."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

# AWS JSON 1.1 is JSON (the AWS face reads any body as JSON; the SDKs send this type).
schemathesis.serializer.alias("application/x-amz-json-1.1", "application/json")


@schemathesis.deserializer("application/x-amz-json-1.1")
def _aws_json(ctx: Any, response: Any) -> Any:
    return json.loads(response.content)


@schemathesis.deserializer("application/x-ndjson")
def _ndjson(ctx: Any, response: Any) -> list[Any]:
    """The stream as the array of its lines (OpenAPI 3.2: a sequential media type's `schema`
    describes the whole sequence as an array)."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


#: google.rpc.Code FAILED_PRECONDITION: a rule about the server's state.
_FAILED_PRECONDITION = 9
#: The job watch: it resumes from Last-Event-ID too (a job has no state rule to refuse for).
_JOB_WATCH = "/v1/jobs/{jobId}:watch"


@schemathesis.check
def refused_only_for_state(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance for the server routes and the job watch, which allow 400
    (tests/support/schemathesis.toml): a schema-valid request refused with 400 is refused for
    the server's state (FAILED_PRECONDITION: OPERATION_IN_FLIGHT, STATE_CONFLICT,
    UPSTREAM_REJECTED; server routes only) or for a Last-Event-ID of another stream, which no
    schema can express, never for another field."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    path = str(case.operation.path)
    server = path.startswith("/v1/servers/")
    if not server and path != _JOB_WATCH:
        return None
    status = json.loads(response.content)
    if (server and status.get("code") == _FAILED_PRECONDITION) or _only_last_event_id(status):
        return True
    raise AssertionError(f"a schema-valid request was refused: {status}")


def _only_last_event_id(status: dict[str, Any]) -> bool:
    """Every bad field is Last-Event-ID: whether an id resumes this stream depends on the
    server it names and the states the stream has sent, which no schema can say."""
    fields = [
        violation.get("field")
        for detail in status.get("details", [])
        if detail.get("@type", "").endswith("google.rpc.BadRequest")
        for violation in detail.get("fieldViolations", [])
    ]
    return bool(fields) and set(fields) == {"Last-Event-ID"}

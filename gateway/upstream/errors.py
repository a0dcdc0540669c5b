"""The one translation of botocore's ClientError into the gateway's UpstreamError (any service)."""

from __future__ import annotations

import contextlib
from typing import Any

from botocore.exceptions import ClientError

from gateway.errors import UpstreamError, from_aws


def from_client_error(exc: ClientError, *, action: str = "") -> UpstreamError:
    """AWS's answer as ours, through the one table (gateway.errors.from_aws): the code, AWS's
    message (prefixed with `action`, e.g. "AssumeRole arn:...", when given), the request id,
    RetryAfterSeconds and the HTTP status (which classes a code the table does not know).
    Only what AWS answered: never the request's parameters, which may hold secrets."""
    response: dict[str, Any] = exc.response
    error = response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "") or "")
    if action:
        message = f"{action}: {message or code}"
    metadata = response.get("ResponseMetadata", {})
    request_id = str(metadata.get("RequestId", ""))
    status = metadata.get("HTTPStatusCode")
    # botocore puts a modeled error's members at the top of the response.
    raw_retry = response.get("RetryAfterSeconds", error.get("RetryAfterSeconds"))
    retry_after: float | None = None
    if raw_retry is not None:
        with contextlib.suppress(TypeError, ValueError):
            retry_after = max(0.0, float(raw_retry))
    return from_aws(
        code,
        message,
        request_id=request_id,
        retry_after=retry_after,
        # An unknown code is classed by its status: a 4xx is an answer, not a failure.
        http_status=status if isinstance(status, int) else None,
    )


__all__ = ["from_client_error"]

"""Request bodies on the HTTP listener: read within a size and a time bound, parsed as JSON
without crashing on deep nesting; each face renders a BodyError in its own error shape."""

from __future__ import annotations

import asyncio
import enum
import json
from typing import Any

from aiohttp import web


class BodyProblem(enum.Enum):
    """Why a body could not be had."""

    TOO_LARGE = "too_large"
    TOO_SLOW = "too_slow"
    MALFORMED = "malformed"


class BodyError(Exception):
    """A body the gateway will not read or cannot parse; `problem` says which case."""

    def __init__(self, problem: BodyProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


async def read_body(request: web.Request, *, max_bytes: int, seconds: float | None) -> bytes:
    """The whole body, at most `max_bytes`, all of it within `seconds` (None: no bound).

    A Content-Length over the cap is refused before a byte is read; a chunked body is read to
    its end but never past the cap. The time bound covers a body that never ends and a
    Content-Length larger than what is sent: without it either holds the connection (and its
    handler) for as long as the client likes."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyError(BodyProblem.TOO_LARGE, f"the body must be at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise BodyError(
                        BodyProblem.TOO_LARGE, f"the body must be at most {max_bytes} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(
            BodyProblem.TOO_SLOW, f"the body did not arrive within {seconds:g} s"
        ) from None
    except web.RequestPayloadError as exc:  # e.g. broken chunked framing
        raise BodyError(BodyProblem.MALFORMED, f"the body is not valid HTTP: {exc}") from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """`raw` as JSON. Nesting deeper than the interpreter's recursion limit (`[[[[...`, a few
    KB) raises RecursionError inside json; that is malformed input here, not a bug."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise BodyError(BodyProblem.MALFORMED, "the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(BodyProblem.MALFORMED, f"the body is not JSON: {exc}") from None


__all__ = ["BodyError", "BodyProblem", "parse_json", "read_body"]

"""Request ids: one per call, the caller's `x-request-id` when it is sane, else a new one;
logged on call.start and call.end and echoed back (gRPC initial metadata, HTTP header)."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

#: The header (gRPC metadata key) a request id travels in, both ways.
HEADER = "x-request-id"
#: What a caller's id may be: printable, no spaces or control characters (a NUL, a newline
#: would forge log lines), at most 128 characters (a 10 kB id must not make a 10 kB line).
PATTERN = r"[A-Za-z0-9._:/+=@-]{1,128}"
_SANE = re.compile(PATTERN)
_KEY = web.RequestKey("request_id", str)


def request_id(given: str | None) -> str:
    """The caller's id if it is sane, else a new one (32 hex digits). A bad id is replaced,
    not trimmed: half an id would match nothing in the caller's logs anyway."""
    if given is not None:
        given = given.strip()
        if _SANE.fullmatch(given):
            return given
    return uuid.uuid4().hex


def of_request(request: web.Request) -> str:
    """The request id of an HTTP request, decided once (the face's call and the response
    header agree). A request with two x-request-id values gets a new one."""
    known = request.get(_KEY)
    if known is None:
        values = request.headers.getall(HEADER, [])
        known = request_id(values[0] if len(values) == 1 else None)
        request[_KEY] = known
    return known


async def echo(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every HTTP answer, of any route or error, names its request id."""
    response.headers[HEADER] = of_request(request)

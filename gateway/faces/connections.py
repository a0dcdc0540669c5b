"""The HTTP listener's connections: how many may be open, and how long a request head may take.

aiohttp closes a keep-alive connection that stays idle (`keepalive_timeout`), but it accepts
connections without limit and gives a client all the time it likes to send a request's head
(the request line and headers): slow-loris clients, each dribbling a header line now and then,
used to hold their connections (and file descriptors) for as long as they liked, and 255 of
them took every descriptor the process had, so /healthz and gRPC health stopped answering.

So every accepted connection goes through a `ConnectionGuard` first (`GuardedSite` is the
listener that does it):
- a connection must deliver a complete request head within `header_timeout` of connecting,
  and, on a kept-alive connection, of the first byte of its next request; otherwise it is
  closed. The middleware tells the guard when a request's handler starts (its head is in) and
  ends;
- at most `max_connections` are open. At the cap a new connection pushes out the open one that
  has waited longest with no request in progress (idle, or still sending its head): a client
  whose request is being served is never pushed out, and a quick client (a probe) always gets
  in, so slow connections cannot starve it. Only when every open connection is serving a
  request is the new one refused: a ready-made 503 is written and the connection closed.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: (HTTP status, a one-line problem) -> the answer, e.g. a google.rpc.Status JSON response.
RenderError = Callable[[int, str], web.StreamResponse]


def answer_in_json(handler: RequestHandler, render: RenderError) -> None:
    """Make `handler` (aiohttp's, for one connection) answer a request it cannot parse (a
    NUL or control byte in a header, a bad Content-Length, a request line that is not HTTP)
    with `render`'s body rather than aiohttp's text/plain, like every other error.

    aiohttp's own answer and log line quote the bad header line whole, and that line may be
    a credential (`Authorization: Bearer <token>` with one stray byte), so a client's 4xx is
    logged here in one line without it; a 5xx (a bug) keeps aiohttp's log with its
    traceback. `handle_error` is aiohttp's hook for these answers; the handler (made by
    aiohttp's Server, with slots) becomes an instance of a subclass that overrides it."""
    handler.__class__ = _json_errors(render)


@functools.cache
def _json_errors(render: RenderError) -> type[RequestHandler]:
    class JsonErrors(RequestHandler):
        __slots__ = ()

        def handle_error(
            self,
            request: BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            if status >= 500 or request.writer.output_size > 0:
                # A bug: aiohttp logs it whole (and raises if bytes were sent already).
                super().handle_error(request, status, exc, message)
                problem = "internal error"
            else:
                # The first line names the problem; the next ones quote the bad bytes.
                first = (message or "").strip().split("\n", 1)[0]
                problem = first.rstrip(": ") or "bad request"
                # Not HTTP at all (TLS or a scanner on the port) is the internet's noise: at
                # debug, as aiohttp logs it; a broken HTTP request at warning.
                level = log.debug if isinstance(exc, BadHttpMethod) else log.warning
                level("http.malformed_request", peer=request.remote, status=status, problem=problem)
            response = render(status, problem)
            response.force_close()
            return response

    return JsonErrors


def connection_cap(configured: int) -> tuple[int, str | None]:
    """`configured`, lowered to half the process's open-file limit so that HTTP alone cannot
    take every descriptor (gRPC, Redis and AWS need theirs); and why it was lowered, if it was."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return configured, None
    ceiling = max(1, soft // 2)
    if configured <= ceiling:
        return configured, None
    return ceiling, f"half the open-file limit ({soft}; raise `ulimit -n` for more)"


class ConnectionGuard:
    """Admits, times and, at the cap, pushes out the HTTP listener's connections."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        refusal: bytes,
        on_close: Callable[[str], None] | None = None,
        render_error: RenderError | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        #: The whole HTTP response written to a connection refused at the cap.
        self._refusal = refusal
        #: The answer to a request aiohttp could not parse (None: aiohttp's text/plain).
        self.render_error = render_error
        self._on_close = on_close
        #: Admitted connections by transport (the middleware finds a request's connection so).
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        #: Connections closed by the guard, by reason (head_timeout, pushed_out, refused).
        self.closed: dict[str, int] = {"head_timeout": 0, "pushed_out": 0, "refused": 0}

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def serving(self) -> int:
        """Open connections with a request being served (never pushed out)."""
        return sum(1 for c in self._open.values() if not c.idle)

    def _count(self, reason: str) -> None:
        self.closed[reason] += 1
        if self._on_close is not None:
            self._on_close(reason)

    def protocol(self, make_handler: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """The protocol for one accepted connection; `make_handler` makes aiohttp's."""
        return _Connection(self, make_handler)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the request's connection busy while its handler runs (its head has arrived)."""
        transport = request.transport
        connection = self._open.get(transport) if transport is not None else None
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_ended()

    # -- called by connections ---------------------------------------------------------------
    def _admit(self, connection: _Connection, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.max_connections:
            idle = [c for c in self._open.values() if c.idle]
            if not idle:
                self._count("refused")
                return False
            oldest = min(idle, key=lambda c: c.idle_since)
            self._forget(oldest)
            self._count("pushed_out")
            oldest.close()
        self._open[transport] = connection
        return True

    def _forget(self, connection: _Connection) -> None:
        if connection.transport is not None:
            self._open.pop(connection.transport, None)

    def _head_timed_out(self, connection: _Connection) -> None:
        self._forget(connection)
        self._count("head_timeout")
        connection.close()

    def refusal(self) -> bytes:
        return self._refusal


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's handler behind the guard's admission and deadline.

    Every protocol call is passed on to aiohttp's handler, which sees the real transport."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._make_handler = make_handler
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.BaseTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._head_timer: asyncio.TimerHandle | None = None
        #: Requests whose handler is running (more than one only with pipelining).
        self._requests = 0
        self.idle_since = self._loop.time()

    @property
    def idle(self) -> bool:
        return self._requests == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self._guard._admit(self, transport):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self._guard.refusal())
            transport.close()
            return
        self._inner = self._make_handler()
        if self._guard.render_error is not None and isinstance(self._inner, RequestHandler):
            answer_in_json(self._inner, self._guard.render_error)
        self._inner.connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: its 503 is on the way out
        if self.idle and self._head_timer is None:
            self._start_head_timer()  # the first byte of the next request on a kept-alive line
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._guard._forget(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the guard's view ----------------------------------------------------------------------
    def request_started(self) -> None:
        self._requests += 1
        self._stop_head_timer()

    def request_ended(self) -> None:
        self._requests -= 1
        if self._requests == 0:
            self.idle_since = self._loop.time()

    def close(self) -> None:
        self._stop_head_timer()
        if self.transport is not None:
            self.transport.close()

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(
            self._guard.header_timeout, self._guard._head_timed_out, self
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with every accepted connection handed to a ConnectionGuard first (and
    the TLS handshake bounded by the guard's header timeout)."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        ssl_context: Any = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        guard = self._guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: guard.protocol(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=guard.header_timeout if self._ssl_context else None,
        )


def raw_response(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 response, for a connection answered without reading its request."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


__all__ = ["ConnectionGuard", "GuardedSite", "connection_cap", "raw_response"]

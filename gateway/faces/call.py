"""The one call wrapper every face runs: who, what, may they, deadline, the core, errors, log.

A face reads its wire into an `Ask` and renders what comes back; everything between is here,
once, so the faces cannot drift apart:

    async with calls.open("StopServer", server=..., account=..., region=...) as call:
        try:
            async for update in call.stream(STOP, ask, who=..., timeout=...):
                ... render the update ...
        except Exception as exc:
            ... render call.failed(exc) ...

`open` counts the call (calls by face/method/outcome, open streams) and writes `call.start` and
`call.end`, with the same fields on every face. `admit` (and `stream`, which admits then runs
an operation) takes the steps in one order: who is calling (the face's `who`), validation of
the Ask, may they act on that account, the deadline (the face's `timeout`). A unary face calls
a core read after `admit` and notes its reply with `replied`. `failed` maps anything raised to
the one error table (a bug is logged whole and becomes INTERNAL) and records the outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from gateway.core.operation import Operation
from gateway.core.operations import Core, Reply
from gateway.core.validation import validate_account, validate_target
from gateway.domain import BucketKey, StateUpdate, Target
from gateway.errors import ErrorKind, FieldViolation, GatewayError, InvalidArgument
from gateway.faces.auth import Access, Caller
from gateway.faces.request_ids import request_id as sane_request_id
from gateway.limiting.callers import CallerLimits, Slot
from gateway.observability import CallEnd, Metrics

log = structlog.get_logger(__name__)

#: The outcome of a call whose caller went away (an HTTP client hanging up, a gRPC cancel).
CANCELLED = "CANCELLED"
#: The outcomes of a failure that is the gateway's or AWS's (logged at error; any other
#: failure is the caller's: a bad field, an unknown server, its own deadline, a limit, logged
#: at warning). DEADLINE_EXCEEDED is the caller's: the deadline it chose passed.
SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "UNIMPLEMENTED"})
#: Rows whose code is a server fault's but which the gateway chose: a drain, the connection
#: cap. Expected in operation, so a warning, not an error.
_CHOSEN = frozenset({ErrorKind.SHUTTING_DOWN, ErrorKind.TOO_MANY_CONNECTIONS})
#: How much of a raw field the log quotes: a 10 kB field must not make a 10 kB log line.
_SHOWN = {"server": 40, "account": 20, "region": 40}


@dataclass(frozen=True)
class Ask:
    """What a face read off its wire, unchecked. `server_id` None: a call that names no
    server (ListServers). Empty account or region: the gateway's defaults."""

    server_id: str | None
    account_id: str = ""
    region: str = ""
    #: What the face already found wrong on its wire while reading the fields (an HTTP body's
    #: unknown field, ...): reported together with every other bad field, not instead of them.
    violations: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class Admitted:
    """A call past every check: where it acts, and its deadline on the core's clock."""

    key: BucketKey
    target: Target | None
    deadline: float | None


#: How a face learns who is calling (gRPC metadata, the HTTP middleware's Caller, ...).
Who = Callable[[Access], Caller]
#: Seconds the caller gave the call, or None for no deadline; may raise InvalidArgument.
Timeout = Callable[[], float | None]


class Calls:
    """Opens the calls of one face: its name (metrics, logs), how it spells the request's
    fields in errors, and the core and access rules every call goes through."""

    def __init__(
        self,
        face: str,
        core: Core,
        metrics: Metrics,
        access: Access | None = None,
        *,
        field_names: tuple[str, str, str] = ("server_id", "account_id", "region"),
        limits: CallerLimits | None = None,
    ) -> None:
        self.face = face
        self.core = core
        self.metrics = metrics
        #: Who may call (faces.auth); None: anyone, on any account (tests of the core alone).
        self.access = access
        self.field_names = field_names
        #: The edge limits per caller (rate of new calls, open calls), shared by every face.
        self.limits = limits

    def open(
        self,
        method: str,
        *,
        server: str = "",
        account: str = "",
        region: str = "",
        streaming: bool = True,
        request_id: str | None = None,
    ) -> Call:
        """One call of `method`, with the raw fields known when it starts (for `call.start`).
        `streaming`: counted in the open-streams gauge while it runs. `request_id`: the
        caller's x-request-id (kept if sane, else a new one: `Call.request_id`)."""
        return Call(
            self,
            method,
            server=server,
            account=account,
            region=region,
            stream=streaming,
            request_id=request_id,
        )


class Call:
    """One call: its log fields, its outcome, and the steps every face runs in the same order.
    Use it as an async context manager (`Calls.open`)."""

    def __init__(
        self,
        calls: Calls,
        method: str,
        *,
        server: str,
        account: str,
        region: str,
        stream: bool,
        request_id: str | None = None,
    ) -> None:
        self._calls = calls
        self._streaming = stream
        self.method = method
        #: call.start and call.end carry it; the face echoes it back to the caller.
        self.request_id = sane_request_id(request_id)
        self.fields: dict[str, Any] = {
            "request_id": self.request_id,
            "method": method,
            "face": calls.face,
            "server": server[: _SHOWN["server"]] or None,
            "account": account[: _SHOWN["account"]] or None,
            "region": region[: _SHOWN["region"]] or None,
            "caller": None,
        }
        #: "OK" until something decides otherwise: a gRPC status code name, or CANCELLED.
        self.outcome = "OK"
        self._decided = False
        self._started = 0.0
        self._last: StateUpdate | None = None
        self._budget_wait = 0.0
        self._aws_request_id: str | None = None
        self._streams: list[AsyncGenerator[StateUpdate, None]] = []
        #: The caller's hold on its open-call count (max_streams), released when the call ends.
        self._slot: Slot | None = None
        #: Updates handed to the face, the time of the first, and the terminal one's.
        self._sent = 0
        self._first_update: float | None = None
        self._terminal: tuple[str, float] | None = None
        #: Where the call acts, once validated: every error after that names it (ErrorInfo).
        self._key: BucketKey | None = None
        self._target: Target | None = None
        #: The row of the error the call failed with, if it was one (for the log level).
        self._kind: ErrorKind | None = None

    # -- the frame: metrics and the two log lines ---------------------------------------------
    async def __aenter__(self) -> Call:
        self._started = time.monotonic()
        self._calls.metrics.call_started(self._calls.face, self.method, self._streaming)
        log.info("call.start", **self.fields)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None and not self._decided:
                self.failed(exc, reraise=False)
            for stream in self._streams:
                # The core learns at once that this caller left (the last one cancels its
                # flight), not whenever the generator is collected.
                await stream.aclose()
        finally:
            if self._slot is not None:
                self._slot.release()
            calls = self._calls
            duration = time.monotonic() - self._started
            calls.metrics.call_ended(
                calls.face,
                self.method,
                CallEnd(
                    code=self.outcome,
                    seconds=duration,
                    streaming=self._streaming,
                    first_update_seconds=self._first_update,
                    terminal=self._terminal,
                    messages_sent=self._sent,
                ),
            )
            last = self._last
            outcome = self.outcome
            # A failure is never info: the caller's at warning, the gateway's or AWS's at error.
            level = (
                log.info
                if outcome in ("OK", CANCELLED)
                else log.error
                if outcome in SERVER_FAULTS and self._kind not in _CHOSEN
                else log.warning
            )
            level(
                "call.end",
                **self.fields,
                outcome=self.outcome,
                duration=round(duration, 4),
                budget_wait=round(last.budget_wait if last else self._budget_wait, 4),
                state=str(last.state) if last else None,
                aws_request_id=(last.aws_request_id if last else None) or self._aws_request_id,
            )

    # -- outcomes ---------------------------------------------------------------------------------
    def failed(self, exc: BaseException, *, reraise: bool = True) -> GatewayError:
        """Record `exc` as the call's outcome and return the error to render: a GatewayError
        as it is, anything else (a bug) logged whole and answered INTERNAL. A caller that went
        away (cancelled, connection reset) is CANCELLED and re-raised: there is nobody to
        answer."""
        if isinstance(exc, asyncio.CancelledError | GeneratorExit | ConnectionResetError):
            self.decide(CANCELLED)
            if reraise:
                raise exc
            return GatewayError(ErrorKind.CANCELLED, "the caller went away")
        if isinstance(exc, GatewayError):
            self._name_target(exc)
            if not self._decided:
                self._kind = exc.kind
            self.decide(exc.kind.grpc_code.name)
            self._aws_request_id = self._aws_request_id or exc.metadata.get("aws_request_id")
            return exc
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to map
            self.decide(CANCELLED)
            if reraise:
                raise exc
            return GatewayError(ErrorKind.CANCELLED, "interrupted")
        self.decide("INTERNAL")
        log.error("call.bug", **self.fields, exc_info=exc)
        return GatewayError(ErrorKind.INTERNAL, "internal error in the gateway")

    def _name_target(self, error: GatewayError) -> None:
        """Every error of a call that got past validation names where it acts: ErrorInfo
        metadata `account_id`, `region` and (when a server is named) `server_id`, whatever
        layer raised it (docs/errors.md). What the raiser set stays; an error is raised for
        one flight, which is one target, so filling it in place tells no caller of another's."""
        key = self._key
        if key is None:
            return
        error.metadata.setdefault("account_id", key.account_id)
        error.metadata.setdefault("region", key.region)
        if self._target is not None:
            error.metadata.setdefault("server_id", self._target.server_id)

    def decide(self, outcome: str) -> None:
        """Set the outcome, once: the first decision stands (a gRPC abort that follows an
        error, or a reset while sending it, does not overwrite it)."""
        if not self._decided:
            self.outcome = outcome
            self._decided = True

    # -- the steps ------------------------------------------------------------------------------
    # `timeout` reads the caller's deadline (as for `stream`); admit itself never waits.
    async def admit(self, ask: Ask, *, who: Who, timeout: Timeout | None = None) -> Admitted:  # noqa: ASYNC109
        """Who is calling, then its limits, then what (validation), then may they act on it,
        then the deadline: a caller that may not act learns nothing of field rules, and
        nothing here spends budget or calls AWS. Raises GatewayError."""
        caller = self._who(who)
        await self._limit(caller)
        return self._admit(caller, ask, timeout)

    def _who(self, who: Who) -> Caller | None:
        access = self._calls.access
        caller = who(access) if access is not None else None
        if caller is not None:
            self.fields["caller"] = caller.name
        return caller

    async def _limit(self, caller: Caller | None) -> None:
        """The caller's edge limits (limiting/callers.py), right after it is known: over its
        rate or its open calls it is refused at once (CALLER_LIMITED), before its request is
        even read further, so a refusal costs nothing but a counter."""
        limits = self._calls.limits
        if limits is not None and caller is not None:
            self._slot = await limits.admit(caller.name)

    def _admit(self, caller: Caller | None, ask: Ask, timeout: Timeout | None) -> Admitted:
        calls = self._calls
        core = calls.core
        self.fields.update(
            server=(ask.server_id or "")[: _SHOWN["server"]] or None,
            account=ask.account_id[: _SHOWN["account"]] or None,
            region=ask.region[: _SHOWN["region"]] or None,
        )
        settings = core.settings
        # Every bad field at once (the face's wire, the three fields, the deadline): a bad
        # Grpc-Timeout must not hide a bad serverId, nor the reverse.
        violations: list[FieldViolation] = []
        target: Target | None = None
        key: BucketKey | None = None
        try:
            if ask.server_id is None:
                key = validate_account(
                    ask.account_id,
                    ask.region,
                    default_account=settings.default_account,
                    default_region=settings.default_region,
                    field_names=calls.field_names[1:],
                    extra_regions=settings.extra_regions,
                )
            else:
                target = validate_target(
                    ask.server_id,
                    ask.account_id,
                    ask.region,
                    default_account=settings.default_account,
                    default_region=settings.default_region,
                    field_names=calls.field_names,
                    extra_regions=settings.extra_regions,
                )
                key = target.bucket
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        violations.extend(ask.violations)
        remaining: float | None = None
        try:
            remaining = timeout() if timeout is not None else None
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if violations or key is None:
            raise InvalidArgument(violations)
        self._key, self._target = key, target
        self.fields.update(account=key.account_id, region=key.region)
        if calls.access is not None and caller is not None:
            calls.access.authorize(caller, target or key)
        deadline = None if remaining is None else core.clock.monotonic() + remaining
        return Admitted(key, target, deadline)

    def stream(
        self,
        operation: Operation,
        ask: Ask | Callable[[], Awaitable[Ask]],
        *,
        who: Who,
        timeout: Timeout | None = None,
    ) -> AsyncIterator[StateUpdate]:
        """Admit the call (who, then the Ask, read now when it is a coroutine such as an HTTP
        body, then the rest of `admit`), then stream the core's updates of `operation`. Errors
        come out as GatewayError (a bug in the core as INTERNAL, logged); a face's own wire
        errors (raised by reading the Ask) come out as they are. Closed when the call ends."""

        async def admitted() -> Admitted:
            caller = self._who(who)
            await self._limit(caller)
            read = ask if isinstance(ask, Ask) else await ask()
            return self._admit(caller, read, timeout)

        return self._keep(self._updates(operation, admitted))

    def updates(self, operation: Operation, admitted: Admitted) -> AsyncIterator[StateUpdate]:
        """The core's updates of `operation` for a call already admitted (see `stream`)."""

        async def given() -> Admitted:
            return admitted

        return self._keep(self._updates(operation, given))

    def _note_sent(self, update: StateUpdate) -> None:
        """For the call metrics: how many updates, when the first, when the terminal one.
        (Counted as the face takes each one to send.)"""
        since = time.monotonic() - self._started
        self._sent += 1
        if self._first_update is None:
            self._first_update = since
        if update.terminal and self._terminal is None:
            self._terminal = (str(update.state), since)

    def replied(self, reply: Reply) -> Reply:
        """Note a core read's budget wait and AWS request id for `call.end`; return it."""
        self._budget_wait = reply.budget_wait
        self._aws_request_id = reply.aws_request_id or None
        return reply

    def _keep(self, stream: AsyncGenerator[StateUpdate, None]) -> AsyncGenerator[StateUpdate, None]:
        self._streams.append(stream)
        return stream

    async def _updates(
        self, operation: Operation, admit: Callable[[], Awaitable[Admitted]]
    ) -> AsyncGenerator[StateUpdate, None]:
        admitted = await admit()
        if admitted.target is None:
            raise GatewayError(ErrorKind.INTERNAL, f"{operation.name} needs a server")
        updates = self._calls.core.run(operation, admitted.target, deadline=admitted.deadline)
        try:
            async for update in updates:
                self._last = update
                self._note_sent(update)
                yield update
        except GatewayError:
            raise
        except Exception as exc:
            raise self.failed(exc) from exc
        finally:
            aclose = getattr(updates, "aclose", None)
            if aclose is not None:
                await aclose()

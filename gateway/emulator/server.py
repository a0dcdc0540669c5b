"""The embedded AWS Transfer Family emulator: an aiohttp app speaking AWS JSON 1.1 on `POST /`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from gateway import awsjson as protocol
from gateway.awsjson import AwsError
from gateway.config import DEFAULT_EMULATOR_ACCOUNT, DEFAULT_REGION, EmulatorSettings
from gateway.emulator.state import Behaviour, ServerStore, described, listed
from gateway.emulator.sts import Sts
from gateway.emulator.throttling import Quotas

log = logging.getLogger(__name__)

STATS_PATH: Final = "/_emulator/stats"
RESET_PATH: Final = "/_emulator/reset"
#: Every call's time and outcome, for tests that check rates across processes (read-only).
CALLS_PATH: Final = "/_emulator/calls"
#: Calls the service acted on (past the quota), per server: `?operation=StopServer`.
SERVER_CALLS_PATH: Final = "/_emulator/server-calls"
#: The call log keeps the latest calls only: memory stays bounded under a long load test.
CALL_LOG_SIZE: Final = 200_000
#: ListServers' page size when the caller sends no MaxResults.
DEFAULT_PAGE_SIZE: Final = 1000

_Operation = Callable[[str, str, dict[str, Any]], dict[str, Any]]


class OpStats:
    """Counters of one (account, region, operation); `calls` counts throttled and faulted too."""

    __slots__ = ("calls", "faults", "throttled")

    def __init__(self) -> None:
        self.calls = 0
        self.throttled = 0
        self.faults = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "throttled": self.throttled, "faults": self.faults}


class Emulator:
    """Transfer Family's control plane for servers, with AWS-like quotas, faults and latency.

    Time comes from `clock` and chance from `rng`, so tests move time and fix outcomes instead
    of sleeping or retrying.
    """

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.store = ServerStore(
            Behaviour(
                settings.transition_seconds, settings.stop_failure_rate, settings.stop_offline
            ),
            clock,
            self._rng,
        )
        self._quotas = Quotas(settings.quota_rate, settings.quota_burst, clock)
        #: STS (AssumeRole, GetCallerIdentity): sessions it issues sign calls as their account.
        self.sts = Sts()
        self._stats: dict[tuple[str, str, str], OpStats] = {}
        #: (clock time, account, region, operation, outcome) of the latest calls.
        self._call_log: deque[tuple[float, str, str, str, str]] = deque(maxlen=CALL_LOG_SIZE)
        #: (account, region, operation, server id) -> calls past the quota naming that server.
        self._server_calls: Counter[tuple[str, str, str, str]] = Counter()
        self._operations: dict[str, _Operation] = {
            "CreateServer": self._create_server,
            "DescribeServer": self._describe_server,
            "ListServers": self._list_servers,
            "StartServer": self._start_server,
            "StopServer": self._stop_server,
            "DeleteServer": self._delete_server,
            "TagResource": self._tag_resource,
            "UntagResource": self._untag_resource,
            "ListTagsForResource": self._list_tags_for_resource,
        }
        self._runner: web.AppRunner | None = None
        self._host = settings.host
        self._port: int | None = None

        self.app = web.Application()
        self.app.router.add_post("/", self._handle_aws)
        self.app.router.add_get(STATS_PATH, self._handle_stats)
        self.app.router.add_post(RESET_PATH, self._handle_reset)
        self.app.router.add_get(CALLS_PATH, self._handle_calls)
        self.app.router.add_get(SERVER_CALLS_PATH, self._handle_server_calls)
        self.app.router.add_route("*", "/", self._handle_wrong_method)
        self.app.router.add_route("*", "/{tail:.*}", self._handle_unknown_path)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on `host:port` (settings by default; port 0 picks a free one); the bound port."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already started")
        if host is not None:
            # The settings' rule holds for a host given here too (an unauthenticated emulator).
            dataclasses.replace(self.settings, host=host)
        self._host = host if host is not None else self.settings.host
        # No access log: a line per call is noise at load-test rates and CPU better not spent.
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self.settings.port if port is None else port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = _bound_port(runner)
        return self._port

    async def close(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def url(self) -> str:
        """Where clients reach it; a wildcard bind is reached on loopback."""
        host = self._host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # ---- direct access (not counted in stats) --------------------------------------------

    def create_servers(
        self,
        n: int,
        account: str = DEFAULT_EMULATOR_ACCOUNT,
        region: str = DEFAULT_REGION,
        state: str = "ONLINE",
        tags: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Create `n` servers in `state` (each tagged with `tags`) without going through the
        API; their ids."""
        return self.store.create_many(n, account, region, state, tuple((tags or {}).items()))

    def server_state(
        self, server_id: str, account: str = DEFAULT_EMULATOR_ACCOUNT, region: str = DEFAULT_REGION
    ) -> str:
        """The server's state now; raises KeyError when it does not exist there."""
        try:
            return self.store.state_of(self.store.get(account, region, server_id))
        except AwsError as exc:
            raise KeyError(server_id) from exc

    def stats(self) -> dict[str, Any]:
        """`{"operations": {"<account>/<region>/<Operation>": {"calls", "throttled", "faults"}}}`"""
        return {
            "operations": {
                f"{a}/{r}/{op}": counters.as_dict() for (a, r, op), counters in self._stats.items()
            }
        }

    def reset_stats(self) -> None:
        """Zero every counter and empty the call log; servers and quota buckets stay."""
        self._stats.clear()
        self._call_log.clear()
        self._server_calls.clear()

    def calls_to(self, operation: str, server_id: str) -> int:
        """Calls of `operation` naming `server_id` that the service acted on (past the quota:
        a throttled attempt is not one), in any account."""
        return sum(
            n
            for (_, _, op, sid), n in self._server_calls.items()
            if op == operation and sid == server_id
        )

    def server_calls(self, operation: str) -> dict[str, int]:
        """`{"<account>/<region>/<server id>": calls}` of `operation` past the quota."""
        return {
            f"{a}/{r}/{sid}": n
            for (a, r, op, sid), n in self._server_calls.items()
            if op == operation
        }

    def call_log(self, operation: str | None = None) -> list[dict[str, Any]]:
        """The latest calls (oldest first), of one operation or all: `at` is the emulator's
        clock (seconds, monotonic), `outcome` is ok, throttled or fault (a 4xx answer such as
        ResourceNotFound is ok here: the quota was spent and the service acted)."""
        return [
            {"at": at, "account": a, "region": r, "operation": op, "outcome": outcome}
            for at, a, r, op, outcome in self._call_log
            if operation in (None, op)
        ]

    def calls(self, operation: str, account: str | None = None, region: str | None = None) -> int:
        """Calls received for `operation`, optionally of one account and/or region."""
        return sum(
            s.calls
            for (a, r, op), s in self._stats.items()
            if op == operation and account in (None, a) and region in (None, r)
        )

    def throttled(self, operation: str | None = None) -> int:
        """Calls answered ThrottlingException (for one operation, or all)."""
        return sum(s.throttled for (_, _, op), s in self._stats.items() if operation in (None, op))

    def faults(self, operation: str | None = None) -> int:
        """Calls answered with an injected 500 (for one operation, or all)."""
        return sum(s.faults for (_, _, op), s in self._stats.items() if operation in (None, op))

    # ---- HTTP ----------------------------------------------------------------------------

    async def _handle_aws(self, request: web.Request) -> web.Response:
        if Sts.is_query_call(request):
            return await self.sts.handle(request)
        request_id = protocol.new_request_id()
        target = request.headers.get("X-Amz-Target", "")
        prefix, _, name = target.partition(".")
        operation = self._operations.get(name) if prefix == protocol.TARGET_PREFIX else None
        if operation is None:
            return protocol.error_response(protocol.unknown_operation(target), request_id)
        account, region = protocol.caller_of(request.headers.get("Authorization"))
        try:
            account = self.sts.account_of(request.headers.get("Authorization")) or account
        except AwsError as exc:
            return protocol.error_response(exc, request_id)
        key = (account, region, name)
        counters = self._stats.get(key)
        if counters is None:
            counters = self._stats[key] = OpStats()
        counters.calls += 1

        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        # AWS's order: the quota is checked first, then the service may fail, then it acts.
        retry_after = self._quotas.retry_after(key)
        if retry_after:
            counters.throttled += 1
            self._call_log.append((self._clock(), account, region, name, "throttled"))
            return protocol.error_response(protocol.throttling(retry_after), request_id)
        if self.settings.fault_rate and self._rng.random() < self.settings.fault_rate:
            counters.faults += 1
            self._call_log.append((self._clock(), account, region, name, "fault"))
            fault = (
                protocol.internal_service_error()
                if self._rng.random() < 0.5
                else protocol.service_unavailable()
            )
            return protocol.error_response(fault, request_id)
        self._call_log.append((self._clock(), account, region, name, "ok"))
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge as exc:
                # Control-plane inputs are tiny; say so in AWS's shape rather than aiohttp's text.
                raise AwsError(
                    "SerializationException", f"Request body too large: {exc.text}", 413
                ) from exc
            body = protocol.parse_body(raw)
            server_id = body.get("ServerId")
            if isinstance(server_id, str):
                self._server_calls[(account, region, name, server_id)] += 1
            return protocol.ok_response(operation(account, region, body), request_id)
        except AwsError as exc:
            return protocol.error_response(exc, request_id)
        except Exception:
            # A bug must still answer in AWS's shape, with a request id to find it in the log.
            log.exception("emulator bug on %s (request %s)", name, request_id)
            return protocol.error_response(
                AwsError("InternalServiceError", f"Emulator error (request {request_id})", 500),
                request_id,
            )

    async def _handle_wrong_method(self, request: web.Request) -> web.Response:
        error = AwsError(
            "UnknownOperationException",
            f"{request.method} / is not an AWS JSON 1.1 call: use POST / with X-Amz-Target",
            status=405,
        )
        response = protocol.error_response(error, protocol.new_request_id())
        response.headers["Allow"] = "POST"
        return response

    async def _handle_unknown_path(self, request: web.Request) -> web.Response:
        error = AwsError(
            "UnknownOperationException",
            f"No route for {request.method} {request.path}: AWS calls are POST /, see "
            f"GET {STATS_PATH}, GET {CALLS_PATH}, GET {SERVER_CALLS_PATH} and POST {RESET_PATH}"
            " for the emulator's own",
            status=404,
        )
        return protocol.error_response(error, protocol.new_request_id())

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.call_log(request.query.get("operation"))})

    async def _handle_server_calls(self, request: web.Request) -> web.Response:
        operation = request.query.get("operation", "StopServer")
        return web.json_response({"operation": operation, "calls": self.server_calls(operation)})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"reset": True})

    # ---- operations: (account, region, body) -> output ------------------------------------

    def _create_server(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.store.create(account, region, body)
        return {"ServerId": record.server_id}

    def _describe_server(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.store.get(account, region, protocol.server_id_of(body))
        return {"Server": described(self.store, record, account, region)}

    def _list_servers(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        limit, token = protocol.paging_of(body, DEFAULT_PAGE_SIZE)
        records, next_token = self.store.page(account, region, limit, token)
        out: dict[str, Any] = {"Servers": listed(self.store, records, account, region)}
        if next_token is not None:
            out["NextToken"] = next_token
        return out

    def _start_server(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self.store.start(account, region, protocol.server_id_of(body))
        return {}

    def _stop_server(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self.store.stop(account, region, protocol.server_id_of(body))
        return {}

    def _delete_server(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self.store.delete(account, region, protocol.server_id_of(body))
        return {}

    def _tag_resource(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.store.by_arn(account, region, body.get("Arn"))
        self.store.tag(record, body.get("Tags"))
        return {}

    def _untag_resource(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.store.by_arn(account, region, body.get("Arn"))
        self.store.untag(record, body.get("TagKeys"))
        return {}

    def _list_tags_for_resource(
        self, account: str, region: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """ListTagsForResource: the tags in the order they were set, paged by MaxResults (the
        NextToken is the position, bound to the ARN)."""
        arn = body.get("Arn")
        record = self.store.by_arn(account, region, arn)
        limit, token = protocol.paging_of(body, DEFAULT_PAGE_SIZE)
        start = 0
        if token is not None:
            prefix = f"{arn}#"
            if not token.startswith(prefix) or not token.removeprefix(prefix).isdigit():
                raise protocol.invalid_next_token()
            start = int(token.removeprefix(prefix))
        tags = record.tags[start : start + limit]
        out: dict[str, Any] = {"Arn": arn, "Tags": [{"Key": k, "Value": v} for k, v in tags]}
        if start + limit < len(record.tags):
            out["NextToken"] = f"{arn}#{start + limit}"
        return out


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        # (host, port) for IPv4, (host, port, flow, scope) for IPv6.
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError(f"cannot tell the bound port from {runner.addresses!r}")


async def run_emulator(settings: EmulatorSettings) -> int:
    """`transfer-gateway emulator`: serve until SIGINT/SIGTERM, printing how to reach it."""
    emulator = Emulator(settings)
    # Seeded before listening, so no caller can ever see a partial seed.
    ids = emulator.create_servers(settings.seed)
    await emulator.start()
    try:
        url = emulator.url
        # Tests and scripts read this line to learn the port when they asked for port 0.
        print(f"emulator listening on {url}", flush=True)
        if ids:
            print(
                f"seeded {len(ids)} ONLINE server(s) in account {DEFAULT_EMULATOR_ACCOUNT},"
                f" {DEFAULT_REGION}:"
            )
            for server_id in ids:
                print(f"  {server_id}")
        print(
            "any credentials work; a 12-digit access key id is taken as the account, e.g.\n"
            f"  AWS_ACCESS_KEY_ID={DEFAULT_EMULATOR_ACCOUNT} AWS_SECRET_ACCESS_KEY=x "
            f"aws transfer list-servers --endpoint-url {url} --region {DEFAULT_REGION}\n"
            f'  boto3.client("transfer", endpoint_url="{url}", region_name="{DEFAULT_REGION}",'
            f' aws_access_key_id="{DEFAULT_EMULATOR_ACCOUNT}", aws_secret_access_key="x")',
            flush=True,
        )
        await _wait_for_signal()
    finally:
        await emulator.close()
    print("emulator stopped", flush=True)
    return 0


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    installed = []
    for sig in signals:
        # Windows' event loops have no signal handlers: Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = ["Emulator", "OpStats", "run_emulator"]

"""Benchmark: CPU per DescribeServer call in the emulator vs. in the aiobotocore client making it.

Run: .venv/bin/python bench/emulator_cost.py [--calls 3000] [--rounds 3]

The emulator runs on its own event loop in a background thread and the client in the main thread,
so `time.thread_time()` on each side splits one process's CPU between server and client exactly
(the GIL makes them take turns; waiting for it costs no CPU). Three figures per round:
  client   aiobotocore: sign, serialise, send, parse (the cost every gateway call pays anyway)
  server   the emulator thread: aiohttp's HTTP parsing and writing plus the handler
  handler  the emulator's handler alone, called with prepared requests (no sockets)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from aiobotocore.session import AioSession
from aiohttp import streams, test_utils, web
from botocore.config import Config

from gateway.config import EmulatorSettings
from gateway.emulator import Emulator

_T = TypeVar("_T")
# A quota the benchmark cannot reach: it measures the cost of serving, not of refusing.
SETTINGS = EmulatorSettings(port=0, quota_rate=1e9, quota_burst=10**9)
AUTH = (
    "AWS4-HMAC-SHA256 Credential=000000000000/20261128/us-east-1/transfer/aws4_request, "
    "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
)


class EmulatorThread:
    """An emulator serving from its own thread and event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator = Emulator(SETTINGS)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def cpu(self) -> float:
        async def read() -> float:
            return time.thread_time()

        return self.run(read())

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self.run(self.emulator.start())
        return self

    def __exit__(self, *_: object) -> None:
        self.run(self.emulator.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def over_the_wire(server: EmulatorThread, server_id: str, calls: int) -> tuple[float, float]:
    """(client, server) CPU seconds per call over a real loopback socket."""
    async with AioSession().create_client(
        "transfer",
        region_name="us-east-1",
        endpoint_url=server.emulator.url,
        aws_access_key_id="000000000000",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}),
    ) as client:
        for _ in range(200):  # warm up: connection, caches, lazy imports
            await client.describe_server(ServerId=server_id)
        server_before, client_before = server.cpu(), time.thread_time()
        for _ in range(calls):
            await client.describe_server(ServerId=server_id)
        client_cpu = time.thread_time() - client_before
        server_cpu = server.cpu() - server_before
    return client_cpu / calls, server_cpu / calls


async def handler_only(calls: int) -> float:
    """CPU seconds per call of the emulator's request handler, without HTTP or sockets."""
    emulator = Emulator(SETTINGS)
    emulator.store.create_many(1, "000000000000", "us-east-1", "ONLINE")
    server_id = emulator.store.page("000000000000", "us-east-1", 1, None)[0][0].server_id
    body = json.dumps({"ServerId": server_id}).encode()
    headers = {
        "X-Amz-Target": "TransferService.DescribeServer",
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": AUTH,
    }
    app_handler = emulator.app.router.resolve  # the same route resolution the server does

    def request() -> web.Request:
        payload = streams.StreamReader(_Unthrottled(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()
        return test_utils.make_mocked_request(
            "POST", "/", headers=headers, payload=payload, app=emulator.app
        )

    total = 0.0
    for i in range(calls + 200):
        req = request()
        started = time.thread_time()
        match = await app_handler(req)
        response = await match.handler(req)
        elapsed = time.thread_time() - started
        assert isinstance(response, web.Response), response
        assert response.status == 200, response.text
        if i >= 200:  # after the same warm-up as over the wire
            total += elapsed
    return total / calls


class _Unthrottled:
    """The flow control a StreamReader calls back into; a prepared body needs none.

    (A unittest.mock protocol would do too, but its call bookkeeping would be timed as handler.)
    """

    _reading_paused = False

    def pause_reading(self, *args: object, **kwargs: object) -> None:
        pass

    def resume_reading(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rows: list[tuple[float, float, float]] = []
    for _ in range(args.rounds):
        with EmulatorThread() as server:
            (server_id,) = server.emulator.create_servers(1)
            client_cpu, server_cpu = asyncio.run(over_the_wire(server, server_id, args.calls))
        handler_cpu = asyncio.run(handler_only(args.calls))
        rows.append((client_cpu, server_cpu, handler_cpu))
        print(
            f"round: client {client_cpu * 1e3:.3f} ms, emulator {server_cpu * 1e3:.3f} ms"
            f" (handler {handler_cpu * 1e3:.3f} ms) CPU per DescribeServer",
            flush=True,
        )
    client_ms, server_ms, handler_ms = (
        statistics.median(col) * 1e3 for col in zip(*rows, strict=True)
    )
    print(
        f"median of {args.rounds} x {args.calls} calls: aiobotocore client {client_ms:.3f} ms,"
        f" emulator {server_ms:.3f} ms (handler alone {handler_ms:.3f} ms) CPU per call;"
        f" emulator/client = {server_ms / client_ms:.2f}"
        f" (handler/client = {handler_ms / client_ms:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

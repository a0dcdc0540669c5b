"""A benchmark's server in a child process: gateway, emulator alone, or a bare grpc.aio stream.

A gateway child is given its emulator's URL (`endpoint_url`) by bench._support.child, which
runs the emulator in a child of its own; without one it embeds an emulator.

Run by bench._support.child: `python -m bench._serve MODE JSON` (with BENCH_PROFILE=path set,
the child writes cProfile stats to path.MODE when it stops). It makes the servers asked for
directly (before listening, so no quota is spent and nothing is counted), prints one JSON line
with its ports and server ids, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench._support import settings_from_spec
from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import EmulatorSettings
from gateway.faces.grpc import SERVER_OPTIONS


class BareService(pb_grpc.TransferGatewayServicer):
    """The same RPC with nothing behind it: one update, then the stream stays open until the
    client leaves. What a stream costs grpc.aio itself, to compare the gateway's with."""

    async def StopServer(
        self, request: pb.StopServerRequest, context: Any
    ) -> AsyncIterator[pb.ServerStateUpdate]:
        yield pb.ServerStateUpdate(
            server_id=request.server_id, state=pb.SERVER_STATE_STOPPING, stage=pb.STAGE_WATCHING
        )
        await asyncio.Event().wait()


async def _until_sigterm() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _announce(info: dict[str, Any]) -> None:
    gc.collect()  # the baseline a benchmark reads next should not hold start-up garbage
    print(json.dumps(info), flush=True)


async def main(mode: str, spec: dict[str, Any]) -> None:
    servers_wanted: dict[str, int] = spec.get("servers", {})
    if mode == "gateway":
        from gateway.app import GatewayApp
        from gateway.observability import configure_logging
        from gateway.process import tune_gc

        settings = settings_from_spec(spec["settings"])
        configure_logging(settings.log_level, "json")
        app = GatewayApp(settings)
        await app.start()
        tune_gc()  # as `transfer-gateway serve` does
        made: dict[str, list[str]] = {}
        if app.emulator is not None:  # embedded (no endpoint_url given)
            made = {a: app.emulator.create_servers(n, account=a) for a, n in servers_wanted.items()}
        emulator_url = app.emulator.url if app.emulator is not None else settings.endpoint_url
        _announce(
            {
                "grpc": app.grpc_port,
                "http": app.http_port,
                "emulator": emulator_url,
                "servers": made,
            }
        )
        await _until_sigterm()
        await app.stop(grace=1.0)
    elif mode == "emulator":
        from gateway.emulator import Emulator

        emulator = Emulator(EmulatorSettings(**spec["settings"]))
        made = {a: emulator.create_servers(n, account=a) for a, n in servers_wanted.items()}
        await emulator.start()
        _announce({"emulator": emulator.url, "servers": made})
        await _until_sigterm()
        await emulator.close()
    elif mode == "bare":
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_TransferGatewayServicer_to_server(BareService(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        _announce({"grpc": port})
        await _until_sigterm()
        await server.stop(0)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    profile_to = os.environ.get("BENCH_PROFILE")  # where to write the child's cProfile stats
    if profile_to:
        import cProfile

        with cProfile.Profile() as profiler:
            asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
        # One file per child (a gateway benchmark runs a gateway and an emulator child).
        profiler.dump_stats(f"{profile_to}.{sys.argv[1]}")
    else:
        asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))

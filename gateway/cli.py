"""The `transfer-gateway` command line: emulator, serve, stop and bench sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from gateway.config import (
    DEFAULT_EMULATOR_ACCOUNT,
    DEFAULT_REGION,
    BudgetSettings,
    CoreSettings,
    EmulatorSettings,
    Settings,
    SettingsError,
)

_EMULATOR_FLAGS: list[tuple[str, type, str]] = [
    ("transition-seconds", float, "seconds a server spends STOPPING or STARTING"),
    ("seed", int, "servers created ONLINE in the default account at start (ids are printed)"),
    ("quota-rate", float, "AWS-like quota: calls per second per account, region and operation"),
    ("quota-burst", int, "AWS-like quota: burst per account, region and operation"),
    ("fault-rate", float, "probability of a 500 InternalServiceError/ServiceUnavailable answer"),
    ("stop-failure-rate", float, "probability that a stop ends STOP_FAILED (start: START_FAILED)"),
    ("latency-ms", float, "latency added to every call"),
    ("stop-offline", str, "StopServer on an OFFLINE server: noop (200) or error (400)"),
]


def add_emulator_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The emulator's options; `serve` takes the same ones with an `emulator-` prefix."""
    defaults = EmulatorSettings()
    for name, kind, help_text in _EMULATOR_FLAGS:
        attr = name.replace("-", "_")
        parser.add_argument(
            f"--{prefix}{name}",
            dest=f"{prefix.replace('-', '_')}{attr}",
            type=kind,
            default=getattr(defaults, attr),
            help=f"{help_text} (default: %(default)s)",
        )


def emulator_settings_from(
    args: argparse.Namespace, prefix: str = "", **extra: Any
) -> EmulatorSettings:
    """Collect the emulator flags (with their prefix) into settings."""
    values = {
        name.replace("-", "_"): getattr(args, f"{prefix.replace('-', '_')}{name.replace('-', '_')}")
        for name, _, _ in _EMULATOR_FLAGS
    }
    return EmulatorSettings(**values, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-gateway",
        description="A budgeted gRPC/HTTP gateway for the AWS Transfer Family StopServer API.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulator", help="run the embedded AWS Transfer Family emulator alone")
    emu.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    emu.add_argument(
        "--port", type=int, default=4566, help="port to listen on (default: %(default)s)"
    )
    add_emulator_flags(emu)

    serve = sub.add_parser("serve", help="run the gateway (with the embedded emulator by default)")
    serve.add_argument(
        "--grpc-host", default="127.0.0.1", help="gRPC address (default: %(default)s)"
    )
    serve.add_argument(
        "--grpc-port", type=int, default=50051, help="gRPC port (default: %(default)s)"
    )
    serve.add_argument(
        "--upstream",
        choices=("emulator", "aws"),
        default="emulator",
        help="emulator: the embedded emulator (default); aws: AWS, default credential chain",
    )
    budget = BudgetSettings()
    serve.add_argument(
        "--rate",
        type=float,
        default=budget.rate,
        help="upstream calls/s per account and region (default: %(default)s)",
    )
    serve.add_argument(
        "--burst", type=int, default=budget.burst, help="budget burst (default: %(default)s)"
    )
    serve.add_argument(
        "--account", default=DEFAULT_EMULATOR_ACCOUNT, help="default account (default: %(default)s)"
    )
    serve.add_argument(
        "--region", default=DEFAULT_REGION, help="default region (default: %(default)s)"
    )
    serve.add_argument(
        "--demo-servers",
        type=int,
        default=3,
        help="emulator servers to create at start (default: %(default)s)",
    )
    serve.add_argument(
        "--emulator-host", default="127.0.0.1", help="emulator address (default: %(default)s)"
    )
    serve.add_argument(
        "--emulator-port",
        type=int,
        default=4566,
        help="emulator port for AWS clients (default: %(default)s)",
    )
    serve.add_argument(
        "--http-host", default=Settings.http_host, help="HTTP address (default: %(default)s)"
    )
    serve.add_argument(
        "--http-port", type=int, default=Settings.http_port, help="HTTP port (default: %(default)s)"
    )
    serve.add_argument(
        "--upstream-endpoint",
        default=None,
        metavar="URL",
        help="a Transfer endpoint to call instead of AWS's or the embedded emulator's, e.g. a"
        " standalone `transfer-gateway emulator` (with --upstream emulator: emulator credentials)",
    )
    serve.add_argument(
        "--limiter",
        choices=("local", "redis"),
        default=Settings.limiter,
        help="where budgets live: this process, or Redis shared by replicas (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-url",
        default=Settings.redis_url,
        help="Redis for --limiter redis (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-prefix",
        default=Settings.redis_prefix,
        help="Redis key prefix (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-outage",
        choices=("fail_closed", "degrade"),
        default=Settings.redis_outage,
        help="while Redis is down: refuse upstream calls, or serve at rate / --expected-replicas"
        " (default: %(default)s)",
    )
    serve.add_argument(
        "--expected-replicas",
        type=int,
        default=Settings.expected_replicas,
        help="replicas sharing the budget (a degraded replica's share) (default: %(default)s)",
    )
    serve.add_argument("--log-format", choices=("json", "console"), default="json")
    serve.add_argument("--log-level", default="info")
    add_emulator_flags(serve, prefix="emulator-")

    stop = sub.add_parser(
        "stop", help="stop a server through a running gateway, printing each update"
    )
    stop.add_argument("server_id")
    stop.add_argument("--account", default="", help="12-digit account (default: the gateway's)")
    stop.add_argument("--region", default="", help="region (default: the gateway's)")
    stop.add_argument(
        "--target", default="127.0.0.1:50051", help="gateway host:port (default: %(default)s)"
    )
    stop.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    stop.add_argument("--json", action="store_true", help="one JSON object per update")
    from gateway import bench  # its flags live beside the load generator

    bench.add_parser(sub)
    return parser


def _serve_settings(args: argparse.Namespace) -> Settings:
    core = CoreSettings(
        default_account=args.account,
        default_region=args.region,
        budget=BudgetSettings(rate=args.rate, burst=args.burst),
    )
    emulator = emulator_settings_from(
        args, prefix="emulator-", host=args.emulator_host, port=args.emulator_port
    )
    return Settings(
        grpc_host=args.grpc_host,
        grpc_port=args.grpc_port,
        upstream=args.upstream,
        demo_servers=args.demo_servers,
        log_format=args.log_format,
        log_level=args.log_level,
        http_host=args.http_host,
        http_port=args.http_port,
        endpoint_url=args.upstream_endpoint,
        limiter=args.limiter,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        redis_outage=args.redis_outage,
        expected_replicas=args.expected_replicas,
        core=core,
        emulator=emulator,
    )


async def _serve(settings: Settings) -> int:
    from gateway.app import GatewayApp
    from gateway.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    app = GatewayApp(settings)
    await app.start()
    where = f"{settings.grpc_host}:{app.grpc_port}"
    print(
        f"transfer-gateway listening: grpc={where} http={settings.http_host}:{app.http_port}"
        f" upstream={settings.upstream} limiter={settings.limiter}",
        flush=True,
    )
    if app.emulator is not None:
        print(f"embedded emulator for AWS clients: {app.emulator.url}", flush=True)
        for server_id in app.demo_server_ids:
            print(f"demo server: {server_id}", flush=True)
        if app.demo_server_ids:
            print(
                f"try: .venv/bin/transfer-gateway stop {app.demo_server_ids[0]} --target {where}",
                flush=True,
            )
            print(
                f"try: curl -N -X POST http://{settings.http_host}:{app.http_port}"
                f"/v1/servers/{app.demo_server_ids[0]}:stop",
                flush=True,
            )
    await app.run_until_signal()
    return 0


async def _stop(args: argparse.Namespace) -> int:
    import grpc

    from gateway.client import describe_update, stop_server, update_json

    async with grpc.aio.insecure_channel(args.target) as channel:
        try:
            async for update in stop_server(
                channel,
                args.server_id,
                account_id=args.account,
                region=args.region,
                timeout=args.timeout,
            ):
                print(update_json(update) if args.json else describe_update(update), flush=True)
        except grpc.aio.AioRpcError as exc:
            print(f"transfer-gateway: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            from gateway.emulator.server import run_emulator

            settings = emulator_settings_from(args, host=args.host, port=args.port)
            return asyncio.run(run_emulator(settings))
        if args.command == "serve":
            return asyncio.run(_serve(_serve_settings(args)))
        if args.command == "stop":
            return asyncio.run(_stop(args))
        if args.command == "bench":
            from gateway import bench

            return asyncio.run(bench.main(args))
    except SettingsError as exc:
        print(f"transfer-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits

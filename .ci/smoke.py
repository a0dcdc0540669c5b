"""Smoke test of an install: every module imports, then one short end-to-end run of each face.

CI runs it in a venv holding the lowest versions pyproject.toml allows (constraints-min.txt),
so the declared floors are proven, not hoped for. It needs only the runtime dependencies (no
pytest): `python .ci/smoke.py`. With REDIS_URL answering it also stops a server on the Redis
budget. Exit 0 and a last line "smoke: N passed, 0 failed" when every check passed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from grpc_health.v1 import health_pb2, health_pb2_grpc

import gateway
from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import (
    AuthSettings,
    AwsKeySettings,
    CallerSettings,
    CoreSettings,
    EmulatorSettings,
    Settings,
    WatchSettings,
)
from gateway.config_file import with_secrets

TIMEOUT = 30.0


def _settings(**top: object) -> Settings:
    return Settings(
        grpc_port=0,
        http_port=0,
        demo_servers=0,
        emulator=EmulatorSettings(port=0, transition_seconds=0.2),
        core=CoreSettings(watch=WatchSettings(poll_initial=0.05, poll_max=0.2)),
        **top,  # type: ignore[arg-type]
    )


def check_imports() -> None:
    """Every module of the package imports (generated code checks its runtime versions)."""
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if not module.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(module.name)


def check_static_files() -> None:
    """The package data ships: the vendored uPlot (browser build, stylesheet, licence), and
    the bench --html page renders with its own script and stylesheet inline."""
    from gateway.faces import assets
    from gateway.tools import bench, report_html

    js, css = assets.uplot()
    assert js.startswith("/*! https://github.com/leeoniya/uPlot (v1."), js[:60]
    assert ".uplot" in css, css[:60]
    assert "MIT License" in assets.static_text(assets.UPLOT_LICENSE)
    empty = {"calls": {}, "totalCalls": 0, "throttled": 0, "faults": 0}
    report = bench.build_report([], total_seconds=1.0, upstream=empty, options=bench.LoadOptions())
    page = report_html.render(report)
    assert js in page, "uPlot is not inline"
    assert "function latencyChart" in page, "the page's own script is missing"


async def _grpc_stop(app: GatewayApp, server_id: str) -> list[pb.ServerStateUpdate]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call = pb_grpc.TransferGatewayStub(channel).StopServer(
            pb.StopServerRequest(server_id=server_id), timeout=TIMEOUT
        )
        return [update async for update in call]


async def check_grpc(app: GatewayApp) -> None:
    """StopServer streams to OFFLINE; health Check and List answer SERVING."""
    assert app.emulator is not None
    (server_id,) = app.emulator.create_servers(1)
    updates = await _grpc_stop(app, server_id)
    assert updates[-1].terminal, updates[-1]
    assert updates[-1].state == pb.SERVER_STATE_OFFLINE, updates[-1]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        listed = await health.List(health_pb2.HealthListRequest(), timeout=TIMEOUT)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert "transfer_gateway.v1.TransferGateway" in listed.statuses


async def check_http(app: GatewayApp) -> None:
    """POST :stop streams NDJSON to OFFLINE; /metrics, /openapi.json and the page answer."""
    assert app.emulator is not None
    (server_id,) = app.emulator.create_servers(1)
    base = f"http://127.0.0.1:{app.http_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:
        async with client.post(f"{base}/v1/servers/{server_id}:stop") as response:
            assert response.status == 200, response.status
            lines = [json.loads(raw) async for raw in response.content if raw.strip()]
        assert lines[-1]["result"]["state"] == "SERVER_STATE_OFFLINE", lines[-1]
        for path in ("/metrics", "/openapi.json", "/healthz", "/ui", "/ui/static/ui.js"):
            async with client.get(base + path) as response:
                assert response.status == 200, (path, response.status)


async def check_aws_face(app: GatewayApp) -> None:
    """aiobotocore's Transfer client stops and describes a server through the AWS face."""
    assert app.emulator is not None
    (server_id,) = app.emulator.create_servers(1)
    async with get_session().create_client(
        "transfer",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{app.http_port}",
        aws_access_key_id="000000000000",  # auth off: the key id is the account
        aws_secret_access_key="x",
    ) as client:
        await client.stop_server(ServerId=server_id)
        described = await client.describe_server(ServerId=server_id)
    assert described["Server"]["State"] in ("STOPPING", "OFFLINE"), described["Server"]


async def check_sigv4() -> None:
    """Auth on: a request signed with an issued key is verified (by botocore's own SigV4
    signer on the gateway's side) and served; a wrong secret is refused."""
    secret = uuid.uuid4().hex
    key = AwsKeySettings("AKIASMOKETEST0000001", "000000000000", secret_env="SMOKE_AWS_SECRET")
    caller = CallerSettings("smoke", token_sha256=None, accounts=("*",), aws_keys=(key,))
    settings = _settings(auth=AuthSettings(callers=(caller,)))
    app = GatewayApp(with_secrets(settings, {"SMOKE_AWS_SECRET": secret}))
    await app.start()
    try:
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)

        async def describe(secret_key: str) -> dict[str, Any]:
            async with get_session().create_client(
                "transfer",
                region_name="us-east-1",
                endpoint_url=f"http://127.0.0.1:{app.http_port}",
                aws_access_key_id=key.access_key_id,
                aws_secret_access_key=secret_key,
            ) as client:
                described: dict[str, Any] = await client.describe_server(ServerId=server_id)
                return described

        assert (await describe(secret))["Server"]["State"] == "ONLINE"
        refused: dict[str, Any] = {}
        try:
            await describe("not-the-secret")
        except ClientError as exc:
            refused = exc.response["Error"]
        assert refused.get("Code") == "InvalidSignatureException", refused
    finally:
        await app.stop(grace=0)


async def check_redis_budget() -> None:
    """limiter = redis: a stop paid from the Redis budget reaches OFFLINE."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    app = GatewayApp(
        _settings(limiter="redis", redis_url=url, redis_prefix=f"smoke-{uuid.uuid4()}")
    )
    await app.start()
    try:
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1)
        updates = await _grpc_stop(app, server_id)
        assert updates[-1].state == pb.SERVER_STATE_OFFLINE, updates[-1]
    finally:
        await app.stop(grace=0)


async def _redis_answers() -> bool:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def main() -> int:
    results: list[tuple[str, BaseException | None]] = []

    async def run(name: str, check: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(TIMEOUT * 2):
                await check()
        except BaseException as exc:  # every check runs, each failure is reported
            results.append((name, exc))
            print(f"smoke: FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            results.append((name, None))
            print(f"smoke: ok {name}", flush=True)

    async def imports() -> None:
        check_imports()

    async def static_files() -> None:
        check_static_files()

    await run("imports", imports)
    await run("static files", static_files)
    app = GatewayApp(_settings())
    await app.start()
    try:
        await run("grpc", lambda: check_grpc(app))
        await run("http", lambda: check_http(app))
        await run("aws face", lambda: check_aws_face(app))
    finally:
        await app.stop(grace=0)
    await run("sigv4", check_sigv4)
    if await _redis_answers():
        await run("redis budget", check_redis_budget)
    else:
        print("smoke: no Redis at REDIS_URL: the Redis budget is not checked", flush=True)
    failed = sum(1 for _, exc in results if exc is not None)
    print(f"smoke: {len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

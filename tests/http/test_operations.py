"""/healthz, /readyz and /metrics over loopback HTTP: probes and Prometheus exposition."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import GatewayApp
from tests.support.gateways import GatewayFactory, make_settings
from tests.support.http_helpers import base_url, ndjson_lines, next_line, reason_of
from tests.support.waiting import eventually

Sample = tuple[str, tuple[tuple[str, str], ...]]


async def _scrape(client: aiohttp.ClientSession, app: GatewayApp) -> dict[Sample, float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    async with client.get(f"{base_url(app)}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _calls(**labels: str) -> Sample:
    return ("transfer_gateway_calls_total", tuple(sorted(labels.items())))


class TestProbes:
    async def test_healthz_is_200(self, gateway: GatewayApp, client: aiohttp.ClientSession) -> None:
        """/healthz answers 200 while the process serves."""
        async with client.get(f"{base_url(gateway)}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"

    async def test_not_ready_before_start(self) -> None:
        """Until start() has every face listening, readiness says "starting"."""
        app = GatewayApp(make_settings())
        readiness = await app.readiness()
        assert not readiness.ready
        assert readiness.checks["phase"] == "starting"

    async def test_readyz_is_200_with_every_check_ok(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """/readyz is 200 once started, listing the phase and the upstream check."""
        async with client.get(f"{base_url(gateway)}/readyz") as response:
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "ready"
        assert body["checks"]["phase"] == "ok"
        assert body["checks"]["upstream"] == "ok"

    async def test_readyz_is_503_when_the_upstream_is_unreachable(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """With the (embedded) upstream gone, /readyz answers 503 naming the upstream check."""
        assert gateway.emulator is not None
        await gateway.emulator.close()
        async with client.get(f"{base_url(gateway)}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["status"] == "not ready"
        assert "unreachable" in body["checks"]["upstream"]

    async def test_a_registered_check_that_fails_makes_readyz_503(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Other parts extend readiness through app.ready_checks; one failing check is enough
        for 503, and a check that raises counts as failing rather than crashing the probe."""

        async def limiter_down() -> str | None:
            return "redis unreachable"

        async def broken() -> str | None:
            raise RuntimeError("bug in a check")

        gateway.ready_checks["limiter"] = limiter_down
        gateway.ready_checks["broken"] = broken
        async with client.get(f"{base_url(gateway)}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["checks"]["limiter"] == "redis unreachable"
        assert "RuntimeError" in body["checks"]["broken"]
        assert body["checks"]["upstream"] == "ok"

    async def test_readyz_is_503_while_draining_and_open_streams_end_shutting_down(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """From the start of stop(), /readyz answers 503 "draining" while open streams get
        their grace; then the open stream ends with an UNAVAILABLE SHUTTING_DOWN error line."""
        app = await gateway_factory(emulator={"transition_seconds": 60})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="STOPPING")
        watch = await client.get(f"{base_url(app)}/v1/servers/{server_id}:watch")
        try:
            await next_line(watch)
            stopping = asyncio.create_task(app.stop(grace=3))
            await asyncio.sleep(0)  # let stop() begin: it marks the app draining first
            async with client.get(f"{base_url(app)}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["checks"]["phase"] == "draining"
            lines = await asyncio.wait_for(ndjson_lines(watch), timeout=10)
        finally:
            watch.close()
        await stopping
        assert lines[-1]["error"]["code"] == 14
        assert reason_of(lines[-1]["error"]) == "SHUTTING_DOWN"


class TestMetrics:
    async def test_counters_move_as_calls_are_made(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """/metrics parses with prometheus-client's parser; a stop and a bad request move the
        call counters by transport, method and code, the upstream counter by operation, and
        the account's bucket shows the tokens they spent."""
        gateway = await gateway_factory(budget={"rate": 0.5, "burst": 20})
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        ok = _calls(transport="http", method="StopServer", code="OK")
        bad = _calls(transport="http", method="StopServer", code="INVALID_ARGUMENT")
        upstream = (
            "transfer_gateway_upstream_calls_total",
            (("operation", "StopServer"), ("outcome", "ok")),
        )
        before = await _scrape(client, gateway)
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as response:
            await ndjson_lines(response)
        async with client.post(f"{base_url(gateway)}/v1/servers/bad:stop") as response:
            assert response.status == 400
        after = await _scrape(client, gateway)
        assert after[ok] == before.get(ok, 0) + 1
        assert after[bad] == before.get(bad, 0) + 1
        assert after[upstream] == before.get(upstream, 0) + 1
        assert after[("transfer_gateway_budget_wait_seconds_count", ())] >= 1
        tokens = after[
            (
                "transfer_gateway_budget_tokens",
                (("account", "000000000000"), ("region", "us-east-1")),
            )
        ]
        assert 0 <= tokens <= 20 - 2  # the stop and at least one poll were paid from it

    async def test_gauges_show_open_streams_and_active_watchers_mid_stream(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """While an HTTP watch is open, open streams (http) and active watchers read 1; after
        it ends, both read 0."""
        app = await gateway_factory(emulator={"transition_seconds": 60})
        assert app.emulator is not None
        (server_id,) = app.emulator.create_servers(1, state="STOPPING")
        streams = ("transfer_gateway_open_streams", (("transport", "http"),))
        watchers = ("transfer_gateway_active_watchers", ())
        async with client.get(f"{base_url(app)}/v1/servers/{server_id}:watch") as response:
            await next_line(response)
            during = await _scrape(client, app)
        assert during[streams] == 1
        assert during[watchers] == 1
        assert during[("transfer_gateway_watched_servers", ())] == 1
        assert app.core is not None
        core = app.core
        await eventually(lambda: core.open_flights == 0)
        after = await _scrape(client, app)
        assert after[streams] == 0
        assert after[watchers] == 0

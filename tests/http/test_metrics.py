"""/metrics as Prometheus users expect it: call-latency histograms (to the end, to the first
update, to the terminal one), grpc_server_* for the gRPC face, process_* and python_* series,
and no `_created` series."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from tests.support.grpc_helpers import collect
from tests.support.http_helpers import base_url, ndjson_lines
from tests.support.waiting import eventually

SERVICE = "transfer_gateway.v1.TransferGateway"
MISSING = "s-0123456789abcdef0"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(client: aiohttp.ClientSession, app: GatewayApp) -> tuple[str, Samples]:
    async with client.get(f"{base_url(app)}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _grpc(method: str, **more: str) -> dict[str, str]:
    return {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": method, **more}


async def _grpc_stop(app: GatewayApp, server_id: str) -> tuple[int, grpc.StatusCode]:
    """Stop over gRPC: updates received and the status the call ended with."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call = pb_grpc.TransferGatewayStub(channel).StopServer(
            pb.StopServerRequest(server_id=server_id), timeout=30
        )
        updates, error = await collect(call)
    return len(updates), grpc.StatusCode.OK if error is None else error.code()


class TestMetrics:
    async def test_the_grpc_face_has_the_grpc_server_series(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """One stop that ends OK and one of an unknown server: started 2, handled 1 OK and
        1 NOT_FOUND, one message received per call, the updates sent counted, and a handling
        time for each."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        sent, code = await _grpc_stop(gateway, server_id)
        assert code == grpc.StatusCode.OK
        _, missing_code = await _grpc_stop(gateway, MISSING)
        assert missing_code == grpc.StatusCode.NOT_FOUND
        stop = _grpc("StopServer")
        samples: Samples = {}

        async def both_recorded() -> bool:
            # The client has the status before the server's handler has finished recording
            # the call; on a loaded machine a scrape right away can come in between.
            nonlocal samples
            _, samples = await _scrape(client, gateway)
            return _value(samples, "grpc_server_handling_seconds_count", **stop) >= 2

        await eventually(
            both_recorded,
            message=lambda: str({k: v for k, v in samples.items() if k[0].startswith("grpc_")}),
        )
        assert _value(samples, "grpc_server_started_total", **stop) == 2
        assert _value(samples, "grpc_server_handled_total", **stop, grpc_code="OK") == 1
        assert _value(samples, "grpc_server_handled_total", **stop, grpc_code="NOT_FOUND") == 1
        assert _value(samples, "grpc_server_msg_received_total", **stop) == 2
        assert _value(samples, "grpc_server_msg_sent_total", **stop) == sent
        assert _value(samples, "grpc_server_handling_seconds_count", **stop) == 2

    async def test_every_face_has_duration_first_update_and_terminal_histograms(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """An HTTP stop to OFFLINE is observed in the duration histogram (by code), the
        time-to-first-update histogram and the time-to-terminal one (by state); the first
        update comes no later than the terminal one."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        async with client.post(f"{base_url(gateway)}/v1/servers/{server_id}:stop") as response:
            assert response.status == 200
            await ndjson_lines(response)
        _, samples = await _scrape(client, gateway)
        http = {"transport": "http", "method": "StopServer"}
        name = "transfer_gateway_call_duration_seconds"
        assert _value(samples, f"{name}_count", **http, code="OK") == 1
        first = "transfer_gateway_call_first_update_seconds"
        terminal = "transfer_gateway_call_terminal_seconds"
        assert _value(samples, f"{first}_count", **http) == 1
        assert _value(samples, f"{terminal}_count", **http, state="OFFLINE") == 1
        assert _value(samples, f"{first}_sum", **http) <= _value(
            samples, f"{terminal}_sum", **http, state="OFFLINE"
        )
        # A bucket boundary a person can read: a stop on the fast test emulator is sub-minute.
        assert _value(samples, f"{name}_bucket", **http, code="OK", le="60.0") == 1

    async def test_process_and_python_series_and_no_created(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """The standard process_* and python_* collectors are registered, and no `_created`
        series doubles each counter and histogram."""
        text, samples = await _scrape(client, gateway)
        names = {name for name, _ in samples}
        for expected in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "python_info",
            "python_gc_objects_collected_total",
        ):
            assert expected in names
        assert not [n for n in names if n.endswith("_created")]
        assert "_created" not in text

    @pytest.mark.skipif(
        shutil.which("promtool") is None,
        reason="no promtool (Debian's prometheus package; .ci/run installs it)",
    )
    async def test_promtool_finds_nothing_to_lint(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Prometheus' own linter (`promtool check metrics`) passes the exposition after calls
        on every face, success and failure, have filled it."""
        assert gateway.emulator is not None
        (server_id,) = gateway.emulator.create_servers(1)
        await _grpc_stop(gateway, server_id)
        await _grpc_stop(gateway, MISSING)
        async with client.post(f"{base_url(gateway)}/v1/servers/{MISSING}:stop") as response:
            assert response.status == 404
        text, _ = await _scrape(client, gateway)
        promtool = await asyncio.create_subprocess_exec(
            "promtool",
            "check",
            "metrics",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(promtool.communicate(text.encode()), 60)
        assert promtool.returncode == 0, out.decode()

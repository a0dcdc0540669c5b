"""A job's SSE watch as EventSource sees it, over real loopback HTTP: `retry:`, ids
`<jobId>.<n>[.end]`, a reconnect numbered on from its Last-Event-ID, 204 once the job's stream
has ended (so EventSource stops re-fetching), and a bad Last-Event-ID a 400 naming the header."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import httpx
import pytest
import structlog
from httpx_sse import ServerSentEvent

from gateway.app import GatewayApp
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.http_helpers import base_url, detail_of, event_source

SSE = {"Accept": "text/event-stream"}
A, B = "111111111111", "222222222222"
ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


async def _create_job(
    client: aiohttp.ClientSession,
    app: GatewayApp,
    servers: list[str],
    *,
    account: str = "",
    headers: dict[str, str] | None = None,
) -> str:
    targets = [{"serverId": s, "accountId": account} for s in servers]
    body = {"operation": "JOB_OPERATION_STOP", "targets": targets}
    async with client.post(f"{base_url(app)}/v1/jobs", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        operation = await response.json()
    return str(operation["name"]).removeprefix("operations/")


def _job_state(event: ServerSentEvent) -> str:
    job: dict[str, Any] = event.json()["job"]
    return str(job["state"])


class TestIdsAndEnd:
    async def test_a_job_stream_has_retry_ids_and_ends_with_an_end_id_then_204(
        self,
        gateway: GatewayApp,
        client: aiohttp.ClientSession,
        httpx_client: httpx.AsyncClient,
    ) -> None:
        """Watching a stop job of two servers to its end: `retry: 2000` first, then every
        event `result` with id `<jobId>.1`, `.2`, ... and only the last (the job SUCCEEDED)
        marked `.end`; EventSource's reconnect with that id gets 204 and no body, so it
        stops instead of re-fetching the ended job for ever."""
        assert gateway.emulator is not None
        job_id = await _create_job(client, gateway, gateway.emulator.create_servers(2))
        url = f"{base_url(gateway)}/v1/jobs/{job_id}:watch"
        retry, events = await event_source(httpx_client, url)
        assert retry == 2000
        assert {e.event for e in events} == {"result"}
        assert [e.id for e in events[:-1]] == [f"{job_id}.{n}" for n in range(1, len(events))]
        assert events[-1].id == f"{job_id}.{len(events)}.end"
        assert _job_state(events[-1]) == "JOB_STATE_SUCCEEDED"

        ended = await httpx_client.get(url, headers={**SSE, "Last-Event-ID": events[-1].id})
        assert ended.status_code == 204
        assert ended.content == b""

    async def test_a_fresh_watch_of_an_ended_job_is_one_end_event(
        self,
        gateway: GatewayApp,
        client: aiohttp.ClientSession,
        httpx_client: httpx.AsyncClient,
    ) -> None:
        """A watch opened after the job ended gets the job once, as `<jobId>.1.end`."""
        assert gateway.emulator is not None
        job_id = await _create_job(client, gateway, gateway.emulator.create_servers(1))
        url = f"{base_url(gateway)}/v1/jobs/{job_id}:watch"
        await event_source(httpx_client, url)  # to the end
        _, events = await event_source(httpx_client, url)
        assert [e.id for e in events] == [f"{job_id}.1.end"]
        assert _job_state(events[0]) in ENDED


class TestResume:
    async def test_a_reconnect_numbers_on_from_its_last_event_id(
        self,
        gateway_factory: GatewayFactory,
        client: aiohttp.ClientSession,
        httpx_client: httpx.AsyncClient,
    ) -> None:
        """The first connection drops after the job's first event; the reconnect with that id
        gets the job as it is now, numbered from 2, on to the `.end` event of the ended job."""
        app = await gateway_factory(emulator={"transition_seconds": 1.0})
        assert app.emulator is not None
        job_id = await _create_job(client, app, app.emulator.create_servers(3))
        url = f"{base_url(app)}/v1/jobs/{job_id}:watch"
        _, first = await event_source(httpx_client, url, until=1)
        assert [e.id for e in first] == [f"{job_id}.1"]

        retry, resumed = await event_source(httpx_client, url, first[0].id)
        assert retry == 2000
        assert [e.id for e in resumed[:-1]] == [f"{job_id}.{n}" for n in range(2, len(resumed) + 1)]
        assert resumed[-1].id == f"{job_id}.{len(resumed) + 1}.end"
        assert _job_state(resumed[-1]) == "JOB_STATE_SUCCEEDED"
        assert resumed[-1].json()["job"]["counts"]["done"] == 3


class TestBadLastEventId:
    @pytest.mark.parametrize(
        ("make", "why"),
        [
            (lambda j: "garbage", "must be an id"),
            (lambda j: f"{j}.0", "must be an id"),
            (lambda j: f"{j}.1.later", "must be an id"),
            (lambda j: f"{j}.1.ONLINE", "must be an id"),  # a server stream's shape
            (lambda j: "job-0000000000000000.1", "another job"),
        ],
        ids=["garbage", "seq-0", "bad-suffix", "server-shape", "other-job"],
    )
    async def test_is_400_naming_the_header(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, make: Any, why: str
    ) -> None:
        """A Last-Event-ID this gateway did not send for this job is INVALID_ARGUMENT with a
        field violation on `Last-Event-ID`, as on a server's watch."""
        assert gateway.emulator is not None
        job_id = await _create_job(client, gateway, gateway.emulator.create_servers(1))
        url = f"{base_url(gateway)}/v1/jobs/{job_id}:watch"
        async with client.get(url, headers={**SSE, "Last-Event-ID": make(job_id)}) as response:
            assert response.status == 400
            status = await response.json()
        assert status["code"] == 3
        violations = detail_of(status, "google.rpc.BadRequest")["fieldViolations"]
        assert [v["field"] for v in violations] == ["Last-Event-ID"]
        assert why in violations[0]["description"]

    async def test_ndjson_ignores_it(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """NDJSON has no ids: its job watch is as it always was, whatever Last-Event-ID says."""
        assert gateway.emulator is not None
        job_id = await _create_job(client, gateway, gateway.emulator.create_servers(1))
        url = f"{base_url(gateway)}/v1/jobs/{job_id}:watch"
        async with client.get(url, headers={"Last-Event-ID": "garbage"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in (await response.read()).splitlines()]
        assert all(set(line) == {"result"} for line in lines)
        assert lines[-1]["result"]["job"]["state"] in ENDED


class TestTheEndIsACall:
    async def test_the_204_is_logged_and_counted(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """The 204 to a `.end` reconnect is a WatchJob call like any other: its call.end line
        (outcome OK) and the calls counter; an unknown job's `.end` reconnect is still 404."""
        assert gateway.emulator is not None
        job_id = await _create_job(client, gateway, gateway.emulator.create_servers(1))
        base = base_url(gateway)
        counted = gateway.metrics.calls.labels("http", "WatchJob", "OK")
        before = counted._value.get()
        with structlog.testing.capture_logs() as logs:
            headers = {**SSE, "Last-Event-ID": f"{job_id}.4.end"}
            async with client.get(f"{base}/v1/jobs/{job_id}:watch", headers=headers) as response:
                assert response.status == 204
        ends = [e for e in logs if e["event"] == "call.end" and e["method"] == "WatchJob"]
        assert [(e["face"], e["outcome"]) for e in ends] == [("http", "OK")]
        assert counted._value.get() == before + 1

        missing = "job-0000000000000000"
        headers = {**SSE, "Last-Event-ID": f"{missing}.4.end"}
        async with client.get(f"{base}/v1/jobs/{missing}:watch", headers=headers) as response:
            assert response.status == 404

    async def test_the_204_is_only_for_a_caller_who_may_watch_the_job(
        self, gateway_factory: GatewayFactory, client: aiohttp.ClientSession
    ) -> None:
        """With auth on, a caller allowed account A only gets 403 for a `.end` reconnect to a
        job on account B, as for its watch: the 204 says nothing of another's job."""
        auth = AuthSettings(
            callers=(
                CallerSettings("a-only", hash_token("a-only-token-5d1e"), (A,)),
                CallerSettings("ops", hash_token("ops-token-8c2f"), ("*",)),
            )
        )
        app = await gateway_factory(auth=auth)
        assert app.emulator is not None
        servers = app.emulator.create_servers(1, account=B)
        ops = {"Authorization": "Bearer ops-token-8c2f"}
        job_id = await _create_job(client, app, servers, account=B, headers=ops)
        url = f"{base_url(app)}/v1/jobs/{job_id}:watch"
        ended = {**SSE, "Last-Event-ID": f"{job_id}.3.end"}
        mine = {"Authorization": "Bearer a-only-token-5d1e"}
        async with client.get(url, headers={**ended, **mine}) as response:
            assert response.status == 403
        async with client.get(url, headers={**ended, **ops}) as response:
            assert response.status == 204

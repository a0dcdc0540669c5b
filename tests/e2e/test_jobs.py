"""Fleet jobs end to end over real sockets: gRPC, google.longrunning, HTTP and the CLI, with the
embedded emulator as upstream."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import json_format

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.app import GatewayApp
from gateway.config import AuthSettings, CallerSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory
from tests.support.grpc_helpers import error_info

A = "111111111111"
B = "222222222222"
REGION = "us-east-1"


async def _wait_for_job(stub: Any, job_id: str, *, limit: float = 120.0) -> pb.Job:
    """Poll GetJob until the job has ended (bounded)."""
    deadline = time.monotonic() + limit
    while True:
        job: pb.Job = await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)
        if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
            return job
        assert time.monotonic() < deadline, f"job still {pb.JobState.Name(job.state)}"
        await asyncio.sleep(0.2)


class TestTaggedFleetWithTheCli:
    async def test_200_servers_by_tag_across_two_accounts(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """`transfer-gateway jobs create stop --account A --account B --tag fleet=blue`: the
        200 tagged ONLINE servers end OFFLINE with exactly one StopServer each; tagged OFFLINE
        servers and untagged ones get none; the CLI prints progress lines and the summary."""
        app = await gateway_factory(
            budget={"rate": 200, "burst": 50}, emulator={"transition_seconds": 0.5}
        )
        emulator = app.emulator
        assert emulator is not None
        blue = {
            A: emulator.create_servers(100, account=A, tags={"fleet": "blue"}),
            B: emulator.create_servers(100, account=B, tags={"fleet": "blue"}),
        }
        offline_blue = emulator.create_servers(
            5, account=A, state="OFFLINE", tags={"fleet": "blue"}
        )
        untagged = emulator.create_servers(20, account=B, tags={"fleet": "red"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "jobs",
            "create",
            "stop",
            *("--account", A, "--account", B, "--tag", "fleet=blue"),
            *("--target", f"127.0.0.1:{app.grpc_port}"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        text = out.decode()
        assert proc.returncode == 0, (text, err.decode())
        assert text.startswith("created job-")
        progress = [line for line in text.splitlines() if " done" in line and "[" in line]
        assert progress, text
        assert "SUCCEEDED" in progress[-1]
        assert "job job-" in text
        assert "SUCCEEDED: 205 of 205 done, 0 failed" in text
        for account, ids in blue.items():
            for server_id in ids:
                assert emulator.server_state(server_id, account) == "OFFLINE"
                assert emulator.calls_to("StopServer", server_id) == 1
        assert all(emulator.calls_to("StopServer", s) == 0 for s in offline_blue)
        assert all(emulator.server_state(s, B) == "ONLINE" for s in untagged)
        assert all(emulator.calls_to("StopServer", s) == 0 for s in untagged)


class TestGrpcAndLongrunning:
    async def test_create_answers_an_operation_that_standard_polling_follows(
        self, gateway: GatewayApp
    ) -> None:
        """CreateJob answers a google.longrunning.Operation at once (metadata a Job);
        Operations/GetOperation on its name ends done with the Job as the response;
        ListOperations lists it; GetJob has each server DONE/OFFLINE."""
        assert gateway.emulator is not None
        ids = gateway.emulator.create_servers(5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub: Any = pb_grpc.TransferGatewayStub(channel)
            operations: Any = operations_pb2_grpc.OperationsStub(channel)
            created = await stub.CreateJob(
                pb.CreateJobRequest(
                    operation=pb.JOB_OPERATION_STOP,
                    targets=[pb.JobTarget(server_id=s) for s in ids],
                ),
                timeout=10,
            )
            assert created.name.startswith("operations/job-")
            meta = pb.Job()
            assert created.metadata.Unpack(meta)
            assert meta.counts.total == 5
            deadline = time.monotonic() + 60
            while True:
                polled = await operations.GetOperation(
                    operations_pb2.GetOperationRequest(name=created.name), timeout=10
                )
                if polled.done:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            result = pb.Job()
            assert polled.response.Unpack(result)
            assert result.state == pb.JOB_STATE_SUCCEEDED
            assert [s.status for s in result.servers] == [pb.JOB_SERVER_STATUS_DONE] * 5
            listed = await operations.ListOperations(
                operations_pb2.ListOperationsRequest(name="operations"), timeout=10
            )
            assert created.name in [o.name for o in listed.operations]
            job = await stub.GetJob(pb.GetJobRequest(job_id=meta.job_id), timeout=10)
        assert [s.state for s in job.servers] == [pb.SERVER_STATE_OFFLINE] * 5
        assert all(gateway.emulator.calls_to("StopServer", s) == 1 for s in ids)

    async def test_watch_streams_counts_until_the_job_ends(self, gateway: GatewayApp) -> None:
        """WatchJob: the job first, then one update per server change with the counts after
        it, the last one the job SUCCEEDED."""
        assert gateway.emulator is not None
        ids = gateway.emulator.create_servers(4)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub: Any = pb_grpc.TransferGatewayStub(channel)
            created = await stub.CreateJob(
                pb.CreateJobRequest(
                    operation=pb.JOB_OPERATION_STOP,
                    targets=[pb.JobTarget(server_id=s) for s in ids],
                ),
                timeout=10,
            )
            meta = pb.Job()
            created.metadata.Unpack(meta)
            updates = [u async for u in stub.WatchJob(pb.WatchJobRequest(job_id=meta.job_id))]
        assert not updates[0].HasField("server")
        assert updates[-1].job.state == pb.JOB_STATE_SUCCEEDED
        assert updates[-1].job.counts.done == 4
        done_counts = [u.job.counts.done for u in updates]
        assert done_counts == sorted(done_counts)
        assert {u.server.server_id for u in updates if u.HasField("server")} == set(ids)

    async def test_bad_requests_name_their_fields_and_unknown_jobs_are_not_found(
        self, gateway: GatewayApp, stub: pb_grpc.TransferGatewayStub
    ) -> None:
        """Targets and a selector together, a bad server id and no operation: one
        INVALID_ARGUMENT naming each; an unknown job id: NOT_FOUND JOB_NOT_FOUND; nothing
        reaches the emulator."""
        aio: Any = stub
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await aio.CreateJob(
                pb.CreateJobRequest(
                    targets=[pb.JobTarget(server_id="s-nope")],
                    selector=pb.JobSelector(account_ids=["1"]),
                ),
                timeout=10,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = error_info(bad.value).metadata["fields"]
        for name in ("operation", "targets", "targets[0].server_id", "account_ids[0]"):
            assert name in fields, fields
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await aio.GetJob(pb.GetJobRequest(job_id="job-0000000000000000"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(missing.value).reason == "JOB_NOT_FOUND"
        assert gateway.emulator is not None
        assert gateway.emulator.stats()["operations"] == {}


class TestHttpAndCancel:
    async def test_cancel_mid_job_requests_nothing_new_and_reports_the_rest(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """Over HTTP at 10/s: POST /v1/jobs (60 servers), then :cancel once some are done.
        No StopServer arrives after the cancel (beyond those already asked for as it came);
        every server requested ends OFFLINE and DONE, the others stay ONLINE and CANCELLED;
        GET /v1/jobs/{id} says CANCELLED with the counts; :watch NDJSON ends with it."""
        app = await gateway_factory(
            budget={"rate": 10, "burst": 1}, emulator={"transition_seconds": 1.0}
        )
        emulator = app.emulator
        assert emulator is not None
        ids = emulator.create_servers(60)
        base = f"http://127.0.0.1:{app.http_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            body = {"operation": "JOB_OPERATION_STOP", "targets": [{"serverId": s} for s in ids]}
            async with http.post(f"{base}/v1/jobs", json=body) as response:
                assert response.status == 200, await response.text()
                operation = await response.json()
            job_id = operation["name"].removeprefix("operations/")
            lines: list[dict[str, Any]] = []

            async def watch() -> None:
                async with http.get(f"{base}/v1/jobs/{job_id}:watch") as stream:
                    assert stream.status == 200
                    async for raw in stream.content:
                        if raw.strip():
                            lines.append(json.loads(raw))

            watcher = asyncio.create_task(watch())
            for _ in range(1200):  # bounded: 60 s
                if emulator.calls("StopServer") >= 10:
                    break
                await asyncio.sleep(0.05)
            async with http.post(f"{base}/v1/jobs/{job_id}:cancel", json={}) as response:
                assert response.status == 200
                assert (await response.json())["cancelRequested"] is True
            cancelled_at = time.monotonic()
            await asyncio.wait_for(watcher, 60)
            async with http.get(f"{base}/v1/jobs/{job_id}") as response:
                job = await response.json()
        assert job["state"] == "JOB_STATE_CANCELLED"
        late = [c for c in emulator.call_log("StopServer") if c["at"] > cancelled_at]
        assert len(late) <= app.settings.jobs.queued_per_account
        servers = job["servers"]
        done = [s for s in servers if s["status"] == "JOB_SERVER_STATUS_DONE"]
        cancelled = [s for s in servers if s["status"] == "JOB_SERVER_STATUS_CANCELLED"]
        assert len(done) + len(cancelled) == 60
        assert len(done) == emulator.calls("StopServer")
        assert 10 <= len(done) < 60
        assert all(emulator.server_state(s["serverId"]) == "OFFLINE" for s in done)
        assert all(emulator.server_state(s["serverId"]) == "ONLINE" for s in cancelled)
        assert job["counts"]["cancelled"] == len(cancelled)
        assert lines[-1]["result"]["job"]["state"] == "JOB_STATE_CANCELLED"

    async def test_http_bad_body_is_400_naming_camel_case_fields(self, gateway: GatewayApp) -> None:
        """POST /v1/jobs with a bad server id is 400 with a BadRequest naming
        targets[0].serverId (proto JSON's spelling); a body that is not the message is 400."""
        base = f"http://127.0.0.1:{gateway.http_port}"
        async with aiohttp.ClientSession() as http:
            body = {"operation": "JOB_OPERATION_STOP", "targets": [{"serverId": "nope"}]}
            async with http.post(f"{base}/v1/jobs", json=body) as response:
                assert response.status == 400
                status = await response.json()
            async with http.post(f"{base}/v1/jobs", json={"operation": 3.5}) as response:
                assert response.status == 400
        bad = [d for d in status["details"] if d["@type"].endswith("BadRequest")]
        assert bad[0]["fieldViolations"][0]["field"] == "targets[0].serverId"

    async def test_http_list_paging_refuses_what_is_not_an_int32_or_a_token_it_gave(
        self, gateway: GatewayApp
    ) -> None:
        """GET /v1/jobs: pageSize is one int32 as in the proto (beyond it, negative, not a
        number or given twice is 400 naming pageSize: schemathesis found all were taken); a
        pageToken the gateway never gave is 400 naming pageToken; both in HTTP's spelling."""
        base = f"http://127.0.0.1:{gateway.http_port}"
        named = []
        async with aiohttp.ClientSession() as http:
            for query in (
                "pageSize=2147483648",
                "pageSize=-1",
                "pageSize=x",
                "pageSize=1&pageSize=2",
                "pageToken=nope",
            ):
                async with http.get(f"{base}/v1/jobs?{query}") as response:
                    assert response.status == 400, query
                    status = await response.json()
                bad = [d for d in status["details"] if d["@type"].endswith("BadRequest")]
                named.append(bad[0]["fieldViolations"][0]["field"])
            async with http.get(f"{base}/v1/jobs?pageSize=2147483647") as response:
                assert response.status == 200
        assert named == ["pageSize", "pageSize", "pageSize", "pageSize", "pageToken"]

    async def test_list_and_get_in_proto_json(self, gateway: GatewayApp) -> None:
        """GET /v1/jobs lists the job (newest first, no servers), GET /v1/jobs/{id} has them;
        both are the proto messages in JSON."""
        assert gateway.emulator is not None
        ids = gateway.emulator.create_servers(2)
        base = f"http://127.0.0.1:{gateway.http_port}"
        async with aiohttp.ClientSession() as http:
            body = {"operation": "JOB_OPERATION_START", "targets": [{"serverId": s} for s in ids]}
            async with http.post(f"{base}/v1/jobs", json=body) as response:
                operation = await response.json()
            job_id = operation["name"].removeprefix("operations/")
            async with http.get(f"{base}/v1/jobs") as response:
                listed = await response.json()
            async with http.get(f"{base}/v1/jobs/{job_id}") as response:
                job = await response.json()
        assert listed["jobs"][0]["jobId"] == job_id
        assert listed["jobs"][0]["servers"] == []
        parsed = json_format.ParseDict(job, pb.Job())
        assert [s.server_id for s in parsed.servers] == ids
        assert parsed.operation == pb.JOB_OPERATION_START


TOKEN_A = "jobs-caller-a-token-0a9b"


class TestWhoMay:
    async def test_a_caller_acts_and_sees_only_its_accounts(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """A caller allowed account A only: CreateJob on B, StartServer on B and GetJob of a
        job on B are PERMISSION_DENIED; ListJobs shows A's jobs only; no token is
        UNAUTHENTICATED."""
        auth = AuthSettings(
            callers=(
                CallerSettings("a-only", hash_token(TOKEN_A), (A,)),
                CallerSettings("ops", hash_token("jobs-ops-token-0a9b1c"), ("*",)),
            )
        )
        app = await gateway_factory(auth=auth)
        assert app.emulator is not None
        (in_a,) = app.emulator.create_servers(1, account=A)
        (in_b,) = app.emulator.create_servers(1, account=B, state="OFFLINE")
        mine = (("authorization", f"Bearer {TOKEN_A}"),)
        ops = (("authorization", "Bearer jobs-ops-token-0a9b1c"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub: Any = pb_grpc.TransferGatewayStub(channel)
            on_b = pb.CreateJobRequest(
                operation=pb.JOB_OPERATION_STOP,
                targets=[pb.JobTarget(server_id=in_b, account_id=B)],
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.CreateJob(on_b, metadata=mine, timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.CreateJob(on_b, timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            start = stub.StartServer(
                pb.StartServerRequest(server_id=in_b, account_id=B), metadata=mine, timeout=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as start_denied:
                async for _ in start:
                    pass
            assert start_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            theirs = await stub.CreateJob(on_b, metadata=ops, timeout=10)
            ours = await stub.CreateJob(
                pb.CreateJobRequest(
                    operation=pb.JOB_OPERATION_STOP,
                    targets=[pb.JobTarget(server_id=in_a, account_id=A)],
                ),
                metadata=mine,
                timeout=10,
            )
            their_id = theirs.name.removeprefix("operations/")
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await stub.GetJob(pb.GetJobRequest(job_id=their_id), metadata=mine, timeout=10)
            assert hidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
            listed = await stub.ListJobs(pb.ListJobsRequest(), metadata=mine, timeout=10)
        assert [j.name for j in listed.jobs] == [ours.name]
        assert app.emulator.calls("StartServer") == 0

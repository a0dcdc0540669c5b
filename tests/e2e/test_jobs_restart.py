"""A fleet job survives SIGKILL of its gateway: real `serve` and `emulator` processes, the job
in the SQLite file, `serve` again, and still exactly one StopServer per server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiobotocore.session import get_session

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.support.redis_server import free_port

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "transfer-gateway")
ACCOUNTS = ("111111111111", "222222222222")
PER_ACCOUNT = 100
RATE = 20


def _start(argv: list[str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    """Start a process with its output in `log`; wait (60 s at most) for the line `ready`."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 60.0
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"{argv[1]} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return process


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    """A standalone emulator process: it outlives the gateway processes of the test."""
    port = free_port()
    process = _start(
        [
            *(CLI, "emulator", "--port", str(port), "--transition-seconds", "0.5"),
            *("--quota-rate", "1000", "--quota-burst", "1000"),
        ],
        tmp_path / "emulator.log",
        "emulator listening on",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _create_servers(url: str) -> dict[str, list[str]]:
    """PER_ACCOUNT servers tagged fleet=blue in each account, through the AWS API."""
    out: dict[str, list[str]] = {}
    for account in ACCOUNTS:
        async with get_session().create_client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id=account,
            aws_secret_access_key="x",
        ) as client:
            created = await asyncio.gather(
                *(
                    client.create_server(Tags=[{"Key": "fleet", "Value": "blue"}])
                    for _ in range(PER_ACCOUNT)
                )
            )
        out[account] = [c["ServerId"] for c in created]
    await asyncio.sleep(0.6)  # CreateServer's STARTING -> ONLINE
    return out


async def _server_calls(url: str) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/_emulator/server-calls", params={"operation": "StopServer"}) as answer,
    ):
        calls: dict[str, int] = (await answer.json())["calls"]
    return calls


async def _states(url: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for account in ACCOUNTS:
        async with get_session().create_client(
            "transfer",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id=account,
            aws_secret_access_key="x",
        ) as client:
            listed = await client.list_servers(MaxResults=1000)
        states.update({s["ServerId"]: s["State"] for s in listed["Servers"]})
    return states


def _serve(tmp_path: Path, url: str, grpc_port: int, name: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[jobs]\nsqlite_path = "{tmp_path / "jobs.sqlite3"}"\n'
        f"[core.budget]\nrate = {RATE}\nburst = 2\n"
    )
    return _start(
        [
            *(CLI, "serve", "--config", str(config), "--upstream", "emulator"),
            *("--upstream-endpoint", url, "--demo-servers", "0"),
            *("--grpc-port", str(grpc_port), "--http-port", str(free_port())),
            *("--log-level", "warning"),
        ],
        tmp_path / f"{name}.log",
        "transfer-gateway listening",
    )


async def _get(port: int, job_id: str) -> pb.Job:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = pb_grpc.TransferGatewayStub(channel)
        job: pb.Job = await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)
    return job


class TestSigkill:
    async def test_the_job_resumes_and_each_server_is_stopped_once(
        self, tmp_path: Path, emulator_url: str
    ) -> None:
        """200 servers selected by tag across 2 accounts; SIGKILL of `serve` once about a
        third are done; `serve` again on the same SQLite file: the job resumes by itself and
        SUCCEEDS, every server OFFLINE, StopServer per server still exactly 1."""
        servers = await _create_servers(emulator_url)
        every = [s for ids in servers.values() for s in ids]
        port = free_port()
        first = _serve(tmp_path, emulator_url, port, "first")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub: Any = pb_grpc.TransferGatewayStub(channel)
                operation = await stub.CreateJob(
                    pb.CreateJobRequest(
                        operation=pb.JOB_OPERATION_STOP,
                        selector=pb.JobSelector(account_ids=ACCOUNTS, tags={"fleet": "blue"}),
                    ),
                    timeout=10,
                )
            job_id = operation.name.removeprefix("operations/")
            deadline = time.monotonic() + 120
            while (await _get(port, job_id)).counts.done < len(every) // 3:
                assert time.monotonic() < deadline, "the job made no progress"
                await asyncio.sleep(0.1)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        before = await _server_calls(emulator_url)
        assert 0 < len(before) < len(every)
        assert set(before.values()) == {1}

        port = free_port()
        second = _serve(tmp_path, emulator_url, port, "second")
        try:
            deadline = time.monotonic() + 180
            while True:
                job = await _get(port, job_id)
                if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
                    break
                assert time.monotonic() < deadline, pb.JobState.Name(job.state)
                await asyncio.sleep(0.2)
        finally:
            second.terminate()
            second.wait(timeout=30)
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error_message
        assert job.counts.done == len(every)
        calls = await _server_calls(emulator_url)
        per_server = {key.rsplit("/", 1)[-1]: n for key, n in calls.items()}
        assert per_server == dict.fromkeys(every, 1)
        states = await _states(emulator_url)
        assert {states[s] for s in every} == {"OFFLINE"}

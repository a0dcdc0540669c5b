"""Contract: servers move through AWS's states on the emulator's clock, decided at request time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.emulator import Emulator
from tests.emulator.support import ClientFactory, EmulatorFactory, aws_error


class TestTiming:
    async def test_stop_takes_exactly_the_transition_time(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """STOPPING lasts transition_seconds by the injected clock, to the instant."""
        emulator = await make_emulator(transition_seconds=2.0)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        await client.stop_server(ServerId=server_id)
        await clock.advance(1.999)
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == "STOPPING"
        await clock.advance(0.001)
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == "OFFLINE"

    async def test_zero_transition_settles_at_once(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """transition_seconds 0: the next read already sees OFFLINE."""
        emulator = await make_emulator(transition_seconds=0.0)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        await client.stop_server(ServerId=server_id)
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == "OFFLINE"

    async def test_list_shows_the_same_clock_driven_states(
        self, client: Any, emulator: Emulator, clock: ManualClock
    ) -> None:
        """ListServers reports the state Describe would: STOPPING, then OFFLINE after the time."""
        (server_id,) = emulator.create_servers(1)
        await client.stop_server(ServerId=server_id)
        assert (await client.list_servers())["Servers"][0]["State"] == "STOPPING"
        await clock.advance(5.0)
        assert (await client.list_servers())["Servers"][0]["State"] == "OFFLINE"

    async def test_no_task_is_left_behind_by_transitions(
        self, client: Any, emulator: Emulator
    ) -> None:
        """A transition is data, not a timer: stopping servers starts no asyncio task."""
        ids = emulator.create_servers(20)
        # Open the keep-alive connection first: its handler task is the server's, not a server's.
        await client.list_servers(MaxResults=1)
        before = len(asyncio.all_tasks())
        for server_id in ids:
            await client.stop_server(ServerId=server_id)
        assert len(asyncio.all_tasks()) == before


class TestRefusals:
    @pytest.mark.parametrize("operation", ["stop_server", "start_server"])
    async def test_start_or_stop_while_stopping_is_invalid_request(
        self, client: Any, emulator: Emulator, operation: str
    ) -> None:
        """During STOPPING, StartServer and StopServer answer InvalidRequestException (400)."""
        (server_id,) = emulator.create_servers(1)
        await client.stop_server(ServerId=server_id)
        error = await aws_error(getattr(client, operation)(ServerId=server_id))
        assert error["Error"]["Code"] == "InvalidRequestException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "STOPPING" in error["Error"]["Message"]
        assert emulator.server_state(server_id) == "STOPPING"

    @pytest.mark.parametrize("operation", ["stop_server", "start_server"])
    async def test_start_or_stop_while_starting_is_invalid_request(
        self, client: Any, emulator: Emulator, operation: str
    ) -> None:
        """During STARTING (e.g. just created), Start and Stop answer InvalidRequestException."""
        server_id = (await client.create_server())["ServerId"]
        error = await aws_error(getattr(client, operation)(ServerId=server_id))
        assert error["Error"]["Code"] == "InvalidRequestException"
        assert "STARTING" in error["Error"]["Message"]

    async def test_start_on_online_is_a_noop(self, client: Any, emulator: Emulator) -> None:
        """StartServer on an ONLINE server answers 200 and changes nothing (AWS documents it)."""
        (server_id,) = emulator.create_servers(1)
        await client.start_server(ServerId=server_id)
        assert emulator.server_state(server_id) == "ONLINE"

    async def test_stop_on_offline_is_a_noop_by_default(
        self, client: Any, emulator: Emulator
    ) -> None:
        """stop_offline "noop": StopServer on OFFLINE answers 200 and the server stays OFFLINE."""
        (server_id,) = emulator.create_servers(1, state="OFFLINE")
        answer = await client.stop_server(ServerId=server_id)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert emulator.server_state(server_id) == "OFFLINE"

    async def test_stop_on_offline_can_be_an_error(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory
    ) -> None:
        """stop_offline "error": StopServer on OFFLINE answers InvalidRequestException."""
        emulator = await make_emulator(stop_offline="error")
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1, state="OFFLINE")
        error = await aws_error(client.stop_server(ServerId=server_id))
        assert error["Error"]["Code"] == "InvalidRequestException"
        assert "OFFLINE" in error["Error"]["Message"]
        assert emulator.server_state(server_id) == "OFFLINE"


class TestFailures:
    async def test_stop_can_end_stop_failed(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """stop_failure_rate 1.0: STOPPING, then STOP_FAILED once the time has passed."""
        emulator = await make_emulator(stop_failure_rate=1.0)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1)
        await client.stop_server(ServerId=server_id)
        assert emulator.server_state(server_id) == "STOPPING"
        await clock.advance(5.0)
        assert (await client.describe_server(ServerId=server_id))["Server"]["State"] == (
            "STOP_FAILED"
        )

    async def test_start_can_end_start_failed(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """The same rate makes a start end START_FAILED."""
        emulator = await make_emulator(stop_failure_rate=1.0)
        client = await make_client(emulator)
        (server_id,) = emulator.create_servers(1, state="OFFLINE")
        await client.start_server(ServerId=server_id)
        await clock.advance(5.0)
        assert emulator.server_state(server_id) == "START_FAILED"

    @pytest.mark.parametrize("failed", ["STOP_FAILED", "START_FAILED"])
    async def test_a_failed_server_can_be_started_again(
        self, client: Any, emulator: Emulator, clock: ManualClock, failed: str
    ) -> None:
        """StartServer on STOP_FAILED or START_FAILED begins a new start that ends ONLINE."""
        (server_id,) = emulator.create_servers(1, state=failed)
        await client.start_server(ServerId=server_id)
        assert emulator.server_state(server_id) == "STARTING"
        await clock.advance(5.0)
        assert emulator.server_state(server_id) == "ONLINE"

    async def test_a_stop_failed_server_can_be_stopped_again(
        self, client: Any, emulator: Emulator, clock: ManualClock
    ) -> None:
        """StopServer on STOP_FAILED retries the stop: STOPPING, then OFFLINE."""
        (server_id,) = emulator.create_servers(1, state="STOP_FAILED")
        await client.stop_server(ServerId=server_id)
        await clock.advance(5.0)
        assert emulator.server_state(server_id) == "OFFLINE"

    async def test_outcome_is_decided_when_requested(
        self, make_emulator: EmulatorFactory, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """With a 50% failure rate, reading a settled state again never changes it."""
        emulator = await make_emulator(stop_failure_rate=0.5)
        client = await make_client(emulator)
        ids = emulator.create_servers(20)
        for server_id in ids:
            await client.stop_server(ServerId=server_id)
        await clock.advance(5.0)
        first = [emulator.server_state(i) for i in ids]
        assert set(first) == {"OFFLINE", "STOP_FAILED"}
        await clock.advance(100.0)
        assert [emulator.server_state(i) for i in ids] == first

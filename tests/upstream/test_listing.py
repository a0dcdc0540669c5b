"""Polls read ListServers pages compactly (only id and state, and only of the servers watched),
and the AWS-compatible face still gets whole pages: both over a real socket to the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.config import EmulatorSettings
from gateway.domain import BucketKey, ServerState, Target
from gateway.emulator.server import Emulator
from gateway.upstream import listing
from gateway.upstream.aio import AioUpstream, ClientSettings, emulator_credentials

ACCOUNT = "000000000000"
KEY = BucketKey(ACCOUNT, "us-east-1")


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorSettings(port=0, transition_seconds=0.0))
    await emu.start()
    yield emu
    await emu.close()


@pytest.fixture
async def upstream(emulator: Emulator) -> AsyncIterator[AioUpstream]:
    up = AioUpstream(ClientSettings(endpoint_url=emulator.url), emulator_credentials)
    yield up
    await up.close()


class TestCompactListing:
    async def test_a_poll_sees_every_server_and_its_state_across_pages(
        self, emulator: Emulator, upstream: AioUpstream
    ) -> None:
        """1,500 servers over two pages: every id once, with the state the emulator holds
        (one of them stopped), and the token that leads to the second page."""
        ids = emulator.create_servers(1500, account=ACCOUNT, region=KEY.region)
        await upstream.stop_server(Target(ACCOUNT, KEY.region, ids[7]))
        first = await upstream.list_servers(KEY, None)
        assert first.next_token is not None
        second = await upstream.list_servers(KEY, first.next_token)
        assert second.next_token is None
        seen = {**first.states, **second.states}
        assert len(first.states) + len(second.states) == 1500
        assert set(seen) == set(ids)
        assert seen[ids[7]] is ServerState.OFFLINE
        assert seen[ids[8]] is ServerState.ONLINE
        assert first.request_id  # the request id still comes from botocore's metadata

    async def test_the_aws_face_still_gets_whole_pages(
        self, emulator: Emulator, upstream: AioUpstream
    ) -> None:
        """Outside a poll the hook leaves the answer to botocore: every member of a server."""
        emulator.create_servers(3, account=ACCOUNT, region=KEY.region)
        raw = await upstream.call_raw(KEY, "list_servers")
        server = raw["Servers"][0]
        assert {"Arn", "ServerId", "State"} <= set(server)
        assert len(server) > 2

    async def test_a_poll_page_carries_only_id_and_state(
        self, emulator: Emulator, upstream: AioUpstream
    ) -> None:
        """Within `compact()` the parsed page holds the two members a poll reads, no more:
        proof that botocore's parser did not walk the rest."""
        emulator.create_servers(3, account=ACCOUNT, region=KEY.region)
        with listing.compact():
            raw = await upstream.call_raw(KEY, "list_servers")
        assert [set(s) for s in raw["Servers"]] == [{"ServerId", "State"}] * 3
        assert raw["ResponseMetadata"]["HTTPStatusCode"] == 200

    async def test_a_poll_keeps_only_the_servers_it_watches(
        self, emulator: Emulator, upstream: AioUpstream
    ) -> None:
        """1,500 servers over two pages, 3 watched (one per page and one AWS does not know):
        each page holds the watched servers on it, with their states, and the same token as
        the whole page's."""
        ids = sorted(emulator.create_servers(1500, account=ACCOUNT, region=KEY.region))
        await upstream.stop_server(Target(ACCOUNT, KEY.region, ids[1200]))  # pages: id order
        wanted = frozenset({ids[3], ids[1200], "s-ffffffffffffffff0"})
        first = await upstream.list_servers(KEY, None, wanted)
        assert first.states == {ids[3]: ServerState.ONLINE}
        assert first.next_token == (await upstream.list_servers(KEY, None)).next_token
        second = await upstream.list_servers(KEY, first.next_token, wanted)
        assert second.states == {ids[1200]: ServerState.OFFLINE}
        assert second.next_token is None

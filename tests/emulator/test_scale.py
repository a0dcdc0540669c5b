"""Contract: a hundred thousand servers cost memory, not tasks or timers, and page cheaply."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.clock import ManualClock
from gateway.emulator import Emulator
from tests.emulator.support import ACCOUNT_A, ClientFactory

N = 100_000


class TestScale:
    async def test_100k_servers_without_tasks_paged_by_1000(
        self, emulator: Emulator, make_client: ClientFactory, clock: ManualClock
    ) -> None:
        """100,000 STOPPING servers: no task per server; 100 pages list each once; all settle."""
        client: Any = await make_client(emulator, ACCOUNT_A)
        await client.list_servers(MaxResults=1)  # the keep-alive connection's task exists now
        tasks_before = len(asyncio.all_tasks())

        created = emulator.create_servers(N, account=ACCOUNT_A, state="STOPPING")
        assert len(asyncio.all_tasks()) == tasks_before

        seen: set[str] = set()
        pages = 0
        async for page in client.get_paginator("list_servers").paginate(
            PaginationConfig={"PageSize": 1000}
        ):
            pages += 1
            states = {s["State"] for s in page["Servers"]}
            assert states == {"STOPPING"}
            seen.update(s["ServerId"] for s in page["Servers"])
        assert pages == N // 1000
        assert seen == set(created)
        assert len(asyncio.all_tasks()) == tasks_before

        # Time passing is all it takes: no timer fired, yet every server has settled.
        await clock.advance(5.0)
        first = await client.list_servers(MaxResults=1000)
        assert {s["State"] for s in first["Servers"]} == {"OFFLINE"}
        assert emulator.server_state(created[-1], ACCOUNT_A) == "OFFLINE"

"""Who the budget serves first when polls and stops wait together, pinned at the core.

What the code does NOW (limiting/queue.py `_Queue.pop_next`, docs/architecture.md): a poll
queued behind waiting stops goes first while polls have credit (the first poll of a busy spell
goes at once), then each stop served earns polls `poll_share` of a token, so polls get at most
that share while stops wait and never starve them. The "budget" helper owns that policy: when it
changes, this file changes with it.
"""

from __future__ import annotations

from gateway.domain import Stage
from tests.support.core import CoreFactory, core_settings, read, settle
from tests.support.fake_upstream import targets


class TestPollsAndStops:
    """Polls and stops of one account share one budget, served in a pinned order."""

    async def test_a_poll_goes_before_a_stop_queued_earlier(
        self, core_factory: CoreFactory
    ) -> None:
        """Budget 0.5/s, burst 1. A's StopServer takes the token at t; B's stop queues at t for
        the next token (t + 2 s); A's watcher queues its first poll about a second later. The
        token at t + 2 goes to the poll (polls first, on their credit) and B's StopServer waits
        for the one after: StopServer A at t, DescribeServer A at t + 2, StopServer B at
        t + 4."""
        rig = core_factory(core_settings(budget={"rate": 0.5, "burst": 1}))
        a, b = targets(2)
        for target in (a, b):
            rig.fake.add_server(target, stop_seconds=600)
        start = rig.clock.monotonic()
        streams = [read(rig.core.stop(a))]
        await settle()
        streams.append(read(rig.core.stop(b)))
        await settle()
        assert streams[1].stages == [Stage.WAITING_FOR_BUDGET]
        await rig.advance(5.0, step=0.05)
        order = [
            (call.operation, call.target, round(call.started - start, 6)) for call in rig.fake.calls
        ]
        assert order[:3] == [
            ("StopServer", a, 0.0),
            ("DescribeServer", a, 2.0),
            ("StopServer", b, 4.0),
        ]
        for stream in streams:
            await stream.cancel()

    async def test_polls_get_their_share_and_no_more(self, core_factory: CoreFactory) -> None:
        """31 stops waiting behind a 2/s budget while their watcher polls: over 10 s the polls
        get some tokens but no more than about their share (poll_share 0.2 here), the stops
        the rest: neither starves the other."""
        rig = core_factory(core_settings(budget={"rate": 2.0, "burst": 1, "poll_share": 0.2}))
        servers = list(targets(31))
        for target in servers:
            rig.fake.add_server(target, stop_seconds=600)
        streams = [read(rig.core.stop(t)) for t in servers]
        await rig.advance(10.0, step=0.05)
        ops = [call.operation for call in rig.fake.calls]
        stops = ops.count("StopServer")
        polls = len(ops) - stops  # DescribeServer or ListServers, as the watcher plans them
        assert polls >= 1, "the polls were starved"
        assert polls <= 0.2 * len(ops) + 1, ops
        assert stops >= 0.75 * len(ops), ops
        for stream in streams:
            await stream.cancel()

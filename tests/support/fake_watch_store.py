"""An in-memory WatchStore for core tests: the shared watch of several replicas in one process.

`FakeWatchBackend` is the shared store (what Redis is for real replicas), on the test's clock;
each replica gets its own `FakeWatchStore` view of it, as each real replica has its own Redis
client. The store's clock is the test clock plus `offset`, so a replica that forgot to convert
times (gateway.core.shared_watch.SharedTime) would compare numbers 5,000 s apart. `down` makes
every view raise StoreUnavailable (an outage); `kill` makes one view hang forever and hear
nothing, as a replica frozen or SIGKILLed looks to the others.

    backend = FakeWatchBackend(clock)
    store = backend.view()                 # one per replica
    backend.down = True                    # Redis unreachable for everybody
    store.kill()                           # this replica is gone
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.core.shared_watch import Inbox, Message, Seen, StoreUnavailable, Tick
from gateway.domain import BucketKey


@dataclass
class _AccountData:
    lease: tuple[str, float] | None = None  # holder, expiry (store time)
    interest: dict[tuple[str, str], float] = field(default_factory=dict)  # (replica, server)
    states: dict[str, Seen] = field(default_factory=dict)


class FakeWatchBackend:
    """The store shared by every replica of a test (see the module docstring)."""

    def __init__(self, clock: Clock, *, offset: float = 5000.0) -> None:
        self.clock = clock
        self.offset = offset
        self.down = False
        self.accounts: dict[BucketKey, _AccountData] = {}
        self.views: list[FakeWatchStore] = []
        #: Every message sent, in order (key, message).
        self.messages: list[tuple[BucketKey, Message]] = []
        self.ticks = 0

    def now(self) -> float:
        return self.clock.monotonic() + self.offset

    def view(self) -> FakeWatchStore:
        store = FakeWatchStore(self)
        self.views.append(store)
        return store

    def data(self, key: BucketKey) -> _AccountData:
        return self.accounts.setdefault(key, _AccountData())

    def holder(self, key: BucketKey) -> str | None:
        """Who holds `key`'s watch lease now (None: nobody, or it expired)."""
        lease = self.data(key).lease
        if lease is None or lease[1] <= self.now():
            return None
        return lease[0]

    def interest(self, key: BucketKey) -> set[tuple[str, str]]:
        """Unexpired (replica, server) interest of `key`."""
        now = self.now()
        return {member for member, until in self.data(key).interest.items() if until > now}

    def broadcast(self, key: BucketKey, message: Message) -> None:
        self.messages.append((key, message))
        loop = asyncio.get_running_loop()
        for view in self.views:
            if key in view.listening and view.inbox is not None and not view.dead:
                loop.call_soon(view.inbox, key, message)


class FakeWatchStore:
    """One replica's view of a FakeWatchBackend (implements WatchStore)."""

    def __init__(self, backend: FakeWatchBackend) -> None:
        self.backend = backend
        self.inbox: Inbox | None = None
        self.listening: set[BucketKey] = set()
        self.dead = False
        self.closed = False

    def kill(self) -> None:
        """From now on every call hangs and nothing is heard: the replica is gone."""
        self.dead = True

    async def _enter(self) -> None:
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        if self.dead:
            await asyncio.get_running_loop().create_future()  # never answers
        if self.backend.down:
            raise StoreUnavailable("the fake store is down")

    def set_inbox(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def listen(self, key: BucketKey) -> None:
        self.listening.add(key)

    def unlisten(self, key: BucketKey) -> None:
        self.listening.discard(key)

    async def tick(
        self,
        key: BucketKey,
        replica: str,
        *,
        watched: Collection[str],
        gone: Collection[str],
        want: bool,
        read: Collection[str],
        ttl: float,
    ) -> Tick:
        await self._enter()
        backend = self.backend
        backend.ticks += 1
        now = backend.now()
        data = backend.data(key)
        for server_id in watched:
            data.interest[(replica, server_id)] = now + ttl
        for server_id in gone:
            data.interest.pop((replica, server_id), None)
        data.interest = {m: until for m, until in data.interest.items() if until > now}
        holder = backend.holder(key)
        if want:
            if holder is None and data.interest:
                holder = replica
                data.lease = (replica, now + ttl)
            elif holder == replica:
                data.lease = (replica, now + ttl)
        elif holder == replica:
            data.lease, holder = None, None
        union: frozenset[str] = frozenset()
        if holder == replica:
            union = frozenset(server for _, server in data.interest)
            if not union:
                data.lease, holder = None, None
        left = 0.0 if holder is None or data.lease is None else data.lease[1] - now
        seen = [data.states[s] for s in read if s in data.states]
        return Tick(now, holder == replica, holder not in (None, replica), left, union, seen)

    async def publish(
        self, key: BucketKey, replica: str, seen: Sequence[Seen], dropped: Collection[str]
    ) -> None:
        await self._enter()
        data = self.backend.data(key)
        for item in seen:
            if item.state is not None:
                data.states[item.server_id] = item
        for server_id in dropped:
            data.states.pop(server_id, None)
        self.backend.broadcast(key, Message(replica, seen=tuple(seen)))

    async def send(self, key: BucketKey, message: Message) -> None:
        await self._enter()
        self.backend.broadcast(key, message)

    async def close(self) -> None:
        self.closed = True

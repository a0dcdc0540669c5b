"""One watch per account across replicas: one replica polls, every replica hears its states.

Each replica still runs its own `Watchers` (gateway/core/watching.py: the cadence, the poll
plan, the listeners); this module is the `PollSource` that decides whether this replica's
watcher of an account polls, and carries observations between replicas through a
`WatchStore` (Redis: gateway/core/watch_store.py; in memory for tests). Per (account, region):

- **interest**: every server watched here is registered in the store with an expiry this
  replica renews every tick (`lease / TICKS_PER_LEASE`), so a dead replica's interest ends by
  itself;
- **the lease**: one replica holds the account's watch lease (renewed by its ticks, released by
  the store when the interest of every replica has ended, or given back on drain). The holder
  watches the union of every replica's interest (a proxy subscription per server, so its own
  watcher's cadence and plan serve all) and publishes what it observes; the others skip their
  polls and hear the observations (Pub/Sub for speed, and the store's last observation of each
  server, read every tick, for a late joiner and any message lost);
- **the time base**: an observation carries when its poll began, and a flight ignores
  observations begun before its call was sent. Monotonic clocks of two processes share no
  origin, so observations travel in the store's time (Redis TIME), converted by `SharedTime`
  with bounds that err towards "too old" (see its docstring);
- **outages**: a store that does not answer turns the account "alone": this replica polls for
  its own callers again (under the limiter's redis_outage policy), and the next tick that
  goes through makes it share again.

See docs/replicas.md ("One watch per account")."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

from gateway.clock import Clock
from gateway.core.watching import Observation, Subscription, Watchers
from gateway.domain import BucketKey, ServerState, Target
from gateway.errors import ErrorKind, GatewayError

log = structlog.get_logger(__name__)

#: A replica ticks (renews its interest and the lease, reads the union or the last states)
#: this many times per lease: a holder must miss several ticks in a row (a loop stalled for
#: most of a lease) before another replica may take over.
TICKS_PER_LEASE = 5
#: How far apart, at most, a replica's monotonic clock and the store's clock may drift per
#: second between two measurements: NTP slews a clock by at most 500 ppm, and both may slew.
DRIFT = 1e-3
#: A close gives the store this long to take the replica's interest and lease back.
CLOSE_TIMEOUT = 1.0

#: What this replica does for an account: "pending" until the store first answered, "holder"
#: (polls for every replica), "follower" (hears the holder), "alone" (the store does not
#: answer: polls for its own callers).
Role = Literal["pending", "holder", "follower", "alone"]
ROLES: tuple[Role, ...] = ("pending", "holder", "follower", "alone")


class StoreUnavailable(Exception):
    """The shared store did not answer (Redis unreachable, timed out, loading)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """An observation as replicas share it: a server's state, or the error that ends its watch
    (`state` None, `error` an ErrorKind name), and when the poll began in the store's time (a
    lower bound, seconds)."""

    server_id: str
    state: ServerState | None
    at: float
    error: str = ""
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tick:
    """The store's answer to one replica's tick for one account."""

    #: The store's clock when it answered (seconds).
    time: float
    #: Whether this replica holds the account's watch lease now.
    holder: bool
    #: Whether another replica holds it.
    other_holder: bool
    #: Seconds until the lease expires (0: nobody holds it).
    lease_left: float
    #: Every replica's watched servers (only for the holder; empty otherwise).
    union: frozenset[str] = frozenset()
    #: The last observations of the servers asked for (those the holder published).
    seen: Sequence[Seen] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """What replicas tell each other about one account (the store broadcasts it)."""

    sender: str
    #: The holder's observations.
    seen: Sequence[Seen] = ()
    #: Servers whose change a follower has just requested: the holder polls soon.
    expected: Sequence[str] = ()
    #: A follower's interest changed: the holder reads the union again now.
    interest: bool = False
    #: The holder gave the lease back (draining): a follower may take it now.
    released: bool = False


#: Receives the messages of the accounts listened to (this replica's own included).
Inbox = Callable[[BucketKey, Message], None]


class WatchStore(Protocol):
    """Where the shared watch lives. Every method raises StoreUnavailable when the store does
    not answer; `ttl` is the lease (and interest) time in seconds."""

    def set_inbox(self, inbox: Inbox) -> None:
        """Messages of the accounts listened to go to `inbox`."""
        ...

    def listen(self, key: BucketKey) -> None:
        """Hear `key`'s messages (from now on, as soon as the store can)."""
        ...

    def unlisten(self, key: BucketKey) -> None: ...

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
        """In one atomic step: renew `replica`'s interest in `watched` (expiring after `ttl`),
        drop its interest in `gone`; when `want`, take the lease if free or renew it if held,
        else give it back if held; the holder gets the union of unexpired interest (and gives
        the lease back when it is empty); the last observations of `read`."""
        ...

    async def publish(
        self, key: BucketKey, replica: str, seen: Sequence[Seen], dropped: Collection[str]
    ) -> None:
        """Keep `seen` as the last observation of each server (forget those of `dropped`,
        servers nobody watches any more) and broadcast them to every listener."""
        ...

    async def send(self, key: BucketKey, message: Message) -> None:
        """Broadcast `message` to `key`'s listeners."""
        ...

    async def close(self) -> None: ...


class SharedTime:
    """This replica's monotonic clock against the store's clock, as an interval.

    A tick sent at local `sent` and answered at local `received` carries the store's time T,
    read at some local instant within [sent, received]: the offset (store - local) lies within
    [T - received, T - sent]. Each measurement is intersected with the last one widened by
    DRIFT per second since, so the interval is as tight as the best recent round trip. A
    conversion gives the earliest instant the other clock can have read: an observation is
    never taken as newer than it is, only (by at most a round trip or two) as older, which
    costs at worst one more poll before a flight accepts it. A step of the store's clock (an
    operator setting its time) shows as an empty intersection, and the interval starts again
    from the new measurement."""

    def __init__(self) -> None:
        self._lo = float("nan")
        self._hi = float("nan")
        self._at = 0.0

    @property
    def known(self) -> bool:
        return self._lo == self._lo  # not NaN

    def measured(self, sent: float, store_time: float, received: float) -> None:
        lo, hi = store_time - received, store_time - sent
        if self.known:
            grown = DRIFT * max(0.0, received - self._at)
            old_lo, old_hi = self._lo - grown, self._hi + grown
            if max(lo, old_lo) <= min(hi, old_hi):
                lo, hi = max(lo, old_lo), min(hi, old_hi)
        self._lo, self._hi, self._at = lo, hi, received

    def earliest_shared(self, local: float) -> float:
        """The earliest the store's clock can have read at local instant `local`."""
        if not self.known:
            return float("-inf")
        return local + self._lo - DRIFT * abs(local - self._at)

    def earliest_local(self, shared: float) -> float:
        """The earliest this replica's clock can have read at the store's instant `shared`."""
        if not self.known:
            return float("-inf")
        local = shared - self._hi
        return local - DRIFT * abs(local - self._at)


class _Publish:
    """The listener of a holder's proxy subscription: what this replica's watcher observes of
    a server another replica (or this one) watches goes to the store."""

    __slots__ = ("account", "server_id")

    def __init__(self, account: _Account, server_id: str) -> None:
        self.account = account
        self.server_id = server_id

    def __call__(self, item: Observation | GatewayError) -> None:
        self.account.outbox[self.server_id] = item
        self.account.wake.set()


class _Account:
    """One (account, region) as this replica shares its watch."""

    def __init__(self, key: BucketKey) -> None:
        self.key = key
        #: Servers watched here, by subscriptions (proxies not counted).
        self.local: Counter[str] = Counter()
        #: Servers no longer watched here, to take out of the store at the next tick.
        self.gone: set[str] = set()
        #: Local interest changed since the last tick (the holder must hear of it).
        self.changed = True
        self.role: Role = "pending"
        #: Holder: a subscription per server of the union, whose listener publishes.
        self.proxies: dict[str, Subscription] = {}
        #: Holder: observations to publish (the latest per server), servers to forget.
        self.outbox: dict[str, Observation | GatewayError] = {}
        self.dropped: set[str] = set()
        #: Follower: servers whose change was requested here, for the holder to hear.
        self.expected: set[str] = set()
        #: The store time of the last observation delivered per server (older ones are late).
        self.last_seen: dict[str, float] = {}
        #: When the next tick is due (local monotonic).
        self.next_tick = float("-inf")
        self.saw_other_holder = False
        #: The replica last heard publishing this account's observations (the holder).
        self.heard_from = ""
        self.listening = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        """Nothing left to do here: no interest, no lease, nothing unsent."""
        if self.local or self.role == "holder":
            return False
        return self.role == "alone" or not (self.changed or self.gone)


class SharedWatch:
    """The PollSource of replicas sharing one watch per account (see the module docstring)."""

    def __init__(
        self,
        store: WatchStore,
        replica: str,
        clock: Clock,
        *,
        lease_seconds: float = 5.0,
        on_received: Callable[[int], None] | None = None,
        on_takeover: Callable[[BucketKey], None] | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        if not replica or " " in replica:
            raise ValueError(f"a replica id must be non-empty, without spaces: {replica!r}")
        self.store = store
        self.replica = replica
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.tick_seconds = lease_seconds / TICKS_PER_LEASE
        self.time = SharedTime()
        self._on_received = on_received
        self._on_takeover = on_takeover
        self._watchers: Watchers | None = None
        self._accounts: dict[BucketKey, _Account] = {}
        self._closing = False
        #: Counts for metrics and tests.
        self.received = 0
        self.takeovers = 0
        store.set_inbox(self._on_message)

    # -- PollSource --------------------------------------------------------------------------
    def bind(self, watchers: Watchers) -> None:
        self._watchers = watchers

    def polls(self, key: BucketKey) -> bool:
        account = self._accounts.get(key)
        return account is None or account.role in ("holder", "alone")

    def joined(self, sub: Subscription) -> None:
        if isinstance(sub.listener, _Publish):
            return  # the holder's own proxy: not interest of this replica
        account = self._account(sub.target.bucket)
        server_id = sub.target.server_id
        account.local[server_id] += 1
        if account.local[server_id] == 1:
            account.gone.discard(server_id)
            account.changed = True
            account.wake.set()

    def left(self, sub: Subscription) -> None:
        if isinstance(sub.listener, _Publish):
            return
        account = self._accounts.get(sub.target.bucket)
        server_id = sub.target.server_id
        if account is None or account.local[server_id] <= 0:
            return
        account.local[server_id] -= 1
        if account.local[server_id] == 0:
            del account.local[server_id]
            account.last_seen.pop(server_id, None)
            account.gone.add(server_id)
            account.changed = True
            account.wake.set()

    def expected(self, target: Target) -> None:
        account = self._account(target.bucket)
        if account.role in ("follower", "pending"):
            account.expected.add(target.server_id)
            account.wake.set()

    async def close(self) -> None:
        """Drain: give every lease and all interest back (bounded), stop every task."""
        self._closing = True
        accounts = list(self._accounts.values())
        tasks = [a.task for a in accounts if a.task is not None]
        for account in accounts:
            account.wake.set()  # a task whose cancel got lost ends on the flag
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.gather(*(self._give_back(a) for a in accounts))
        self._accounts.clear()
        await self.store.close()

    # -- what metrics show -------------------------------------------------------------------
    def roles(self) -> dict[BucketKey, Role]:
        """What this replica does for each account it shares a watch of."""
        return {key: account.role for key, account in self._accounts.items()}

    def pollers(self) -> dict[BucketKey, tuple[Role, str]]:
        """This replica's role for each account and the replica that polls it: this one as
        holder or alone, else the holder last heard publishing ("" before any was heard)."""
        shown = {}
        for key, account in self._accounts.items():
            polling = account.role in ("holder", "alone")
            shown[key] = (account.role, self.replica if polling else account.heard_from)
        return shown

    # -- the account's task ------------------------------------------------------------------
    def _account(self, key: BucketKey) -> _Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = _Account(key)
        if account.task is None and not self._closing:
            account.task = asyncio.create_task(self._run(account), name=f"shared watch {key}")
        return account

    async def _run(self, account: _Account) -> None:
        try:
            while not self._closing:
                await self._wait(account)
                if self._closing:
                    break
                try:
                    await self._step(account)
                except StoreUnavailable as exc:
                    self._alone(account, exc)
                if account.idle() and not account.wake.is_set():
                    break
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it and poll alone rather than leave watches unserved
            log.exception("shared_watch.crashed", account=account.key.account_id)
            self._drop_proxies(account)
            account.role = "alone"
            if self._watchers is not None:
                self._watchers.poll_soon(account.key)
        finally:
            if account.task is asyncio.current_task():
                account.task = None
                if account.idle() and self._accounts.get(account.key) is account:
                    del self._accounts[account.key]
                    self.store.unlisten(account.key)

    async def _wait(self, account: _Account) -> None:
        """Until something is to be sent (wake) or the next tick is due."""
        while not account.wake.is_set():
            delay = account.next_tick - self.clock.monotonic()
            if delay <= 0:
                break
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            waker = asyncio.ensure_future(account.wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
                await asyncio.gather(sleeper, waker, return_exceptions=True)
        account.wake.clear()

    async def _step(self, account: _Account) -> None:
        key = account.key
        if not account.listening:
            self.store.listen(key)
            account.listening = True
        if account.role == "holder" and (account.outbox or account.dropped):
            await self._publish(account)
        changed = account.changed
        due = self.clock.monotonic() >= account.next_tick
        # While alone, the store is tried once a tick, however much the interest changes.
        if due or (changed and account.role != "alone"):
            await self._tick(account)
        if account.role in ("holder", "alone"):
            account.expected.clear()  # the holder's own watcher heard them (expect_change)
            return
        announce = changed and not account.changed
        if announce or account.expected:
            expected, account.expected = sorted(account.expected), set()
            await self.store.send(key, Message(self.replica, expected=expected, interest=announce))

    async def _tick(self, account: _Account) -> None:
        key = account.key
        gone, account.gone = account.gone, set()
        account.changed = False
        holding = account.role == "holder"
        sent = self.clock.monotonic()
        try:
            tick = await self.store.tick(
                key,
                self.replica,
                watched=list(account.local),
                gone=gone,
                want=bool(account.local) or holding,
                read=() if holding else list(account.local),
                ttl=self.lease_seconds,
            )
        except StoreUnavailable:
            account.gone |= gone - set(account.local)
            account.changed = True  # register everything again once the store is back
            raise
        received = self.clock.monotonic()
        self.time.measured(sent, tick.time, received)
        account.next_tick = received + self.tick_seconds
        was = account.role
        if tick.holder:
            account.role = "holder"
            if was != "holder":
                self._became_holder(account, was)
            self._sync_proxies(account, tick.union)
            return
        if was == "holder":
            if tick.other_holder:  # another replica took it: this one's loop stalled too long
                log.warning("shared_watch.lease_lost", account=key.account_id, region=key.region)
            else:  # every replica's interest ended: the store released it
                log.info("shared_watch.released", account=key.account_id, region=key.region)
            self._drop_proxies(account)
        account.role = "follower"
        if was == "alone":
            log.info("shared_watch.shared_again", account=key.account_id, region=key.region)
        if tick.other_holder:
            account.saw_other_holder = True
            if account.local and tick.lease_left > 0:
                # Try again the moment a dead holder's lease runs out, not up to a tick later.
                account.next_tick = min(account.next_tick, received + tick.lease_left + 0.01)
        self._deliver(account, tick.seen)

    def _became_holder(self, account: _Account, was: Role) -> None:
        key = account.key
        takeover = account.saw_other_holder
        if takeover:
            self.takeovers += 1
            if self._on_takeover is not None:
                self._on_takeover(key)
        log.info(
            "shared_watch.polling",
            account=key.account_id,
            region=key.region,
            replica=self.replica,
            takeover=takeover,
            was=was,
        )
        account.saw_other_holder = False
        account.last_seen.clear()
        if self._watchers is not None and was != "alone":
            # Polls were skipped while another replica made them: the first one is due now.
            self._watchers.poll_soon(key)

    def _sync_proxies(self, account: _Account, union: frozenset[str]) -> None:
        """The holder watches every server of the union: one proxy subscription each."""
        assert self._watchers is not None
        key = account.key
        for server_id in union - account.proxies.keys():
            target = Target(key.account_id, key.region, server_id)
            account.proxies[server_id] = self._watchers.subscribe(
                target, _Publish(account, server_id)
            )
        for server_id in account.proxies.keys() - union:
            account.proxies.pop(server_id).close()
            account.outbox.pop(server_id, None)
            account.dropped.add(server_id)

    def _drop_proxies(self, account: _Account) -> None:
        proxies, account.proxies = account.proxies, {}
        for sub in proxies.values():
            sub.close()
        account.outbox.clear()
        account.dropped.clear()

    async def _publish(self, account: _Account) -> None:
        outbox, account.outbox = account.outbox, {}
        dropped, account.dropped = account.dropped, set()
        seen: list[Seen] = []
        for server_id, item in outbox.items():
            if isinstance(item, Observation):
                seen.append(Seen(server_id, item.state, self.time.earliest_shared(item.at)))
            else:
                at = self.time.earliest_shared(self.clock.monotonic())
                seen.append(
                    Seen(server_id, None, at, item.kind.name, item.message, dict(item.metadata))
                )
        await self.store.publish(account.key, self.replica, seen, dropped)

    def _alone(self, account: _Account, exc: StoreUnavailable) -> None:
        key = account.key
        account.next_tick = self.clock.monotonic() + self.tick_seconds
        account.listening = False
        if account.role == "alone":
            return
        log.warning(
            "shared_watch.unreachable",
            account=key.account_id,
            region=key.region,
            error=str(exc),
            polling="alone, for this replica's callers",
        )
        was = account.role
        self._drop_proxies(account)
        account.role = "alone"
        account.expected.clear()
        if self._watchers is not None and was != "holder":
            self._watchers.poll_soon(key)

    async def _give_back(self, account: _Account) -> None:
        """Drain: this replica's interest and lease back to the store, and the followers told."""
        if account.role in ("alone", "pending") and not account.local:
            return
        try:
            tick = await self.store.tick(
                account.key,
                self.replica,
                watched=(),
                gone=set(account.local) | account.gone,
                want=False,
                read=(),
                ttl=self.lease_seconds,
            )
            if account.role == "holder" and not tick.holder:
                await self.store.send(account.key, Message(self.replica, released=True))
        except StoreUnavailable:
            pass  # the lease and the interest expire by themselves

    # -- messages from other replicas ----------------------------------------------------------
    def _on_message(self, key: BucketKey, message: Message) -> None:
        if message.sender == self.replica or self._closing:
            return
        account = self._accounts.get(key)
        if account is None or self._watchers is None:
            return
        if account.role == "holder":
            for server_id in message.expected:
                self._watchers.expect_change(Target(key.account_id, key.region, server_id))
            if message.interest:
                account.next_tick = float("-inf")  # read the union again now
                account.wake.set()
            return
        if message.seen:
            account.heard_from = message.sender
        if message.released and account.local:
            account.next_tick = float("-inf")  # the lease is free: try it now
            account.wake.set()
        if message.seen and account.role != "alone":
            self._deliver(account, message.seen)

    def _deliver(self, account: _Account, seen: Sequence[Seen]) -> None:
        """Observations the holder made, heard by this replica's listeners (each one once,
        in order: a late message older than what was delivered is dropped)."""
        if self._watchers is None:
            return
        key = account.key
        delivered = 0
        for item in seen:
            if item.server_id not in account.local:
                continue
            if item.at <= account.last_seen.get(item.server_id, float("-inf")):
                continue
            account.last_seen[item.server_id] = item.at
            target = Target(key.account_id, key.region, item.server_id)
            if item.state is None:
                kind = ErrorKind.__members__.get(item.error, ErrorKind.INTERNAL)
                self._watchers.deliver(target, GatewayError(kind, item.message, item.metadata))
            else:
                observation = Observation(item.state, self.time.earliest_local(item.at))
                self._watchers.deliver(target, observation)
            delivered += 1
        if delivered:
            self.received += delivered
            if self._on_received is not None:
                self._on_received(delivered)

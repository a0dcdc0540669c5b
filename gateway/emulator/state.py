"""The emulator's servers: a store per (account, region) and AWS's state machine, on the clock.

A transition is stored as (state, since, settles_to), with its outcome drawn when it is requested;
the current state is computed when someone reads it. No task or timer exists per server, so a
hundred thousand servers cost memory, not CPU.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.awsjson import (
    AwsError,
    Violations,
    invalid_next_token,
    invalid_request,
    resource_not_found,
)

OFFLINE: Final = "OFFLINE"
ONLINE: Final = "ONLINE"
STARTING: Final = "STARTING"
STOPPING: Final = "STOPPING"
START_FAILED: Final = "START_FAILED"
STOP_FAILED: Final = "STOP_FAILED"
STATES: Final = frozenset({OFFLINE, ONLINE, STARTING, STOPPING, START_FAILED, STOP_FAILED})
_TRANSITIONAL: Final = frozenset({STARTING, STOPPING})

_DOMAINS: Final = ("S3", "EFS")
_ENDPOINT_TYPES: Final = ("PUBLIC", "VPC", "VPC_ENDPOINT")
_IDENTITY_PROVIDERS: Final = (
    "SERVICE_MANAGED",
    "API_GATEWAY",
    "AWS_DIRECTORY_SERVICE",
    "AWS_LAMBDA",
)
_PROTOCOLS: Final = ("SFTP", "FTP", "FTPS", "AS2")
_DEFAULT_PROTOCOLS: Final = ("SFTP",)
_SECURITY_POLICY: Final = "TransferSecurityPolicy-2018-11"
#: Tags per resource, as AWS allows.
MAX_TAGS: Final = 50


class ServerRecord:
    """One server; `settles_to` is where a STARTING/STOPPING server lands once its time is up."""

    # Slots keep a record at 112 bytes (about 300 with its id and index entries): the store is
    # sized for 1e5 servers per account.
    __slots__ = (
        "domain",
        "endpoint_type",
        "identity_provider_type",
        "logging_role",
        "protocols",
        "server_id",
        "settles_to",
        "since",
        "state",
        "tags",
    )

    def __init__(self, server_id: str, state: str, since: float, settles_to: str) -> None:
        self.server_id = server_id
        self.state = state
        self.since = since
        self.settles_to = settles_to
        # Defaults are shared constants so a bulk-created server stores no per-server copies.
        self.domain = "S3"
        self.endpoint_type = "PUBLIC"
        self.identity_provider_type = "SERVICE_MANAGED"
        self.protocols: tuple[str, ...] = _DEFAULT_PROTOCOLS
        self.logging_role: str | None = None
        self.tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The settings the state machine obeys."""

    transition_seconds: float
    failure_rate: float
    stop_offline: Literal["noop", "error"]


class _Scope:
    """The servers of one account in one region, with their ids kept sorted for stable paging."""

    __slots__ = ("ids", "servers")

    def __init__(self) -> None:
        self.servers: dict[str, ServerRecord] = {}
        self.ids: list[str] = []


class ServerStore:
    """All servers, by (account, region); one account or region never sees another's servers."""

    def __init__(
        self, behaviour: Behaviour, clock: Callable[[], float], rng: random.Random
    ) -> None:
        self._behaviour = behaviour
        self._clock = clock
        self._rng = rng
        self._scopes: dict[tuple[str, str], _Scope] = {}
        self._all_ids: set[str] = set()  # ids are unique across accounts, as on AWS

    # ---- reading -------------------------------------------------------------------------

    def state_of(self, record: ServerRecord) -> str:
        """The state now; a finished transition is written back so later reads are plain."""
        if record.state in _TRANSITIONAL and (
            self._clock() - record.since >= self._behaviour.transition_seconds
        ):
            record.state = record.settles_to
        return record.state

    def get(self, account: str, region: str, server_id: str) -> ServerRecord:
        scope = self._scopes.get((account, region))
        record = scope.servers.get(server_id) if scope is not None else None
        if record is None:
            raise resource_not_found(server_id)
        return record

    def page(
        self, account: str, region: str, limit: int, token: str | None
    ) -> tuple[list[ServerRecord], str | None]:
        """Up to `limit` servers after the token's position, and the token for the next page.

        The token holds the last id returned (not an offset), so servers created or deleted
        between pages neither repeat nor shift the rest.
        """
        scope = self._scopes.get((account, region))
        after = _decode_token(token, account, region) if token is not None else None
        if scope is None:
            return [], None
        start = bisect.bisect_right(scope.ids, after) if after is not None else 0
        ids = scope.ids[start : start + limit]
        records = [scope.servers[i] for i in ids]
        more = start + limit < len(scope.ids)
        return records, (_encode_token(ids[-1], account, region) if more and ids else None)

    def count(self, account: str, region: str) -> int:
        scope = self._scopes.get((account, region))
        return 0 if scope is None else len(scope.ids)

    # ---- writing -------------------------------------------------------------------------

    def create(self, account: str, region: str, attributes: dict[str, Any]) -> ServerRecord:
        """A new server, STARTING until the transition time has passed, then ONLINE."""
        record = self._new_record(STARTING, ONLINE)
        _apply_attributes(record, attributes)
        scope = self._scope(account, region)
        scope.servers[record.server_id] = record
        bisect.insort(scope.ids, record.server_id)
        return record

    def create_many(
        self,
        n: int,
        account: str,
        region: str,
        state: str,
        tags: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """`n` servers in `state` at once (each with `tags`); one sort instead of `n` ordered
        inserts."""
        if state not in STATES:
            raise ValueError(f"state must be one of {sorted(STATES)}, not {state!r}")
        settles_to = {STARTING: ONLINE, STOPPING: OFFLINE}.get(state, state)
        scope = self._scope(account, region)
        created = [self._new_record(state, settles_to) for _ in range(n)]
        shared = tuple(tags)  # one tuple for all: a bulk-created server stores no copy
        for record in created:
            record.tags = shared
            scope.servers[record.server_id] = record
        scope.ids.extend(r.server_id for r in created)
        scope.ids.sort()
        return [r.server_id for r in created]

    def delete(self, account: str, region: str, server_id: str) -> None:
        self.get(account, region, server_id)
        scope = self._scopes[(account, region)]
        del scope.servers[server_id]
        del scope.ids[bisect.bisect_left(scope.ids, server_id)]
        self._all_ids.discard(server_id)

    def start(self, account: str, region: str, server_id: str) -> None:
        """OFFLINE or a failed state -> STARTING -> ONLINE (or START_FAILED); ONLINE is a no-op."""
        record = self.get(account, region, server_id)
        state = self.state_of(record)
        if state == ONLINE:
            return  # documented by AWS: "no impact on a server that is already ONLINE"
        if state in _TRANSITIONAL:
            raise _busy(server_id, state, "started")
        self._begin(record, STARTING, ONLINE, START_FAILED)

    def stop(self, account: str, region: str, server_id: str) -> None:
        """ONLINE or a failed state -> STOPPING -> OFFLINE (or STOP_FAILED)."""
        record = self.get(account, region, server_id)
        state = self.state_of(record)
        if state == OFFLINE:
            if self._behaviour.stop_offline == "error":
                raise invalid_request(f"Server {server_id} is already OFFLINE")
            return
        if state in _TRANSITIONAL:
            raise _busy(server_id, state, "stopped")
        # STOP_FAILED and START_FAILED may be stopped again: that is how an operator retries.
        self._begin(record, STOPPING, OFFLINE, STOP_FAILED)

    # ---- tags ----------------------------------------------------------------------------

    def by_arn(self, account: str, region: str, arn: object) -> ServerRecord:
        """The server an ARN names, in the caller's account and region (another account's ARN
        is ResourceNotFoundException, as on AWS)."""
        if not isinstance(arn, str) or not 20 <= len(arn) <= 1600:
            problems = Violations()
            problems.add("Arn", arn, "must have length between 20 and 1600")
            problems.raise_if_any()
        assert isinstance(arn, str)
        prefix = f"arn:aws:transfer:{region}:{account}:server/"
        if not arn.startswith(prefix):
            raise AwsError(
                "ResourceNotFoundException",
                f"Unknown resource: {arn}",
                fields={"Resource": arn, "ResourceType": "Server"},
            )
        return self.get(account, region, arn.removeprefix(prefix))

    def tag(self, record: ServerRecord, tags: object) -> None:
        """TagResource: add or overwrite tags, at most MAX_TAGS per resource (AWS's limit)."""
        problems = Violations()
        given = _tags(problems, tags)
        if not given and not problems.has_any():
            problems.add("Tags", tags, "must have length between 1 and 50")
        problems.raise_if_any()
        merged = dict(record.tags)
        merged.update(given)
        if len(merged) > MAX_TAGS:
            raise invalid_request(f"A resource may have at most {MAX_TAGS} tags")
        record.tags = tuple(merged.items())

    def untag(self, record: ServerRecord, keys: object) -> None:
        """UntagResource: remove the tags with these keys (a key not there is no error)."""
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            problems = Violations()
            problems.add("TagKeys", keys, "must be a list of 1 to 50 strings")
            problems.raise_if_any()
        assert isinstance(keys, list)
        record.tags = tuple((k, v) for k, v in record.tags if k not in set(keys))

    # ---- internals -----------------------------------------------------------------------

    def _begin(self, record: ServerRecord, via: str, success: str, failure: str) -> None:
        # The outcome is drawn now, at request time, so reads stay pure functions of the clock.
        failed = (
            self._behaviour.failure_rate > 0 and self._rng.random() < self._behaviour.failure_rate
        )
        record.state = via
        record.since = self._clock()
        record.settles_to = failure if failed else success

    def _new_record(self, state: str, settles_to: str) -> ServerRecord:
        while True:
            server_id = f"s-{self._rng.getrandbits(68):017x}"
            if server_id not in self._all_ids:
                break
        self._all_ids.add(server_id)
        return ServerRecord(server_id, state, self._clock(), settles_to)

    def _scope(self, account: str, region: str) -> _Scope:
        scope = self._scopes.get((account, region))
        if scope is None:
            scope = self._scopes[(account, region)] = _Scope()
        return scope


def arn_of(record: ServerRecord, account: str, region: str) -> str:
    return f"arn:aws:transfer:{region}:{account}:server/{record.server_id}"


def described(
    store: ServerStore, record: ServerRecord, account: str, region: str
) -> dict[str, Any]:
    """DescribeServer's `Server` (a DescribedServer): what AWS returns for a plain SFTP server."""
    out: dict[str, Any] = {
        "Arn": arn_of(record, account, region),
        "Domain": record.domain,
        "EndpointType": record.endpoint_type,
        "IdentityProviderType": record.identity_provider_type,
        "Protocols": list(record.protocols),
        "SecurityPolicyName": _SECURITY_POLICY,
        "ServerId": record.server_id,
        "State": store.state_of(record),
        "UserCount": 0,
    }
    if record.logging_role is not None:
        out["LoggingRole"] = record.logging_role
    if record.tags:
        out["Tags"] = [{"Key": k, "Value": v} for k, v in record.tags]
    return out


def listed(
    store: ServerStore, records: Iterable[ServerRecord], account: str, region: str
) -> list[dict[str, Any]]:
    """ListServers' items (ListedServer): the model requires only Arn; AWS sends these too."""
    prefix = f"arn:aws:transfer:{region}:{account}:server/"
    out = []
    for record in records:
        item: dict[str, Any] = {
            "Arn": prefix + record.server_id,
            "Domain": record.domain,
            "EndpointType": record.endpoint_type,
            "IdentityProviderType": record.identity_provider_type,
            "ServerId": record.server_id,
            "State": store.state_of(record),
            "UserCount": 0,
        }
        if record.logging_role is not None:
            item["LoggingRole"] = record.logging_role
        out.append(item)
    return out


def _busy(server_id: str, state: str, verb: str) -> AwsError:
    return invalid_request(f"Server {server_id} is {state} and cannot be {verb} until it settles")


def _apply_attributes(record: ServerRecord, attributes: dict[str, Any]) -> None:
    """CreateServer members that Describe/List show; other members are accepted and ignored."""
    problems = Violations()
    domain = _enum(problems, attributes, "Domain", _DOMAINS)
    endpoint_type = _enum(problems, attributes, "EndpointType", _ENDPOINT_TYPES)
    idp = _enum(problems, attributes, "IdentityProviderType", _IDENTITY_PROVIDERS)
    protocols = _protocols(problems, attributes.get("Protocols"))
    role = attributes.get("LoggingRole")
    if role is not None and not isinstance(role, str):
        problems.add("LoggingRole", role, "must be a string")
    tags = _tags(problems, attributes.get("Tags"))
    problems.raise_if_any()
    if domain is not None:
        record.domain = domain
    if endpoint_type is not None:
        record.endpoint_type = endpoint_type
    if idp is not None:
        record.identity_provider_type = idp
    if protocols is not None:
        record.protocols = protocols
    if isinstance(role, str) and role:
        record.logging_role = role
    record.tags = tags


def _enum(
    problems: Violations, attributes: dict[str, Any], field: str, allowed: Sequence[str]
) -> str | None:
    value = attributes.get(field)
    if value is None:
        return None
    if value not in allowed:
        problems.add(field, value, f"must satisfy enum value set: [{', '.join(allowed)}]")
        return None
    return str(value)


def _protocols(problems: Violations, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        problems.add("Protocols", value, "must be a list of 1 to 4 protocols")
        return None
    if any(p not in _PROTOCOLS for p in value):
        problems.add("Protocols", value, f"must satisfy enum value set: [{', '.join(_PROTOCOLS)}]")
        return None
    return tuple(value)


def _tags(problems: Violations, value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)
        for t in value
    ):
        problems.add("Tags", value, "must be a list of {Key, Value} strings")
        return ()
    if len(value) > MAX_TAGS:
        problems.add("Tags", f"{len(value)} tags", f"must have length between 1 and {MAX_TAGS}")
        return ()
    return tuple(dict((t["Key"], t["Value"]) for t in value).items())


def _encode_token(after: str, account: str, region: str) -> str:
    # Bound to the account and region so a token cannot page through someone else's servers.
    raw = f"v1|{account}|{region}|{after}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, account: str, region: str) -> str:
    try:
        version, t_account, t_region, after = (
            base64.urlsafe_b64decode(token.encode()).decode().split("|")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise invalid_next_token() from exc
    if (version, t_account, t_region) != ("v1", account, region):
        raise invalid_next_token()
    return after

"""The Upstream protocol and its aiobotocore implementation: one client per (account, region)."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any, Protocol

import aiobotocore
import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from gateway import __version__
from gateway.domain import BucketKey, ServerState, Target
from gateway.errors import ErrorKind, UpstreamError
from gateway.upstream import listing
from gateway.upstream.errors import from_client_error

#: ListTagsForResource pages read at most, for one server (AWS allows 50 tags: one page).
_MAX_TAG_PAGES = 10

#: The User-Agent of every call, made once. Without it botocore builds its own from about 16
#: parts twice a request (about a tenth of a call's CPU in the overhead benchmark), to add the
#: per-request feature codes AWS reads for its own statistics. `Config.user_agent` is botocore's
#: documented override; botocore appends the session's extra part (botocore/<version>).
USER_AGENT = (
    f"transfer-gateway/{__version__} aiobotocore/{aiobotocore.__version__}"
    f" Python/{platform.python_version()} {platform.system()}/{platform.release()}"
)


def server_arn(target: Target) -> str:
    """The server's ARN, in the partition of its region (aws, aws-cn, aws-us-gov)."""
    partition = "aws"
    if target.region.startswith("cn-"):
        partition = "aws-cn"
    elif target.region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return f"arn:{partition}:transfer:{target.region}:{target.account_id}:server/{target.server_id}"


@dataclass(frozen=True)
class Page:
    """One ListServers page: the state of each server on it, and the token of the next page."""

    states: dict[str, ServerState]
    next_token: str | None
    request_id: str = ""


class Upstream(Protocol):
    """The Transfer Family calls the core makes. Errors are UpstreamError (mapped by the error
    table, with the AWS code, request id and RetryAfterSeconds where AWS gave them).

    A change (StopServer, and each operation of gateway.core.operation after it) is one method
    taking the Target and returning the AWS request id; reads come typed for the watchers and
    raw (`call_raw`) for callers who asked for AWS's own answer."""

    async def stop_server(self, target: Target) -> str:
        """StopServer; returns the AWS request id."""
        ...

    async def start_server(self, target: Target) -> str:
        """StartServer; returns the AWS request id (a no-op on an ONLINE server, says AWS)."""
        ...

    async def describe_server(self, target: Target) -> ServerState: ...

    async def list_tags(self, target: Target) -> dict[str, str]:
        """ListTagsForResource (every page): the server's tags."""
        ...

    async def list_servers(
        self, key: BucketKey, next_token: str | None, wanted: Set[str] | None = None
    ) -> Page:
        """One ListServers page; with `wanted`, the page's states may hold only those servers
        (a poll needs no other: reading fewer costs less CPU). Its token is the same."""
        ...

    async def call_raw(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        """Any Transfer operation by botocore's snake_case name, its parsed response as is."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ClientSettings:
    """How the aiobotocore clients are made."""

    endpoint_url: str | None  # None: AWS's own endpoints
    max_pool_connections: int = 64
    connect_timeout: float = 5.0
    read_timeout: float = 15.0


#: Returns static credentials (access key, secret, session token) for a bucket, or None to use
#: the session's default chain. The emulator maps a 12-digit access key id to that account.
CredentialsFor = Callable[[BucketKey], tuple[str, str, str | None] | None]


#: The aiobotocore session whose credentials act on an account (an assumed role), or None for
#: the upstream's own session (see gateway.upstream.credentials.AccountSessions).
SessionFor = Callable[[str], AioSession | None]


@dataclass(eq=False)
class _Client:
    """One (account, region)'s client: made once (single flight), closed when released."""

    ready: asyncio.Future[Any]
    #: create_client's context manager, whose exit closes the client and its connections.
    context: Any = None
    #: Calls using it now: a client is never closed under a call.
    calls: int = 0


def emulator_credentials(key: BucketKey) -> tuple[str, str, str | None]:
    """Credentials the emulator reads as `key.account_id` (its 12-digit access key convention)."""
    return (key.account_id, "emulator-secret", None)


class AioUpstream:
    """Transfer Family through aiobotocore. Clients are made once per (account, region) and
    reused: making one costs ~100 ms. botocore's own retries are off (total_max_attempts=1)
    because the gateway retries deliberately, paying each attempt from the account's budget.

    A client also costs about 1 MB and its pooled sockets, so an idle one is closed on
    `release` (gateway.core.pairs decides when) and made again by the next call."""

    def __init__(
        self,
        settings: ClientSettings,
        credentials_for: CredentialsFor | None = None,
        session: AioSession | None = None,
        session_for: SessionFor | None = None,
    ) -> None:
        self._settings = settings
        self._credentials_for = credentials_for
        self._session_for = session_for
        self._session = session or get_session()
        self._clients: dict[BucketKey, _Client] = {}
        self._config = AioConfig(
            max_pool_connections=settings.max_pool_connections,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent=USER_AGENT,
        )

    def _entry(self, key: BucketKey) -> tuple[_Client, bool]:
        """The client entry of `key` and whether this call must make the client."""
        entry = self._clients.get(key)
        if entry is not None:
            return entry, False
        entry = self._clients[key] = _Client(asyncio.get_running_loop().create_future())
        return entry, True

    async def _client(self, entry: _Client, key: BucketKey, make: bool) -> Any:
        fut = entry.ready
        if make:
            # Single flight for client creation: concurrent first calls share one client.
            try:
                session = self._session_for(key.account_id) if self._session_for else None
                # An account's own session carries its (refreshable) role credentials.
                creds = None if session else self._credentials_for and self._credentials_for(key)
                kwargs: dict[str, Any] = {}
                if creds:
                    kwargs = {
                        "aws_access_key_id": creds[0],
                        "aws_secret_access_key": creds[1],
                        "aws_session_token": creds[2],
                    }
                context = (session or self._session).create_client(
                    "transfer",
                    region_name=key.region,
                    endpoint_url=self._settings.endpoint_url,
                    config=self._config,
                    **kwargs,
                )
                client = await context.__aenter__()
                # Polls read ListServers pages compactly (see gateway.upstream.listing).
                client.meta.events.register(listing.EVENT, listing.read_compactly)
                entry.context = context
                fut.set_result(client)
            except BaseException as exc:
                if self._clients.get(key) is entry:
                    del self._clients[key]
                fut.set_exception(exc)
                fut.exception()  # retrieved: only the waiters re-raise it
                raise
        return await asyncio.shield(fut)

    async def _call(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        entry, make = self._entry(key)
        entry.calls += 1  # counted from the start: `release` must not close it under us
        try:
            client = await self._client(entry, key, make)
            return await _attempt(client, operation, params)
        finally:
            entry.calls -= 1

    async def call_raw(self, key: BucketKey, operation: str, **params: Any) -> dict[str, Any]:
        """Any Transfer operation (botocore's snake_case name), its parsed response as is: for
        the AWS-compatible endpoint, which answers with what AWS answered."""
        return await self._call(key, operation, **params)

    async def stop_server(self, target: Target) -> str:
        response = await self._call(target.bucket, "stop_server", ServerId=target.server_id)
        return str(response.get("ResponseMetadata", {}).get("RequestId", ""))

    async def start_server(self, target: Target) -> str:
        response = await self._call(target.bucket, "start_server", ServerId=target.server_id)
        return str(response.get("ResponseMetadata", {}).get("RequestId", ""))

    async def describe_server(self, target: Target) -> ServerState:
        response = await self._call(target.bucket, "describe_server", ServerId=target.server_id)
        return ServerState.parse(str(response["Server"].get("State", "")))

    async def list_tags(self, target: Target) -> dict[str, str]:
        tags: dict[str, str] = {}
        token: str | None = None
        arn = server_arn(target)
        for _ in range(_MAX_TAG_PAGES):  # AWS allows 50 tags: one page; bounded regardless
            params: dict[str, Any] = {"Arn": arn, "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            response = await self._call(target.bucket, "list_tags_for_resource", **params)
            for tag in response.get("Tags", []):
                tags[str(tag["Key"])] = str(tag.get("Value", ""))
            token = response.get("NextToken") or None
            if token is None:
                break
        return tags

    async def list_servers(
        self, key: BucketKey, next_token: str | None, wanted: Set[str] | None = None
    ) -> Page:
        params: dict[str, Any] = {"MaxResults": 1000}
        if next_token:
            params["NextToken"] = next_token
        with listing.compact(wanted):
            response = await self._call(key, "list_servers", **params)
        states = {
            str(s["ServerId"]): ServerState.parse(str(s.get("State", "")))
            for s in response.get("Servers", [])
        }
        return Page(
            states,
            response.get("NextToken") or None,
            str(response.get("ResponseMetadata", {}).get("RequestId", "")),
        )

    @property
    def clients(self) -> int:
        """Clients held now (made or being made)."""
        return len(self._clients)

    async def release(self, key: BucketKey) -> bool:
        """Close `key`'s client unless a call is using it (then False: try again later)."""
        entry = self._clients.get(key)
        if entry is None:
            return True
        if entry.calls or not entry.ready.done():
            return False
        del self._clients[key]
        await _close(entry)
        return True

    async def close(self) -> None:
        entries = list(self._clients.values())
        self._clients.clear()
        for entry in entries:
            await _close(entry)


async def _attempt(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """One botocore call, its failures as UpstreamError."""
    try:
        response: dict[str, Any] = await getattr(client, operation)(**params)
    except ClientError as exc:
        raise from_client_error(exc) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise UpstreamError(
            ErrorKind.UPSTREAM_ACCESS_DENIED, f"no usable AWS credentials: {exc}"
        ) from exc
    except ParamValidationError as exc:
        raise UpstreamError(ErrorKind.INVALID_ARGUMENT, str(exc)) from exc
    except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(
            ErrorKind.UPSTREAM_UNAVAILABLE, f"AWS could not be reached: {type(exc).__name__}"
        ) from exc
    return response


async def _close(entry: _Client) -> None:
    """Close a client that was made (a failed or unfinished creation holds nothing)."""
    if entry.context is not None:
        await entry.context.__aexit__(None, None, None)

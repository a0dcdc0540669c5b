"""Per-account AWS credentials: assumed roles, cached and refreshed by aiobotocore, and identity.

The gateway's own identity comes from the default credential chain (or, in emulator mode, a
fixed key). An account with a `role_arn` gets one aiobotocore session whose credentials are
`AioDeferredRefreshableCredentials` over STS AssumeRole: they are fetched on first use, shared by
every client (region) of that account, and refreshed by botocore from 15 minutes before they
expire (under a lock, so concurrent calls share one AssumeRole). Never one AssumeRole per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import AccountSettings
from gateway.errors import ErrorKind, UpstreamError
from gateway.upstream.errors import from_client_error

#: The RoleSessionName the gateway's sessions carry (it shows in the account's CloudTrail).
ROLE_SESSION_NAME = "transfer-gateway"
#: The gateway's own identity against the embedded emulator (not 12 digits: the emulator reads
#: it as its default account, so calls signed by it never land in a role's account by mistake).
EMULATOR_BASE_CREDENTIALS = ("ASIAGATEWAYEMULATOR0", "emulator-secret", None)

StaticCredentials = tuple[str, str, str | None]

#: The STS client's timeouts and attempts. botocore's defaults (60 s to connect, 60 s to read,
#: 5 attempts with backoff) kept `serve --upstream aws` waiting 13 s on an endpoint that drops
#: connections and 5 minutes on one that never answers before it said so. STS answers in well
#: under a second; a second attempt covers a blip. At start the worst case is now about 20 s.
STS_CONFIG = AioConfig(
    connect_timeout=5.0,
    read_timeout=10.0,
    retries={"total_max_attempts": 2, "mode": "standard"},
)


class _Resolver:
    """botocore's `credential_provider` component, reduced to the one thing it must do."""

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        self._credentials = credentials

    async def load_credentials(self) -> AioDeferredRefreshableCredentials:
        return self._credentials


class AccountSessions:
    """One aiobotocore session per role account; None for the others (the base session)."""

    def __init__(
        self,
        base: AioSession,
        accounts: Mapping[str, AccountSettings],
        *,
        endpoint_url: str | None,
        region: str,
        session_seconds: int = 3600,
        base_credentials: StaticCredentials | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._base = base
        self._accounts = accounts
        self._endpoint_url = endpoint_url
        self._region = region
        self._session_seconds = session_seconds
        self._base_credentials = base_credentials
        #: botocore's clock for expiry decisions; tests move it instead of waiting an hour.
        self._now = now
        self._sessions: dict[str, AioSession] = {}
        self._sts: Any = None
        self._exit = contextlib.AsyncExitStack()

    def session_for(self, account_id: str) -> AioSession | None:
        """The session whose credentials act on `account_id`, made once; None: use the base."""
        account = self._accounts.get(account_id)
        if account is None or account.role_arn is None:
            return None
        session = self._sessions.get(account_id)
        if session is None:
            session = self._sessions[account_id] = self._role_session(account)
        return session

    def _role_session(self, account: AccountSettings) -> AioSession:
        async def assume() -> dict[str, Any]:
            return await self._assume_role(account)

        kwargs: dict[str, Any] = {"time_fetcher": self._now} if self._now else {}
        credentials = AioDeferredRefreshableCredentials(assume, "assume-role", **kwargs)
        session = AioSession()
        session.register_component("credential_provider", _Resolver(credentials))
        # Share the loaded service models: loading them again costs ~100 ms per account.
        session.register_component("data_loader", self._base.get_component("data_loader"))
        return session

    async def _client(self) -> Any:
        """The one STS client, signed by the gateway's own identity."""
        if self._sts is None:
            kwargs: dict[str, Any] = {}
            if self._base_credentials is not None:
                key, secret, token = self._base_credentials
                kwargs = {
                    "aws_access_key_id": key,
                    "aws_secret_access_key": secret,
                    "aws_session_token": token,
                }
            self._sts = await self._exit.enter_async_context(
                self._base.create_client(
                    "sts",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    config=STS_CONFIG,
                    **kwargs,
                )
            )
        return self._sts

    async def _assume_role(self, account: AccountSettings) -> dict[str, Any]:
        assert account.role_arn is not None
        params: dict[str, Any] = {
            "RoleArn": account.role_arn,
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": self._session_seconds,
        }
        if account.external_id:
            params["ExternalId"] = account.external_id
        sts = await self._client()
        try:
            response = await sts.assume_role(**params)
        except ClientError as exc:
            raise from_client_error(exc, action=f"AssumeRole {account.role_arn}") from exc
        except BotoCoreError as exc:
            raise UpstreamError(
                ErrorKind.UPSTREAM_UNAVAILABLE, f"AssumeRole {account.role_arn}: STS failed"
            ) from exc
        creds = response["Credentials"]
        expiration = creds["Expiration"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": (
                expiration.isoformat() if isinstance(expiration, datetime) else str(expiration)
            ),
        }

    async def caller_account(self) -> str:
        """The 12-digit account of the gateway's own identity (STS GetCallerIdentity)."""
        sts = await self._client()
        try:
            response = await sts.get_caller_identity()
        except ClientError as exc:
            raise from_client_error(exc, action="GetCallerIdentity") from exc
        return str(response["Account"])

    async def close(self) -> None:
        await self._exit.aclose()
        self._sts = None


__all__ = ["EMULATOR_BASE_CREDENTIALS", "ROLE_SESSION_NAME", "AccountSessions"]

"""Shared constants and helpers of the emulator tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from gateway.emulator import Emulator

DEFAULT_ACCOUNT = "000000000000"
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
#: No retries anywhere: every call in a test is exactly one request to the emulator.
NO_RETRIES = Config(retries={"total_max_attempts": 1})
#: For sending what botocore's own client-side validation would refuse to send.
NO_RETRIES_NO_VALIDATION = NO_RETRIES.merge(Config(parameter_validation=False))

UNKNOWN_ID = "s-0123456789abcdef0"


class EmulatorFactory(Protocol):
    def __call__(self, **overrides: Any) -> Awaitable[Emulator]: ...


class ClientFactory(Protocol):
    def __call__(
        self,
        emulator: Emulator,
        key_id: str = ...,
        region: str = ...,
        *,
        validate: bool = ...,
    ) -> Awaitable[Any]: ...


async def aws_error(call: Awaitable[Any]) -> dict[str, Any]:
    """The parsed error response of an aiobotocore call that must fail."""
    with pytest.raises(ClientError) as info:
        await call
    response: dict[str, Any] = info.value.response
    return response

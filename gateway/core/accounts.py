"""The accounts the gateway acts on: which are configured, in which regions, on what budget."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import AccountSettings, BudgetSettings
from gateway.domain import BucketKey, Target
from gateway.errors import ErrorKind, GatewayError


class Accounts:
    """Configured accounts. `open` (emulator mode with none listed) accepts any account, as the
    emulator always has; otherwise a request for an account or region not listed is refused
    before it costs any budget."""

    def __init__(
        self, accounts: Iterable[AccountSettings], budget: BudgetSettings, *, open: bool = False
    ) -> None:
        self._by_id = {a.account_id: a for a in accounts}
        self._budget = budget
        self.open = open and not self._by_id

    def get(self, account_id: str) -> AccountSettings | None:
        return self._by_id.get(account_id)

    @property
    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def check(self, target: Target | BucketKey) -> None:
        """Raise NOT_FOUND (ACCOUNT_NOT_CONFIGURED) unless the gateway serves this account and
        region."""
        if self.open:
            return
        account = self._by_id.get(target.account_id)
        meta = {"account_id": target.account_id, "region": target.region}
        if account is None:
            raise GatewayError(
                ErrorKind.ACCOUNT_NOT_CONFIGURED,
                f"account {target.account_id} is not configured in this gateway",
                meta,
            )
        if account.regions and target.region not in account.regions:
            raise GatewayError(
                ErrorKind.ACCOUNT_NOT_CONFIGURED,
                f"account {target.account_id} is not configured for region {target.region}"
                f" (configured: {', '.join(account.regions)})",
                meta,
            )

    def budget_for(self, key: BucketKey) -> tuple[float, int]:
        """(rate, burst) of an account's bucket in one region: its own, else core.budget's."""
        account = self._by_id.get(key.account_id)
        rate = account.rate if account and account.rate is not None else self._budget.rate
        burst = account.burst if account and account.burst is not None else self._budget.burst
        return rate, burst


__all__ = ["Accounts"]

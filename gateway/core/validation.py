"""Raw request fields -> a typed Target, or InvalidArgument naming every bad field."""

from __future__ import annotations

from collections.abc import Collection

from gateway.domain import BucketKey, Target
from gateway.errors import FieldViolation, InvalidArgument
from gateway.names import SERVER_ID_LENGTH, SERVER_ID_PATTERN, is_account_id, is_server_id
from gateway.regions import transfer_regions

#: Longest value quoted back in an error; a 10 kB field must not make a 10 kB error.
_QUOTE_MAX = 40


def _quote(value: str) -> str:
    shown = value if len(value) <= _QUOTE_MAX else value[:_QUOTE_MAX] + "..."
    return repr(shown)


def validate_target(
    server_id: str,
    account_id: str,
    region: str,
    *,
    default_account: str,
    default_region: str,
    field_names: tuple[str, str, str] = ("server_id", "account_id", "region"),
    extra_regions: Collection[str] = (),
) -> Target:
    """Check the three fields (empty account or region take the defaults) and build the Target.

    `field_names` lets each transport name the fields as its callers spell them (gRPC's
    snake_case, HTTP's camelCase). A region must be one that serves Transfer Family (botocore's
    partition data) or one of `extra_regions` (core.extra_regions): a made-up region would cost
    a client, a bucket and metric series for nothing (issue 11)."""
    server_field, account_field, region_field = field_names
    violations = _server_violations(server_id, server_field)
    key, wrong = _account_and_region(
        account_id,
        region,
        default_account,
        default_region,
        account_field,
        region_field,
        extra_regions,
    )
    violations.extend(wrong)
    if violations:
        raise InvalidArgument(violations)
    return Target(account_id=key.account_id, region=key.region, server_id=server_id)


def validate_account(
    account_id: str,
    region: str,
    *,
    default_account: str,
    default_region: str,
    field_names: tuple[str, str] = ("account_id", "region"),
    extra_regions: Collection[str] = (),
) -> BucketKey:
    """Check an account and region (for calls that name no server, such as ListServers), as
    validate_target does."""
    key, wrong = _account_and_region(
        account_id, region, default_account, default_region, *field_names, extra_regions
    )
    if wrong:
        raise InvalidArgument(wrong)
    return key


def _server_violations(server_id: str, server_field: str) -> list[FieldViolation]:
    if not server_id:
        return [FieldViolation(server_field, "is required")]
    if len(server_id) != SERVER_ID_LENGTH:
        return [
            FieldViolation(
                server_field,
                f"must be 19 characters ('s-' and 17 lower-case hex digits), got {len(server_id)}",
            )
        ]
    if not is_server_id(server_id):
        return [
            FieldViolation(
                server_field,
                f"{_quote(server_id)} must match {SERVER_ID_PATTERN} (lower-case hex digits)",
            )
        ]
    return []


def _account_and_region(
    account_id: str,
    region: str,
    default_account: str,
    default_region: str,
    account_field: str,
    region_field: str,
    extra_regions: Collection[str],
) -> tuple[BucketKey, list[FieldViolation]]:
    """The (defaulted) account and region, and what is wrong with them (use it only if
    nothing is)."""
    violations: list[FieldViolation] = []
    account = account_id or default_account
    if not is_account_id(account):
        violations.append(FieldViolation(account_field, f"{_quote(account)} must be 12 digits"))
    chosen_region = region or default_region
    if chosen_region not in transfer_regions() and chosen_region not in extra_regions:
        violations.append(
            FieldViolation(
                region_field,
                f"{_quote(chosen_region)} is not an AWS region that serves Transfer Family"
                " (e.g. us-east-1)",
            )
        )
    return BucketKey(account, chosen_region), violations

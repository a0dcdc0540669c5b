"""The AWS regions that serve Transfer Family, from botocore's partition data (every partition)."""

from __future__ import annotations

import functools

import botocore.session


@functools.cache
def transfer_regions() -> frozenset[str]:
    """Every region botocore's endpoint data lists for the `transfer` service, in every
    partition (aws, aws-cn, aws-us-gov, ...). Read once (about 50 ms) and kept.

    A region name is more than a string: each new (account, region) pair costs the gateway a
    client, a bucket and metric series, so the gateway accepts only regions that exist. A
    region newer than the installed botocore (or an emulator's own) goes in core.extra_regions."""
    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("transfer", partition_name=partition))
    return frozenset(regions)


def is_known_region(region: str, extra: frozenset[str] | tuple[str, ...] = ()) -> bool:
    """Whether `region` serves Transfer Family (or is one of the `extra` regions allowed)."""
    return region in transfer_regions() or region in extra


__all__ = ["is_known_region", "transfer_regions"]

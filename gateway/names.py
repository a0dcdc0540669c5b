"""The one home of the patterns AWS names things by: server ids, account ids, regions, role ARNs.

Layer 0: the request validation (gateway.core.validation), the settings (gateway.config), the
AWS JSON 1.1 framing (gateway.awsjson) and the emulator all read these, so a pattern cannot be
fixed in one place and left wrong in another. Whether a region serves Transfer Family is a
separate question (gateway.regions, from botocore's partition data); this is only the shape.
"""

from __future__ import annotations

import re
from typing import Final

#: botocore's model (transfer 2018-11-05): ServerId has min and max length 19 and this pattern.
#: botocore itself checks only the minimum length, so the gateway checks all of it.
SERVER_ID_PATTERN: Final = "s-([0-9a-f]{17})"
SERVER_ID_LENGTH: Final = 19
SERVER_ID: Final = re.compile(SERVER_ID_PATTERN)
#: An AWS account id: 12 digits.
ACCOUNT_ID: Final = re.compile(r"[0-9]{12}")
#: The shape of an AWS region name: partition prefix, geography, a number (us-east-1,
#: ap-southeast-2, us-gov-west-1, cn-north-1, eu-isoe-west-1, il-central-1, mx-central-1).
REGION_NAME: Final = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
#: A name allowed in core.extra_regions (an emulator's own, or one newer than botocore): any
#: lower-case label list, at most 32 characters.
EXTRA_REGION: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
EXTRA_REGION_MAX: Final = 32
#: An IAM role ARN; group 1 is its account.
ROLE_ARN: Final = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):role/[\w+=,.@/-]{1,512}")


def is_server_id(value: str) -> bool:
    """`value` is a whole Transfer Family server id (length and pattern)."""
    return SERVER_ID.fullmatch(value) is not None


def is_account_id(value: str) -> bool:
    """`value` is a whole 12-digit account id."""
    return ACCOUNT_ID.fullmatch(value) is not None


__all__ = [
    "ACCOUNT_ID",
    "EXTRA_REGION",
    "EXTRA_REGION_MAX",
    "REGION_NAME",
    "ROLE_ARN",
    "SERVER_ID",
    "SERVER_ID_LENGTH",
    "SERVER_ID_PATTERN",
    "is_account_id",
    "is_server_id",
]

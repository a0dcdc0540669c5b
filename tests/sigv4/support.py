"""Helpers for the SigV4 tests: the issued keys, and requests signed by botocore as an SDK would."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.config import AuthSettings, AwsKeySettings, CallerSettings
from gateway.faces.auth import hash_token

A = "111111111111"
B = "222222222222"
OPS_KEY = "AKIAGATEWAYOPS000001"
OPS_SECRET = "ops-secret-0123456789abcdefghijklmnopqrstu"
BILLING_KEY = "AKIAGATEWAYBILLING01"
BILLING_SECRET = "billing-secret-9876543210zyxwvutsrqponml"
BILLING_TOKEN = "billing-token-5e4a3b"
#: ops may act on every account, its key on A; billing only on A, its key on A.
AUTH = AuthSettings(
    callers=(
        CallerSettings(
            "ops",
            None,
            ("*",),
            aws_keys=(AwsKeySettings(OPS_KEY, A, secret_env="OPS_SECRET", secret=OPS_SECRET),),
        ),
        CallerSettings(
            "billing",
            hash_token(BILLING_TOKEN),
            (A,),
            aws_keys=(
                AwsKeySettings(BILLING_KEY, A, secret_env="BILLING_SECRET", secret=BILLING_SECRET),
            ),
        ),
    )
)


@dataclass(frozen=True)
class Signed:
    """A request as botocore signed it: what goes on the wire."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def sign(
    host: str,
    operation: str,
    body: Mapping[str, Any] | bytes,
    *,
    key: str = OPS_KEY,
    secret: str = OPS_SECRET,
    region: str = "us-east-1",
    service: str = "transfer",
    path: str = "/",
    at: datetime.datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> Signed:
    """`operation` signed with botocore's SigV4Auth as the SDKs sign it (host, date, target,
    content type), at `at` (default: now)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "X-Amz-Target": f"TransferService.{operation}",
        "Content-Type": "application/x-amz-json-1.1",
        **(extra or {}),
    }
    request = AWSRequest(method="POST", url=f"http://{host}{path}", data=raw, headers=headers)
    signer = SigV4Auth(Credentials(key, secret), service, region)
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            signer.add_auth(request)
    out = dict(request.headers.items())
    out["Host"] = host
    return Signed("POST", path, out, raw)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)

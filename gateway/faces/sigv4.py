"""SigV4 verification for the AWS-compatible endpoint: what AWS checks, with botocore's own rules.

A request is verified from what was received, never from what it claims: the canonical request
is rebuilt by botocore's `SigV4Auth` (path, query, the headers the client listed as signed, the
payload's SHA-256), the scope must name this service and the date of `X-Amz-Date`, that date
must be within AWS's 15 minutes of now, and the signature is compared in constant time. Every
refusal is an `AwsError` worded as AWS words it, so SDKs and the CLI print what users know.
Secrets never leave this module: not in errors, not in reprs.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from gateway.awsjson import AwsError
from gateway.config import AuthSettings

ALGORITHM: Final = "AWS4-HMAC-SHA256"
SERVICE: Final = "transfer"
TERMINATOR: Final = "aws4_request"
#: AWS refuses a request whose X-Amz-Date is further than this from its own clock.
MAX_SKEW_SECONDS: Final = 15 * 60
#: Headers that must be signed: without them a signature could be moved to another host, time
#: or operation (X-Amz-Target says which one: a signed DescribeServer must not become a stop).
REQUIRED_SIGNED: Final = ("host", "x-amz-date", "x-amz-target")

_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_UNRECOGNIZED = "The security token included in the request is invalid."
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your"
    " AWS Secret Access Key and signing method. Consult the service documentation for details."
)


# ---- AWS's answers -------------------------------------------------------------------------


def missing_token() -> AwsError:
    """No credentials at all (AWS: 403)."""
    return AwsError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)


def incomplete(message: str) -> AwsError:
    """An Authorization header that is not a whole SigV4 one (AWS: 400)."""
    return AwsError("IncompleteSignatureException", message, 400)


def unrecognized(message: str = _UNRECOGNIZED) -> AwsError:
    """An access key (or token) nobody issued (AWS: 400)."""
    return AwsError("UnrecognizedClientException", message, 400)


def invalid_signature(message: str = _MISMATCH) -> AwsError:
    """A signature that does not verify, a scope or a date AWS would refuse (AWS: 400)."""
    return AwsError("InvalidSignatureException", message, 400)


# ---- the header ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    """A parsed `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` value."""

    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def is_sigv4(value: str) -> bool:
    """Does this Authorization value use SigV4's scheme (whatever else is wrong with it)?"""
    return value.split(" ", 1)[0] == ALGORITHM


def parse_authorization(value: str) -> Authorization:
    """The parts of a SigV4 Authorization value; IncompleteSignatureException naming what is
    missing or malformed (without echoing the value: it may be someone's token)."""
    scheme, _, rest = value.partition(" ")
    if scheme != ALGORITHM:
        raise incomplete(f"Unsupported AWS 'algorithm': only {ALGORITHM} is accepted")
    parts: dict[str, str] = {}
    for raw in rest.split(","):
        item = raw.strip()
        if not item:
            continue
        name, equal, content = item.partition("=")
        if not equal:
            raise incomplete(
                "A component of the Authorization header is not a valid key=value pair"
                " (missing equal-sign)"
            )
        if name in parts:
            raise incomplete(f"The Authorization header names '{name[:20]}' twice")
        parts[name] = content
    missing = [p for p in ("Credential", "Signature", "SignedHeaders") if p not in parts]
    if missing:
        raise incomplete(
            " ".join(f"Authorization header requires '{p}' parameter." for p in missing)
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g."
            " keyid/date/region/service/term"
        )
    key_id, date, region, service, terminator = scope
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not all(signed):
        raise incomplete("SignedHeaders must be header names separated by ';'")
    return Authorization(key_id, date, region, service, terminator, signed, parts["Signature"])


# ---- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    """An access key the gateway issued: whose it is and which one account it acts on."""

    access_key_id: str
    caller: str
    account: str
    secret: str = field(repr=False, compare=False)


@dataclass(frozen=True)
class Received:
    """A request as it reached the gateway: method, path with its raw query, every header
    (repeats kept, in order) and the body."""

    method: str
    raw_path: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k.lower() == lowered]


@dataclass(frozen=True)
class Verified:
    """A request whose signature verified: the key that signed it and the scope's region."""

    key: IssuedKey
    region: str


def issued_keys(auth: AuthSettings) -> dict[str, IssuedKey]:
    """Every caller's AWS keys by access key id. A key without its secret is a settings bug
    (Settings built in process without going through the loader), refused here at start."""
    keys: dict[str, IssuedKey] = {}
    for caller in auth.callers:
        for key in caller.aws_keys:
            if not key.secret:
                raise ValueError(
                    f"caller {caller.name!r}: the secret of access key {key.access_key_id} was"
                    " not loaded (Settings must come from gateway.config_file.load_settings)"
                )
            keys[key.access_key_id] = IssuedKey(
                key.access_key_id, caller.name, key.account, key.secret
            )
    return keys


class _AsReceived(SigV4Auth):  # type: ignore[misc]  # botocore ships no types
    """botocore's signer, told which headers were signed: the client's list, with the values
    as received, instead of botocore's own choice for an outgoing request."""

    def __init__(self, credentials: Credentials, region: str, signed: HTTPHeaders) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        return self._signed


class Verifier:
    """Verifies SigV4 requests against the keys the gateway issued, at the clock's wall time."""

    def __init__(self, keys: Iterable[IssuedKey], wall: Callable[[], float]) -> None:
        self._keys = {k.access_key_id: k for k in keys}
        self._wall = wall

    def __bool__(self) -> bool:
        return bool(self._keys)

    def keys_of(self, caller: str) -> list[IssuedKey]:
        return [k for k in self._keys.values() if k.caller == caller]

    def verify(self, received: Received, auth: Authorization) -> Verified:
        """The key that signed `received`, or the AwsError AWS would have answered."""
        signed = set(auth.signed_headers)
        for name in REQUIRED_SIGNED:
            if name not in signed:
                raise incomplete(f"'{name}' must be a 'SignedHeader' in the AWS Authorization.")
        for name, _ in received.headers:
            # Any x-amz-* header that was sent must be signed: an unsigned one could be added
            # or changed on the way.
            if name.lower().startswith("x-amz-") and name.lower() not in signed:
                raise incomplete(f"'{name.lower()[:40]}' must be a 'SignedHeader' too.")
        dates = received.values("x-amz-date")
        if len(dates) != 1:
            raise incomplete("Authorization header requires existence of one 'X-Amz-Date' header.")
        amz_date = dates[0]
        if not _AMZ_DATE.fullmatch(amz_date):
            raise incomplete("X-Amz-Date must be in the ISO8601 Long Format (yyyyMMdd'T'HHmmss'Z')")
        if auth.service != SERVICE:
            raise invalid_signature(f"Credential should be scoped to correct service: '{SERVICE}'.")
        if auth.terminator != TERMINATOR:
            raise invalid_signature(
                f"Credential should be scoped with a valid terminator: '{TERMINATOR}'."
            )
        if auth.date != amz_date[:8]:
            raise invalid_signature(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date"
                f" from HTTP: '{auth.date[:8]}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        self._check_window(amz_date)
        key = self._keys.get(auth.access_key_id)
        if key is None:
            raise unrecognized()
        contents = received.values("x-amz-content-sha256")
        if contents:
            # Checked here rather than left to the signature: the canonical request uses the
            # header's value as the payload hash, so a body changed under a matching header
            # would otherwise verify.
            claimed = contents[0]
            actual = hashlib.sha256(received.body).hexdigest()
            if len(contents) != 1 or not _SHA256_HEX.fullmatch(claimed) or claimed != actual:
                raise invalid_signature(
                    "The provided 'x-amz-content-sha256' header does not match what was"
                    " computed (UNSIGNED-PAYLOAD is not accepted here)."
                )
        if not _SIGNATURE.fullmatch(auth.signature):
            raise invalid_signature()
        expected = self._signature(received, auth, key, amz_date)
        if expected is None or not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise invalid_signature()
        return Verified(key, auth.region)

    def _check_window(self, amz_date: str) -> None:
        try:
            signed_at = calendar.timegm(
                datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).timetuple()
            )
        except ValueError:  # 20261399T...: the right shape, not a date
            raise incomplete(
                "X-Amz-Date must be in the ISO8601 Long Format (yyyyMMdd'T'HHmmss'Z')"
            ) from None
        now = self._wall()
        if signed_at < now - MAX_SKEW_SECONDS:
            raise invalid_signature(
                f"Signature expired: {amz_date} is now earlier than"
                f" {_stamp(now - MAX_SKEW_SECONDS)} ({_stamp(now)} - 15 min.)"
            )
        if signed_at > now + MAX_SKEW_SECONDS:
            raise invalid_signature(
                f"Signature not yet current: {amz_date} is still later than"
                f" {_stamp(now + MAX_SKEW_SECONDS)} ({_stamp(now)} + 15 min.)"
            )

    def _signature(
        self, received: Received, auth: Authorization, key: IssuedKey, amz_date: str
    ) -> str | None:
        """The signature botocore computes for what was received, with the key's secret; None
        when what was received cannot be canonicalised at all (it then cannot verify)."""
        headers = HTTPHeaders()
        for name in auth.signed_headers:
            for value in received.values(name):
                headers[name] = value
        path = received.raw_path if received.raw_path.startswith("/") else "/" + received.raw_path
        if "#" in path:
            return None  # a fragment is never sent: urlsplit would drop it from what is signed
        # http: so botocore always hashes the payload (it skips that for some https requests);
        # the host comes from the signed Host header, never from this URL.
        request = AWSRequest(method=received.method, url="http://gateway" + path)
        request.data = received.body
        request.context["timestamp"] = amz_date
        signer = _AsReceived(Credentials(key.access_key_id, key.secret), auth.region, headers)
        try:
            canonical = signer.canonical_request(request)
            string_to_sign = signer.string_to_sign(request, canonical)
            return str(signer.signature(string_to_sign, request))
        except (UnicodeError, ValueError):
            # Bytes that are not UTF-8 in a signed header or path: botocore cannot encode
            # them, and no SDK would have signed them.
            return None


def _stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(SIGV4_TIMESTAMP)


__all__ = [
    "ALGORITHM",
    "MAX_SKEW_SECONDS",
    "SERVICE",
    "Authorization",
    "IssuedKey",
    "Received",
    "Verified",
    "Verifier",
    "incomplete",
    "invalid_signature",
    "is_sigv4",
    "issued_keys",
    "missing_token",
    "parse_authorization",
    "unrecognized",
]

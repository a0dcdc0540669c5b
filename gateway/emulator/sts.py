"""STS for the emulator: AssumeRole and GetCallerIdentity over the AWS query protocol (XML).

The gateway assumes one role per account and signs its Transfer calls with the session it got;
the emulator remembers which account each issued access key id belongs to, so the role path is
tested end to end: a call signed with the wrong session lands in the wrong account.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from aiohttp import web

from gateway.awsjson import AwsError, new_request_id
from gateway.config import DEFAULT_EMULATOR_ACCOUNT
from gateway.names import ROLE_ARN, is_account_id

XML_NAMESPACE: Final = "https://sts.amazonaws.com/doc/2011-06-15/"
API_VERSION: Final = "2011-06-15"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

# botocore's model of AssumeRole's inputs.
_SESSION_NAME_RE: Final = re.compile(r"[\w+=,.@-]{2,64}\Z")
_EXTERNAL_ID_RE: Final = re.compile(r"[\w+=,.@:/-]{2,1224}\Z")
DURATION_RANGE: Final = (900, 43200)
_CREDENTIAL_RE: Final = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True)
class Session:
    """Credentials the emulator issued: whose they are and until when (epoch seconds)."""

    account: str
    role_arn: str
    session_name: str
    secret_access_key: str
    session_token: str
    expires_at: float


@dataclass(frozen=True)
class AssumeRoleRequest:
    """What a caller asked AssumeRole for (tests check the external id was sent)."""

    role_arn: str
    session_name: str
    external_id: str | None
    duration_seconds: int


class Sts:
    """The emulator's STS: issues sessions and tells the Transfer side whose key signed a call.
    `wall` is epoch seconds, injected so tests can expire sessions without waiting."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.sessions: dict[str, Session] = {}
        self.calls: Counter[str] = Counter()
        self.assume_role_requests: list[AssumeRoleRequest] = []

    # ---- the Transfer side ---------------------------------------------------------------

    def account_of(self, authorization: str | None) -> str | None:
        """The account of an issued session's key id in a SigV4 header; None for other keys.
        An expired session answers ExpiredTokenException, as AWS does."""
        key_id = _key_id(authorization)
        session = self.sessions.get(key_id or "")
        if session is None:
            return None
        if self._wall() >= session.expires_at:
            raise AwsError("ExpiredTokenException", "The security token included is expired")
        return session.account

    # ---- HTTP ----------------------------------------------------------------------------

    @staticmethod
    def is_query_call(request: web.Request) -> bool:
        """STS speaks the query protocol: a form body, no X-Amz-Target."""
        return "X-Amz-Target" not in request.headers and request.content_type == FORM_CONTENT_TYPE

    async def handle(self, request: web.Request) -> web.Response:
        request_id = new_request_id()
        try:
            form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
            action = form.get("Action", "")
            self.calls[action] += 1
            if action == "AssumeRole":
                body = self._assume_role(form)
            elif action == "GetCallerIdentity":
                body = self._get_caller_identity(request.headers.get("Authorization"))
            else:
                raise AwsError("InvalidAction", f"Could not find operation {action!r}", 400)
        except AwsError as exc:
            return _error(exc, request_id)
        except UnicodeDecodeError:
            return _error(AwsError("MalformedQueryString", "Body is not UTF-8"), request_id)
        return _ok(action, body, request_id)

    # ---- operations ----------------------------------------------------------------------

    def _assume_role(self, form: Mapping[str, str]) -> str:
        role_arn = form.get("RoleArn", "")
        session_name = form.get("RoleSessionName", "")
        external_id = form.get("ExternalId")
        raw_duration = form.get("DurationSeconds", "3600")
        match = ROLE_ARN.fullmatch(role_arn)
        if match is None:
            raise _validation("roleArn", role_arn, "must be an IAM role ARN")
        if not _SESSION_NAME_RE.match(session_name):
            raise _validation("roleSessionName", session_name, r"must match [\w+=,.@-]{2,64}")
        if external_id is not None and not _EXTERNAL_ID_RE.match(external_id):
            raise _validation("externalId", "***", r"must match [\w+=,.@:/-]{2,1224}")
        try:
            duration = int(raw_duration)
        except ValueError:
            duration = -1
        low, high = DURATION_RANGE
        if not low <= duration <= high:
            raise _validation("durationSeconds", raw_duration, f"must be within {low}..{high}")
        self.assume_role_requests.append(
            AssumeRoleRequest(role_arn, session_name, external_id, duration)
        )
        account = match.group(1)
        # ASIA: the prefix AWS gives temporary (session) access key ids.
        key_id = "ASIA" + secrets.token_hex(8).upper()
        session = Session(
            account=account,
            role_arn=role_arn,
            session_name=session_name,
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(96),
            expires_at=self._wall() + duration,
        )
        self.sessions[key_id] = session
        role_name = role_arn.rsplit("/", 1)[-1]
        return (
            "<Credentials>"
            f"<AccessKeyId>{key_id}</AccessKeyId>"
            f"<SecretAccessKey>{escape(session.secret_access_key)}</SecretAccessKey>"
            f"<SessionToken>{escape(session.session_token)}</SessionToken>"
            f"<Expiration>{_iso(session.expires_at)}</Expiration>"
            "</Credentials>"
            "<AssumedRoleUser>"
            f"<Arn>arn:aws:sts::{account}:assumed-role/{escape(role_name)}/"
            f"{escape(session_name)}</Arn>"
            f"<AssumedRoleId>AROA{key_id[4:]}:{escape(session_name)}</AssumedRoleId>"
            "</AssumedRoleUser>"
        )

    def _get_caller_identity(self, authorization: str | None) -> str:
        key_id = _key_id(authorization) or ""
        session = self.sessions.get(key_id)
        if session is not None:
            account = self.account_of(authorization) or session.account
            role_name = session.role_arn.rsplit("/", 1)[-1]
            arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session.session_name}"
        else:
            # The emulator's convention: a 12-digit key id is the account.
            account = key_id if is_account_id(key_id) else DEFAULT_EMULATOR_ACCOUNT
            arn = f"arn:aws:iam::{account}:user/emulator"
        return f"<Arn>{escape(arn)}</Arn><UserId>AIDA{account}</UserId><Account>{account}</Account>"


def _key_id(authorization: str | None) -> str | None:
    match = _CREDENTIAL_RE.search(authorization or "")
    return match.group(1) if match else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validation(member: str, value: str, constraint: str) -> AwsError:
    return AwsError(
        "ValidationError",
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy"
        f" constraint: Member {constraint}",
    )


def _ok(action: str, result: str, request_id: str) -> web.Response:
    body = (
        f'<{action}Response xmlns="{XML_NAMESPACE}">'
        f"<{action}Result>{result}</{action}Result>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )
    return web.Response(
        text=body, content_type="text/xml", headers={"x-amzn-RequestId": request_id}
    )


def _error(error: AwsError, request_id: str) -> web.Response:
    kind = "Sender" if error.status < 500 else "Receiver"
    body = (
        f'<ErrorResponse xmlns="{XML_NAMESPACE}">'
        f"<Error><Type>{kind}</Type><Code>{escape(error.code)}</Code>"
        f"<Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(
        status=error.status,
        text=body,
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


__all__ = ["AssumeRoleRequest", "Session", "Sts"]

"""SigV4 verification in process: what verifies, what AWS would refuse and how it words it."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.awsjson import AwsError
from gateway.faces import sigv4
from gateway.faces.sigv4 import Received, Verifier, issued_keys, parse_authorization
from tests.sigv4.support import (
    AUTH,
    BILLING_KEY,
    BILLING_SECRET,
    OPS_KEY,
    OPS_SECRET,
    A,
    Signed,
    sign,
)

HOST = "127.0.0.1:8080"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0)
BODY = {"ServerId": "s-0123456789abcdef0"}


def _verifier(now: datetime.datetime = NOW) -> Verifier:
    epoch = calendar.timegm(now.timetuple())
    return Verifier(issued_keys(AUTH).values(), lambda: float(epoch))


def _received(signed: Signed, **changes: Any) -> Received:
    """What the gateway receives for `signed`, with `changes` (method, path, headers, body)
    made on the way."""
    fields = {
        "method": signed.method,
        "raw_path": signed.path,
        "headers": list(signed.headers.items()),
        "body": signed.body,
    }
    fields.update({"raw_path" if k == "path" else k: v for k, v in changes.items()})
    return Received(**fields)


def _verify(signed: Signed, verifier: Verifier | None = None, **changes: Any) -> sigv4.Verified:
    received = _received(signed, **changes)
    return (verifier or _verifier()).verify(
        received, parse_authorization(received.values("Authorization")[0])
    )


def _refusal(signed: Signed, verifier: Verifier | None = None, **changes: Any) -> AwsError:
    with pytest.raises(AwsError) as caught:
        _verify(signed, verifier, **changes)
    return caught.value


def _with_header(signed: Signed, name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k.lower() == name.lower() else v) for k, v in signed.headers.items()]


class TestWhatVerifies:
    def test_a_request_signed_by_botocore_verifies_as_its_key(self) -> None:
        """botocore's signature over what was sent verifies: the key names its caller and
        account, the scope the region."""
        verified = _verify(sign(HOST, "StopServer", BODY, at=NOW, region="eu-west-1"))
        assert (verified.key.caller, verified.key.account, verified.region) == (
            "ops",
            A,
            "eu-west-1",
        )

    def test_each_key_verifies_with_its_own_secret_only(self) -> None:
        """billing's key verifies with billing's secret, not with ops's."""
        assert (
            _verify(
                sign(HOST, "ListServers", {}, key=BILLING_KEY, secret=BILLING_SECRET, at=NOW)
            ).key.caller
            == "billing"
        )
        refused = _refusal(
            sign(HOST, "ListServers", {}, key=BILLING_KEY, secret=OPS_SECRET, at=NOW)
        )
        assert refused.code == "InvalidSignatureException"

    def test_the_window_is_fifteen_minutes_either_way(self) -> None:
        """Signed 14 minutes ago or 14 minutes ahead still verifies (AWS's clock-skew window)."""
        for minutes in (-14, 14):
            at = NOW + datetime.timedelta(minutes=minutes)
            assert _verify(sign(HOST, "StopServer", BODY, at=at)).key.caller == "ops"

    def test_a_matching_content_sha256_header_verifies(self) -> None:
        """x-amz-content-sha256 equal to the body's hash, and signed, is accepted."""
        raw = json.dumps(BODY).encode()
        extra = {"X-Amz-Content-SHA256": hashlib.sha256(raw).hexdigest()}
        assert _verify(sign(HOST, "StopServer", raw, at=NOW, extra=extra)).key.caller == "ops"


class TestRefusals:
    def test_a_wrong_secret_is_an_invalid_signature(self) -> None:
        """Signed with another secret: InvalidSignatureException, AWS's wording, status 400,
        and neither secret appears in the answer."""
        refused = _refusal(
            sign(HOST, "StopServer", BODY, secret="not-the-secret-at-all-000", at=NOW)
        )
        assert (refused.code, refused.status) == ("InvalidSignatureException", 400)
        assert refused.message.startswith("The request signature we calculated does not match")
        assert OPS_SECRET not in str(refused.body())

    def test_an_unknown_key_is_an_unrecognized_client(self) -> None:
        """A key nobody issued: UnrecognizedClientException, as AWS words it."""
        refused = _refusal(sign(HOST, "StopServer", BODY, key="AKIANOBODYISSUED0001", at=NOW))
        assert (refused.code, refused.status) == ("UnrecognizedClientException", 400)
        assert refused.message == "The security token included in the request is invalid."

    def test_a_request_signed_twenty_minutes_ago_has_expired(self) -> None:
        """Signed 20 minutes ago: InvalidSignatureException with AWS's 'Signature expired'
        sentence, naming the three times."""
        at = NOW - datetime.timedelta(minutes=20)
        refused = _refusal(sign(HOST, "StopServer", BODY, at=at))
        assert refused.code == "InvalidSignatureException"
        assert refused.message == (
            "Signature expired: 20260301T114000Z is now earlier than 20260301T114500Z"
            " (20260301T120000Z - 15 min.)"
        )

    def test_a_request_signed_in_the_future_is_not_yet_current(self) -> None:
        """Signed 20 minutes ahead: 'Signature not yet current', as AWS answers."""
        refused = _refusal(sign(HOST, "StopServer", BODY, at=NOW + datetime.timedelta(minutes=20)))
        assert refused.code == "InvalidSignatureException"
        assert refused.message.startswith("Signature not yet current: 20260301T122000Z")

    @pytest.mark.parametrize(
        "change",
        [
            {"body": b'{"ServerId": "s-0123456789abcdef1"}'},
            {"body": b""},
            {"path": "/other"},
            {"path": "/?x=1"},
            {"method": "PUT"},
        ],
        ids=["body", "empty-body", "path", "query", "method"],
    )
    def test_anything_signed_that_changed_is_an_invalid_signature(
        self, change: dict[str, Any]
    ) -> None:
        """The body, path, query or method changed after signing: the signature fails."""
        refused = _refusal(sign(HOST, "StopServer", BODY, at=NOW), **change)
        assert refused.code == "InvalidSignatureException"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("X-Amz-Target", "TransferService.DescribeServer"),
            ("Host", "evil.example:8080"),
            ("Content-Type", "application/json"),
        ],
    )
    def test_a_signed_header_changed_is_an_invalid_signature(self, name: str, value: str) -> None:
        """A signed header changed on the way (the operation, the host, the content type)."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        refused = _refusal(signed, headers=_with_header(signed, name, value))
        assert refused.code == "InvalidSignatureException"

    def test_the_date_header_changed_is_refused(self) -> None:
        """X-Amz-Date moved (within the window) no longer matches the scope or the signature."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        moved = _with_header(signed, "X-Amz-Date", "20260301T120100Z")
        assert _refusal(signed, headers=moved).code == "InvalidSignatureException"
        other_day = _with_header(signed, "X-Amz-Date", "20260302T000100Z")
        assert _refusal(
            signed, _verifier(datetime.datetime(2026, 3, 2)), headers=other_day
        ).message.startswith("Date in Credential scope does not match")

    def test_a_content_sha256_that_does_not_match_the_body_is_refused(self) -> None:
        """x-amz-content-sha256 of another body, or UNSIGNED-PAYLOAD: refused, since the
        canonical request would take the header's word for the body."""
        raw = json.dumps(BODY).encode()
        other = hashlib.sha256(b"{}").hexdigest()
        for value in (other, "UNSIGNED-PAYLOAD"):
            signed = sign(HOST, "StopServer", raw, at=NOW, extra={"X-Amz-Content-SHA256": value})
            refused = _refusal(signed)
            assert refused.code == "InvalidSignatureException"
            assert "x-amz-content-sha256" in refused.message

    def test_an_unsigned_amz_header_is_refused(self) -> None:
        """An x-amz-* header added after signing is not taken on trust."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        headers = [*signed.headers.items(), ("X-Amz-Security-Token", "added")]
        refused = _refusal(signed, headers=headers)
        assert refused.code == "IncompleteSignatureException"

    @pytest.mark.parametrize("left_out", ["host", "x-amz-date", "x-amz-target"])
    def test_host_date_and_target_must_be_signed(self, left_out: str) -> None:
        """A signature that does not cover the host, the date or the operation is incomplete."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        auth = signed.headers["Authorization"]
        names = auth.split("SignedHeaders=")[1].split(",")[0]
        kept = ";".join(n for n in names.split(";") if n != left_out)
        headers = _with_header(signed, "Authorization", auth.replace(names, kept))
        refused = _refusal(signed, headers=headers)
        assert refused.code == "IncompleteSignatureException"
        assert left_out in refused.message

    def test_a_scope_for_another_service_is_refused(self) -> None:
        """Signed for s3 rather than transfer: AWS's 'scoped to correct service' answer."""
        refused = _refusal(sign(HOST, "StopServer", BODY, at=NOW, service="s3"))
        assert refused.code == "InvalidSignatureException"
        assert refused.message == "Credential should be scoped to correct service: 'transfer'."


class TestParsing:
    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("AWS4-HMAC-SHA256 ", "requires 'Credential' parameter"),
            ("AWS4-HMAC-SHA256 Credential=a/b/c/d/e", "requires 'Signature' parameter"),
            ("AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=00", "5 slash"),
            ("AWS4-HMAC-SHA256 Credential", "missing equal-sign"),
            ("AWS4-HMAC-SHA1 Credential=a/b/c/d/e", "algorithm"),
        ],
    )
    def test_a_malformed_header_is_incomplete(self, value: str, says: str) -> None:
        """Each malformed Authorization gets IncompleteSignatureException saying what is wrong."""
        with pytest.raises(AwsError) as caught:
            parse_authorization(value)
        assert caught.value.code == "IncompleteSignatureException"
        assert says in caught.value.message

    def test_the_value_is_never_echoed(self) -> None:
        """A token pasted into the wrong header does not come back in the error."""
        with pytest.raises(AwsError) as caught:
            parse_authorization("AWS4-HMAC-SHA256 secret-token-abcdef")
        assert "secret-token-abcdef" not in str(caught.value.body())


class TestKeys:
    def test_a_key_without_its_secret_is_refused_at_start(self) -> None:
        """Settings built in process with a secret_env but no secret loaded: refused when the
        keys are read, not at the first request."""
        import dataclasses

        from gateway.config import AwsKeySettings

        caller = dataclasses.replace(
            AUTH.callers[0], aws_keys=(AwsKeySettings(OPS_KEY, A, secret_env="OPS_SECRET"),)
        )
        with pytest.raises(ValueError, match="not loaded"):
            issued_keys(dataclasses.replace(AUTH, callers=(caller,)))

    def test_the_secret_is_not_in_reprs(self) -> None:
        """Neither the settings nor the issued key show the secret in their repr."""
        assert OPS_SECRET not in repr(AUTH)
        assert OPS_SECRET not in repr(issued_keys(AUTH))


# ---- fuzzing -------------------------------------------------------------------------------

_header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=200
)
_pieces = st.sampled_from(
    [
        "AWS4-HMAC-SHA256",
        " ",
        ",",
        "=",
        "/",
        ";",
        "Credential=",
        "SignedHeaders=",
        "Signature=",
        OPS_KEY,
        "20260301",
        "us-east-1",
        "transfer",
        "aws4_request",
        "host;x-amz-date;x-amz-target",
        "0" * 64,
    ]
)
_authorization = st.one_of(
    _header_text,
    st.lists(st.one_of(_pieces, _header_text), max_size=12).map("".join),
)


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(value=_authorization)
    def test_any_authorization_value_is_refused_as_aws_would(self, value: str) -> None:
        """Whatever the header says, verification either refuses it with a 4xx AwsError or
        (never, without the secret) accepts it: it never raises anything else."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        headers = _with_header(signed, "Authorization", value)
        with pytest.raises(AwsError) as caught:
            _verify(signed, headers=headers)
        assert 400 <= caught.value.status < 500

    @settings(max_examples=200, deadline=None)
    @given(
        part=st.sampled_from(["body", "path", "target", "host", "date", "content-type", "sig"]),
        junk=st.text(string.printable.strip() or "x", min_size=1, max_size=30),
    )
    def test_no_change_to_anything_signed_is_accepted(self, part: str, junk: str) -> None:
        """Change any signed part of a good request (body, path, target, host, date, content
        type, signature) and it is refused with a 4xx, never accepted."""
        signed = sign(HOST, "StopServer", BODY, at=NOW)
        changes: dict[str, Any] = {}
        if part == "body":
            changes["body"] = signed.body + junk.encode()
        elif part == "path":
            # Letters only: "/." or "/a/.." normalise back to "/", as SigV4 says they should.
            changes["path"] = "/" + "".join(c for c in junk if c.isalpha()) + "x"
        else:
            name = {
                "target": "X-Amz-Target",
                "host": "Host",
                "date": "X-Amz-Date",
                "content-type": "Content-Type",
                "sig": "Authorization",
            }[part]
            value = signed.headers[name]
            changed = (
                value[:-1] + ("0" if value[-1] != "0" else "1")
                if part in ("sig", "date")
                else value + junk
            )
            changes["headers"] = _with_header(signed, name, changed)
        with pytest.raises(AwsError) as caught:
            _verify(signed, **changes)
        assert 400 <= caught.value.status < 500

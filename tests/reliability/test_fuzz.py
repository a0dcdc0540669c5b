"""Fuzzing every request field through gRPC and HTTP: bad input is refused, nothing is a bug."""

from __future__ import annotations

import http.client
import json
import string
import urllib.parse
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.config import Settings
from tests.support.gateways import GatewayThread, make_settings

ACCOUNTS = ("000000000000", "123456789012")
#: What a request may legitimately end with besides OK; UNKNOWN and INTERNAL never.
MAPPED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
FIELDS = {"server_id", "account_id", "region"}

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=64)  # protobuf: valid UTF-8
_hex = st.text(alphabet="0123456789abcdef", min_size=17, max_size=17)


@pytest.fixture
def fuzz_gateway(
    gateway_thread_factory: Callable[[Settings], GatewayThread],
) -> Iterator[tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub]]:
    """One gateway for every example: instant transitions, fast polls, and real servers in two
    accounts so that some examples reach a real outcome rather than a refusal."""
    gw = gateway_thread_factory(make_settings(emulator={"transition_seconds": 0.0}))
    assert gw.app.emulator is not None
    emulator = gw.app.emulator
    servers = {a: gw.call(lambda a=a: emulator.create_servers(40, account=a)) for a in ACCOUNTS}
    with grpc.insecure_channel(f"127.0.0.1:{gw.app.grpc_port}") as channel:
        yield gw, servers, pb_grpc.TransferGatewayStub(channel)


def _server_ids(servers: dict[str, list[str]]) -> st.SearchStrategy[str]:
    real = [s for ids in servers.values() for s in ids]
    return st.one_of(
        _text,
        st.builds(lambda h: "s-" + h, _hex),  # well formed, unknown
        st.sampled_from(real),
        st.builds(lambda s, c: s[:-1] + c, st.sampled_from(real), st.sampled_from("AGz-\n ")),
        st.text(alphabet=string.printable, min_size=17, max_size=21),
        st.just("s-" + "a" * 10_000),
    )


_accounts = st.one_of(
    st.just(""),
    st.sampled_from(ACCOUNTS),
    st.text(alphabet="0123456789", max_size=14),
    _text,
    st.text(st.characters(categories=("Nd",)), min_size=12, max_size=12),  # non-ASCII digits
)
_regions = st.one_of(
    st.just(""),
    st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "US-EAST-1", "us-east-1 "]),
    st.from_regex(r"[a-z]{2}-[a-z]{3,9}-[0-9]{1,2}", fullmatch=True),
    _text,
)


def _check_outcome(call: Iterator[pb.ServerStateUpdate]) -> None:
    updates: list[pb.ServerStateUpdate] = []
    error: grpc.RpcError | None = None
    try:
        updates.extend(call)
    except grpc.RpcError as exc:
        error = exc
    if error is None:
        # OK: the stream ended with its one terminal update.
        assert updates, "an OK stream has updates"
        assert updates[-1].terminal
        assert [u.terminal for u in updates].count(True) == 1
        return
    code = error.code()  # type: ignore[attr-defined]
    assert code in MAPPED, f"{code}: {error.details()}"  # type: ignore[attr-defined]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and status is None:
        return  # the client's gRPC library ended the call at its deadline, before the gateway
    assert status is not None, "every error carries a google.rpc.Status"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert updates == []
        violations = set()
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations |= {v.field for v in bad.field_violations}
        assert violations, "INVALID_ARGUMENT names the bad field"
        assert violations <= FIELDS


class TestFuzzing:
    @settings(
        max_examples=1200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_stop_server_any_fields(
        self,
        fuzz_gateway: tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub],
        data: st.DataObject,
    ) -> None:
        """StopServer with arbitrary server id, account and region ends OK with one terminal
        update, or with a mapped error carrying a rich status (INVALID_ARGUMENT naming the
        field); never UNKNOWN or INTERNAL, and the gateway keeps serving."""
        _, servers, stub = fuzz_gateway
        request = pb.StopServerRequest(
            server_id=data.draw(_server_ids(servers), "server_id"),
            account_id=data.draw(_accounts, "account_id"),
            region=data.draw(_regions, "region"),
        )
        _check_outcome(stub.StopServer(request, timeout=10))

    @settings(
        max_examples=700,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_watch_server_any_fields(
        self,
        fuzz_gateway: tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub],
        data: st.DataObject,
    ) -> None:
        """WatchServer gets the same treatment: a watch of an ONLINE server legitimately runs
        to its deadline, anything else ends in a terminal update or a mapped error."""
        _, servers, stub = fuzz_gateway
        request = pb.WatchServerRequest(
            server_id=data.draw(_server_ids(servers), "server_id"),
            account_id=data.draw(_accounts, "account_id"),
            region=data.draw(_regions, "region"),
        )
        _check_outcome(stub.WatchServer(request, timeout=0.25))

    def test_gateway_still_stops_after_the_fuzzing(
        self,
        fuzz_gateway: tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub],
    ) -> None:
        """Malformed input leaves nothing behind: a plain stop afterwards works end to end."""
        gw, _, stub = fuzz_gateway
        assert gw.app.emulator is not None
        emulator = gw.app.emulator
        (server_id,) = gw.call(lambda: emulator.create_servers(1))
        updates = list(stub.StopServer(pb.StopServerRequest(server_id=server_id), timeout=10))
        assert updates[-1].terminal
        assert gw.call(lambda: emulator.server_state(server_id)) == "OFFLINE"


# ---- the HTTP face: the same fields as path, JSON body, query and header ------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_bodies = st.one_of(
    st.just(b""),
    st.builds(lambda a, r: json.dumps({"accountId": a, "region": r}).encode(), _accounts, _regions),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(_text, _json_values, max_size=3)),
    st.builds(
        lambda a, r: json.dumps({"accountId": a, "region": r}).encode(), _json_values, _json_values
    ),
    st.binary(max_size=64),
)
#: Header values on the wire are visible ASCII (http.client refuses anything else).
_timeouts = st.one_of(
    st.none(),
    st.just("5S"),
    st.from_regex(r"[0-9]{0,10}[HMSmunx]?", fullmatch=True),
    st.text(alphabet=string.digits + string.ascii_letters + string.punctuation + " ", max_size=12),
)
#: google.rpc codes that mean a bug: UNKNOWN (2) and INTERNAL (13).
_BUG_CODES = {2, 13}


def _http(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def _check_http_outcome(status: int, content_type: str, body: bytes) -> None:
    if status != 200:
        # Mapped errors only (the router's own 404/405 for paths that are not a route at all,
        # e.g. an id holding "/", carry no JSON); never a 500 for what the caller sent.
        assert status < 500 or status in (503, 504), (status, body[:300])
        if content_type.startswith("application/json"):
            error = json.loads(body)
            assert error.get("code") not in _BUG_CODES, error
            if status == 400:
                assert error.get("details"), "a 400 names the bad field"
        return
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    assert lines, "a 200 stream has lines"
    for line in lines[:-1]:
        assert "result" in line, line
    last = lines[-1]
    if "error" in last:
        assert last["error"].get("code") not in _BUG_CODES, last
    else:
        assert last["result"].get("terminal") is True, last


class TestHttpFuzzing:
    @settings(
        max_examples=700,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_stop_route_any_path_body_and_timeout(
        self,
        fuzz_gateway: tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub],
        data: st.DataObject,
    ) -> None:
        """POST /v1/servers/{id}:stop with any id in the path, any body and any Grpc-Timeout:
        a mapped HTTP status with a google.rpc.Status body (400 naming the field), or a 200
        NDJSON stream ending in a terminal update or a mapped error; never a 500, UNKNOWN or
        INTERNAL."""
        gw, servers, _ = fuzz_gateway
        server_id = data.draw(_server_ids(servers), "server_id")
        headers = {"Content-Type": "application/json"}
        timeout = data.draw(_timeouts, "grpc_timeout")
        if timeout is not None:
            headers["Grpc-Timeout"] = timeout
        path = f"/v1/servers/{urllib.parse.quote(server_id, safe='')}:stop"
        body = data.draw(_bodies, "body")
        _check_http_outcome(*_http(gw.app.http_port, "POST", path, body, headers))

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test_watch_route_any_query(
        self,
        fuzz_gateway: tuple[GatewayThread, dict[str, list[str]], pb_grpc.TransferGatewayStub],
        data: st.DataObject,
    ) -> None:
        """GET /v1/servers/{id}:watch with any id and any accountId/region query: the same
        rules as the stop route (a watch of an ONLINE server ends at its 250 ms deadline)."""
        gw, servers, _ = fuzz_gateway
        server_id = data.draw(_server_ids(servers), "server_id")
        query = urllib.parse.urlencode(
            {"accountId": data.draw(_accounts, "account_id"), "region": data.draw(_regions)}
        )
        path = f"/v1/servers/{urllib.parse.quote(server_id, safe='')}:watch?{query}"
        status = _http(gw.app.http_port, "GET", path, None, {"Grpc-Timeout": "250m"})
        _check_http_outcome(*status)

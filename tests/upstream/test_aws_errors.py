"""AWS's error answers as the gateway's errors: the table covers the model, and an unknown 4xx is
an answer (one call, no retry), over a real socket to a stand-in AWS endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import botocore.session
import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.config import RetrySettings
from gateway.core.calls import BudgetedCaller
from gateway.domain import BucketKey, Target
from gateway.errors import AWS_CODES, ErrorKind, UpstreamError, from_aws
from gateway.limiting import LocalBuckets, Priority, QueuedLimiter
from gateway.upstream.aio import AioUpstream, ClientSettings, emulator_credentials

#: The operations the gateway sends to AWS (core, watchers, the AWS-compatible face).
CALLED = ("StopServer", "StartServer", "DescribeServer", "ListServers")
KEY = BucketKey("000000000000", "us-east-1")
TARGET = Target(KEY.account_id, KEY.region, "s-0123456789abcdef0")


class TestTheTableCoversTheModel:
    @pytest.mark.parametrize("operation", CALLED)
    def test_every_modeled_error_of_the_operations_we_call_is_mapped(self, operation: str) -> None:
        """Each error botocore's transfer model declares for an operation the gateway calls has
        its own row in AWS_CODES: none falls through to the by-status guess."""
        model = botocore.session.get_session().get_service_model("transfer")
        declared = {shape.error_code for shape in model.operation_model(operation).error_shapes}
        assert declared, operation
        assert declared <= set(AWS_CODES), sorted(declared - set(AWS_CODES))

    def test_a_bad_next_token_is_a_bad_argument(self) -> None:
        """InvalidNextTokenException (ListServers) is INVALID_ARGUMENT: 400, never retried."""
        assert from_aws("InvalidNextTokenException", "bad").kind is ErrorKind.INVALID_ARGUMENT

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, ErrorKind.UPSTREAM_REJECTED),
            (404, ErrorKind.UPSTREAM_REJECTED),
            (409, ErrorKind.UPSTREAM_REJECTED),
            (413, ErrorKind.UPSTREAM_REJECTED),
            (403, ErrorKind.UPSTREAM_ACCESS_DENIED),
            (429, ErrorKind.UPSTREAM_THROTTLED),
            (503, ErrorKind.UPSTREAM_UNAVAILABLE),
            (500, ErrorKind.UPSTREAM_INTERNAL),
            (None, ErrorKind.UPSTREAM_INTERNAL),
        ],
    )
    def test_an_unknown_code_is_classed_by_its_http_status(
        self, status: int | None, kind: ErrorKind
    ) -> None:
        """A code the table does not know takes its row from the HTTP status, and keeps the
        AWS code and status for the caller."""
        error = from_aws("BrandNewException", "new", http_status=status)
        assert error.kind is kind
        assert error.metadata["aws_code"] == "BrandNewException"
        if status is not None:
            assert error.metadata["aws_http_status"] == str(status)


Answer = tuple[int, dict[str, str]]


@pytest.fixture
async def fake_aws() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[str, list[str]]]]]:
    """A stand-in AWS endpoint on a loopback port answering every call with one fixed error;
    returns its URL and the list of X-Amz-Target values it received."""
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> tuple[str, list[str]]:
        seen: list[str] = []
        status, body = answer

        async def handle(request: web.Request) -> web.Response:
            seen.append(request.headers.get("X-Amz-Target", ""))
            return web.Response(
                status=status,
                body=json.dumps(body).encode(),
                content_type="application/x-amz-json-1.1",
                headers={"x-amzn-RequestId": f"req-{len(seen)}"},
            )

        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}", seen

    yield start
    for runner in runners:
        await runner.cleanup()


async def _stop_once(url: str) -> UpstreamError:
    """One StopServer through the budgeted caller (5 attempts allowed, no backoff)."""
    clock = SystemClock()
    limiter = QueuedLimiter(LocalBuckets(clock), lambda key: (100.0, 100), clock, max_queue=10)
    caller = BudgetedCaller(
        limiter, RetrySettings(max_attempts=5, base_delay=0, max_delay=0), clock
    )
    upstream = AioUpstream(ClientSettings(endpoint_url=url), emulator_credentials)
    try:
        with pytest.raises(UpstreamError) as caught:
            await caller.call(
                KEY,
                "StopServer",
                lambda: upstream.stop_server(TARGET),
                priority=Priority.CHANGE,
                deadline=None,
            )
    finally:
        await upstream.close()
        await limiter.close()
    return caught.value


class TestUnknownErrorsOverTheWire:
    async def test_an_unknown_4xx_is_one_call_and_a_client_error(
        self, fake_aws: Callable[[Answer], Awaitable[tuple[str, list[str]]]]
    ) -> None:
        """AWS answering 400 with a code the gateway has never heard of: one upstream call (not
        five), UPSTREAM_REJECTED (FAILED_PRECONDITION / 400), with AWS's code and request id."""
        url, seen = await fake_aws((400, {"__type": "BrandNewException", "Message": "no"}))
        error = await _stop_once(url)
        assert seen == ["TransferService.StopServer"]
        assert error.kind is ErrorKind.UPSTREAM_REJECTED
        assert error.kind.http_status == 400
        assert error.aws_code == "BrandNewException"
        assert error.aws_request_id == "req-1"

    async def test_an_unknown_5xx_is_still_retried(
        self, fake_aws: Callable[[Answer], Awaitable[tuple[str, list[str]]]]
    ) -> None:
        """An unknown code with a 500 is AWS failing: retried up to retry.max_attempts."""
        url, seen = await fake_aws((500, {"__type": "BrandNewFault", "Message": "oops"}))
        error = await _stop_once(url)
        assert len(seen) == 5
        assert error.kind is ErrorKind.UPSTREAM_INTERNAL

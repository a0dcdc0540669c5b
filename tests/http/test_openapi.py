"""/openapi.json is kept true: it matches the router, and fuzzing its JSON routes finds no 5xx."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import GatewayApp
from gateway.faces.http import NDJSON, SSE
from tests.support.http_helpers import base_url

#: The streaming routes: every answer they give must be one the document declares.
FUZZED = ("/v1/servers/{serverId}:stop", "/v1/servers/{serverId}:watch")


async def _document(client: aiohttp.ClientSession, app: GatewayApp) -> dict[str, Any]:
    async with client.get(f"{base_url(app)}/openapi.json") as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
    return document


def _routes(app: GatewayApp) -> set[tuple[str, str]]:
    """(path, method) the HTTP server really routes, in OpenAPI's spelling."""
    assert app._http is not None
    out = set()
    for route in app._http.app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD to every GET
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        out.add((re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", str(path)), route.method.lower()))
    return out


class TestDocument:
    async def test_every_route_is_documented_and_every_documented_route_exists(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """The document's paths and methods are exactly the router's."""
        document = await _document(client, gateway)
        assert document["openapi"].startswith("3.")
        documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
        assert documented == _routes(gateway)

    async def test_every_reference_resolves(
        self, gateway: GatewayApp, client: aiohttp.ClientSession
    ) -> None:
        """Each `$ref` names a schema the document defines."""
        document = await _document(client, gateway)
        refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(document))
        assert refs
        assert set(refs) <= set(document["components"]["schemas"])


def _strategy_for(document: dict[str, Any], path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests for one documented route, built from its parameters and body schema: mostly
    well-formed values, and arbitrary text where a string is declared."""
    (method, operation), *_ = document["paths"][path].items()
    text = st.text(max_size=40)
    server_ids = st.one_of(
        text.filter(lambda s: s and "/" not in s and "?" not in s and "#" not in s),
        st.from_regex(r"s-[0-9a-f]{17}", fullmatch=True),
    )
    accounts = st.one_of(text, st.from_regex(r"[0-9]{12}", fullmatch=True))
    regions = st.one_of(text, st.sampled_from(["us-east-1", "eu-west-1", "mars-1"]))
    values = {"serverId": server_ids, "accountId": accounts, "region": regions}
    query = {
        p["name"]: st.one_of(st.none(), values[p["name"]])
        for p in operation.get("parameters", [])
        if p["in"] == "query"
    }
    body: st.SearchStrategy[Any] = st.none()
    if "requestBody" in operation:
        props = document["components"]["schemas"]["StopServerBody"]["properties"]
        body = st.one_of(
            st.none(),
            st.fixed_dictionaries({}, optional={k: values[k] for k in props}),
            st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=3),
            st.binary(max_size=30),
        )
    return st.fixed_dictionaries(
        {
            "method": st.just(method),
            "server_id": server_ids,
            "query": st.fixed_dictionaries(query),
            "body": body,
            "sse": st.booleans(),
        }
    )


class TestFuzz:
    @pytest.mark.parametrize("path", FUZZED)
    async def test_no_5xx_and_no_hang_on_any_documented_input(
        self, gateway: GatewayApp, client: aiohttp.ClientSession, path: str
    ) -> None:
        """Requests generated from the document never get a 5xx, never hang (a 5 s bound per
        request against servers that do not exist), and only get declared statuses and types."""
        document = await _document(client, gateway)
        responses = document["paths"][path][next(iter(document["paths"][path]))]["responses"]
        loop = asyncio.get_running_loop()
        answers: list[int] = []

        async def one(request: dict[str, Any]) -> None:
            url = base_url(gateway) + path.replace("{serverId}", _quote_path(request["server_id"]))
            params = {k: v for k, v in request["query"].items() if v is not None}
            kwargs: dict[str, Any] = {"params": params}
            if isinstance(request["body"], bytes):
                kwargs["data"] = request["body"]
            elif request["body"] is not None:
                kwargs["json"] = request["body"]
            headers = {"Accept": SSE} if request["sse"] else {}
            async with (
                asyncio.timeout(5),
                client.request(request["method"], url, headers=headers, **kwargs) as response,
            ):
                await response.read()
                answers.append(response.status)
                assert response.status < 500, await response.text()
                assert str(response.status) in responses
                declared = responses[str(response.status)]["content"]
                content_type = response.headers["Content-Type"].split(";")[0]
                assert content_type in declared
                if response.status == 200:
                    assert content_type in (NDJSON, SSE)

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(request=_strategy_for(document, path))
        def run(request: dict[str, Any]) -> None:
            # hypothesis drives a sync test; each example runs on the test's own loop.
            asyncio.run_coroutine_threadsafe(one(request), loop).result(timeout=10)

        await asyncio.to_thread(run)
        assert len(answers) >= 60
        assert {400, 404} <= set(answers)  # the fuzz reached both validation and AWS


def _quote_path(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")

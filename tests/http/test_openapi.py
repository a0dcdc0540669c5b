"""/openapi.json is kept true: it is derived from the proto, matches the router and the proto's
google.api.http annotations, and fuzzing its JSON routes finds no 5xx (schemathesis runs on it
too: tests/http/test_schemathesis.py)."""

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
from gateway.config import AuthSettings, CallerSettings, CoreSettings
from gateway.faces.openapi import NDJSON, SERVICE, SSE, http_rule, openapi_document
from gateway.names import SERVER_ID
from gateway.regions import transfer_regions
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
        """Each `$ref` names a component the document defines, and every component is used."""
        document = await _document(client, gateway)
        refs = set(re.findall(r'"\$ref": "#/components/(\w+)/([^"]+)"', json.dumps(document)))
        defined = {(kind, name) for kind, items in document["components"].items() for name in items}
        assert refs
        assert refs <= defined
        unused = {(k, n) for k, n in defined - refs if k != "securitySchemes"}
        assert unused == set()

    def test_each_rpc_is_its_annotated_route_with_its_request_fields(self) -> None:
        """Every RPC of the service is documented at its google.api.http route and method,
        and the operation's path, query and body fields are exactly the request message's
        (path variables in the path; the rest in the body for `body: "*"`, else the query),
        in proto3 JSON names; the answer is the response message (a stream for streams)."""
        document = openapi_document()
        schemas = document["components"]["schemas"]
        for method in SERVICE.methods:
            verb, path, body = http_rule(method)
            operation = document["paths"][path][verb]
            assert operation["operationId"] == method.name
            fields = {f.json_name for f in method.input_type.fields}
            params = [p for p in operation["parameters"] if "$ref" not in p]
            in_path = {p["name"] for p in params if p["in"] == "path"}
            query = {p["name"] for p in params if p["in"] == "query"}
            assert in_path == set(re.findall(r"\{(\w+)\}", path))
            sent = set()
            if "requestBody" in operation:
                name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                sent = set(schemas[name.rsplit("/", 1)[1]]["properties"])
            assert in_path | query | sent == fields
            assert not (query and body), method.name
            assert bool(sent) == (body == "*" and fields != in_path), method.name
            ok = operation["responses"]["200"]["content"]
            output = method.output_type.full_name
            if method.server_streaming:
                assert set(ok) == {NDJSON, SSE}
                line = ok[NDJSON]["itemSchema"]["$ref"].rsplit("/", 1)[1]
                result = schemas[line]["properties"]["result"]["$ref"]
                assert result.endswith("/" + output)
            else:
                assert ok["application/json"]["schema"]["$ref"].endswith("/" + output)

    def test_messages_are_proto3_json_of_the_proto(self) -> None:
        """A message's schema has each proto field under its JSON name, enums as their value
        names, and (in what the gateway writes) every field without presence required."""
        schemas = openapi_document()["components"]["schemas"]
        update = schemas["transfer_gateway.v1.ServerStateUpdate"]
        descriptor = SERVICE.methods_by_name["StopServer"].output_type
        assert set(update["properties"]) == {f.json_name for f in descriptor.fields}
        assert update["additionalProperties"] is False
        assert update["properties"]["state"]["enum"] == [
            v.name for v in descriptor.fields_by_name["state"].enum_type.values
        ]
        assert update["properties"]["observedAt"] == {"type": "string", "format": "date-time"}
        # Message fields (Timestamp, Duration) have presence: absent when unset.
        assert set(update["required"]) == {
            "serverId",
            "accountId",
            "region",
            "state",
            "stage",
            "terminal",
            "awsRequestId",
        }

    def test_what_the_proto_cannot_say_is_stated(self) -> None:
        """Patterns and the regions validation accepts, the Grpc-Timeout and request-id
        headers, google.rpc.Status for every status of the error table, the AWS face's
        target header and bodies, each watch's own Last-Event-ID and its 204, and security
        schemes."""
        document = openapi_document(CoreSettings(extra_regions=("mars-1",)))
        stop = document["paths"]["/v1/servers/{serverId}:stop"]["post"]
        (server,) = [p for p in stop["parameters"] if p.get("name") == "serverId"]
        assert re.fullmatch(server["schema"]["pattern"].strip("^$"), "s-0123456789abcdef0")
        assert server["schema"]["pattern"] == f"^{SERVER_ID.pattern}$"
        body = document["components"]["schemas"]["transfer_gateway.v1.StopServerRequest.Body"]
        regions = body["properties"]["region"]["enum"]
        assert set(regions) == {"", "mars-1", *transfer_regions()}
        timeout = document["components"]["parameters"]["GrpcTimeout"]
        assert timeout["name"] == "Grpc-Timeout"
        assert re.fullmatch(timeout["schema"]["pattern"].strip("^$"), "30S")
        assert not re.fullmatch(timeout["schema"]["pattern"].strip("^$"), "30s")
        for status in ("400", "401", "403", "404", "409", "429", "500", "503", "504"):
            assert stop["responses"][status] == {"$ref": f"#/components/responses/Error{status}"}
        error = document["components"]["responses"]["Error404"]
        assert "SERVER_NOT_FOUND" in error["description"]
        assert error["content"]["application/json"]["schema"]["$ref"].endswith("google.rpc.Status")
        aws = document["paths"]["/"]["post"]
        (target,) = [p for p in aws["parameters"] if p.get("name") == "X-Amz-Target"]
        assert target["schema"]["enum"] == [
            "TransferService.StopServer",
            "TransferService.StartServer",
            "TransferService.DescribeServer",
            "TransferService.ListServers",
        ]
        for watch, spelled, other in (
            ("/v1/servers/{serverId}:watch", "s-0123456789abcdef0.3.ONLINE.end", "job-1.3"),
            ("/v1/jobs/{jobId}:watch", "job-0123456789abcdef.3.end", "s-1.3.ONLINE"),
        ):
            operation = document["paths"][watch]["get"]
            (resume,) = [
                _resolve(document, p)
                for p in operation["parameters"]
                if _resolve(document, p)["name"] == "Last-Event-ID"
            ]
            assert resume["in"] == "header"
            assert resume["required"] is False
            assert re.fullmatch(resume["schema"]["pattern"].strip("^$"), spelled), watch
            assert not re.fullmatch(resume["schema"]["pattern"].strip("^$"), other), watch
            assert "400" in resume["description"]
            ended = operation["responses"]["204"]
            assert "Last-Event-ID" in ended["description"]
            assert "x-request-id" in ended["headers"]
        stop_input = document["components"]["schemas"]["aws.transfer.StopServerRequest"]
        assert stop_input["required"] == ["ServerId"]
        assert set(document["components"]["securitySchemes"]) == {"bearer", "mutualTLS", "sigv4"}

    def test_security_is_applied_as_the_gateway_applies_it(self) -> None:
        """Auth off: nothing is asked for (the AWS face reads a SigV4 header if sent). Auth
        on: a bearer token or a client certificate on every API route, SigV4 too on the AWS
        face; health, readiness and this document stay open; /metrics as configured."""
        off = openapi_document()
        assert off["paths"]["/v1/jobs"]["post"]["security"] == []
        assert {} in off["paths"]["/"]["post"]["security"]
        auth = AuthSettings(callers=(CallerSettings(name="ops", token_sha256="0" * 64),))
        on = openapi_document(CoreSettings(), auth)
        paths = on["paths"]
        assert paths["/v1/servers/{serverId}:stop"]["post"]["security"] == [
            {"bearer": []},
            {"mutualTLS": []},
        ]
        assert {"sigv4": []} in paths["/"]["post"]["security"]
        assert {} not in paths["/"]["post"]["security"]
        for open_path in ("/healthz", "/readyz", "/openapi.json"):
            assert paths[open_path]["get"]["security"] == []
        assert paths["/metrics"]["get"]["security"] == [{"bearer": []}, {"mutualTLS": []}]
        scraped = openapi_document(
            CoreSettings(), AuthSettings(callers=auth.callers, metrics_require_auth=False)
        )
        assert scraped["paths"]["/metrics"]["get"]["security"] == []


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
        if p.get("in") == "query"
    }
    body: st.SearchStrategy[Any] = st.none()
    if "requestBody" in operation:
        body_schema = "transfer_gateway.v1.StopServerRequest.Body"
        props = document["components"]["schemas"][body_schema]["properties"]
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
        """Requests generated from the document never get a 5xx, never hang (every answer
        against servers that do not exist ends, within a bound per request), and only get
        declared statuses and types."""
        document = await _document(client, gateway)
        responses = document["paths"][path][next(iter(document["paths"][path]))]["responses"]
        loop = asyncio.get_running_loop()
        answers: list[int] = []

        # The bound catches a watch that streams instead of ending; it does not measure speed.
        # A first call for an account makes its botocore client (0.2-0.9 s at load 6, seconds
        # on a loaded 2-core machine, where 5 s was once too short), so it is generous.
        hang = 30.0

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
                asyncio.timeout(hang),
                client.request(request["method"], url, headers=headers, **kwargs) as response,
            ):
                await response.read()
                answers.append(response.status)
                assert response.status < 500, await response.text()
                assert str(response.status) in responses
                declared = _resolve(document, responses[str(response.status)])["content"]
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
            asyncio.run_coroutine_threadsafe(one(request), loop).result(timeout=hang + 10)

        await asyncio.to_thread(run)
        assert len(answers) >= 60
        assert {400, 404} <= set(answers)  # the fuzz reached both validation and AWS


def _resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """`item`, or what its `$ref` (#/components/...) names."""
    if "$ref" not in item:
        return item
    _, _, kind, name = item["$ref"].split("/", 3)
    resolved: dict[str, Any] = document["components"][kind][name]
    return resolved


def _quote_path(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")

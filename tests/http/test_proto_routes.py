"""The proto's google.api.http annotations declare exactly the HTTP face's streaming routes."""

from __future__ import annotations

import re

from google.api import annotations_pb2, http_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.app import GatewayApp

SERVICE = pb.DESCRIPTOR.services_by_name["TransferGateway"]


def _declared() -> dict[str, tuple[str, str, str]]:
    """method name -> (HTTP method, path in the router's spelling, body) from the proto."""
    out = {}
    for method in SERVICE.methods:
        rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert verb is not None, f"{method.name} has no google.api.http annotation"
        template = getattr(rule, verb)
        # A path variable names a proto field; the route names it by its JSON name.
        json_names = {f.name: f.json_name for f in method.input_type.fields}
        path = re.sub(r"\{(\w+)\}", lambda m, n=json_names: "{" + n[m.group(1)] + "}", template)
        out[method.name] = (verb.upper(), path, rule.body)
    return out


def _routes(app: GatewayApp) -> set[tuple[str, str]]:
    """(HTTP method, path) the HTTP server really routes, variables without their regex."""
    assert app._http is not None
    out = set()
    for route in app._http.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter"))
        out.add((route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return out


class TestHttpAnnotations:
    def test_every_rpc_declares_its_route(self) -> None:
        """StopServer is POST .../{server_id}:stop with the body carrying the other fields, and
        StartServer POST .../{server_id}:start alike; the job methods mirror AIP-151's shape;
        WatchServer is GET .../{server_id}:watch (its fields are query parameters)."""
        assert _declared() == {
            "StopServer": ("POST", "/v1/servers/{serverId}:stop", "*"),
            "StartServer": ("POST", "/v1/servers/{serverId}:start", "*"),
            "CreateJob": ("POST", "/v1/jobs", "*"),
            "GetJob": ("GET", "/v1/jobs/{jobId}", ""),
            "ListJobs": ("GET", "/v1/jobs", ""),
            "WatchJob": ("GET", "/v1/jobs/{jobId}:watch", ""),
            "CancelJob": ("POST", "/v1/jobs/{jobId}:cancel", "*"),
            "WatchServer": ("GET", "/v1/servers/{serverId}:watch", ""),
        }

    async def test_the_declared_routes_are_the_routes_served(self, gateway: GatewayApp) -> None:
        """Each annotation is a route of the running HTTP face, so the contract cannot drift
        from what is served."""
        served = _routes(gateway)
        for verb, path, _ in _declared().values():
            assert (verb, path) in served

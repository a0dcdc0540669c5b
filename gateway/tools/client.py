"""A small gRPC client for the gateway: what `transfer-gateway stop` / `start` and tests use."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Change:
    """What a `stop` or `start` command does: its RPC, the state it ends well in, its words."""

    method: str  # the RPC: "StopServer"
    done: pb.ServerState.ValueType  # the state that ends it well
    past: str  # "stopped", for the summary


STOP = Change("StopServer", pb.SERVER_STATE_OFFLINE, "stopped")
START = Change("StartServer", pb.SERVER_STATE_ONLINE, "started")


async def change_server(
    channel: grpc.aio.Channel,
    change: Change,
    server_id: str,
    *,
    account_id: str = "",
    region: str = "",
    timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, passed to the call
    token: str | None = None,
) -> AsyncIterator[pb.ServerStateUpdate]:
    """Stream the updates of one StopServer or StartServer call; a failure raises
    grpc.aio.AioRpcError."""
    stub = pb_grpc.TransferGatewayStub(channel)
    call: AsyncIterable[pb.ServerStateUpdate]
    if change.method == "StartServer":
        call = stub.StartServer(
            pb.StartServerRequest(server_id=server_id, account_id=account_id, region=region),
            timeout=timeout,
            metadata=auth_metadata(token),
        )
    else:
        call = stub.StopServer(
            pb.StopServerRequest(server_id=server_id, account_id=account_id, region=region),
            timeout=timeout,
            metadata=auth_metadata(token),
        )
    async for update in call:
        yield update


async def stop_server(
    channel: grpc.aio.Channel,
    server_id: str,
    *,
    account_id: str = "",
    region: str = "",
    timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, passed to the call
    token: str | None = None,
) -> AsyncIterator[pb.ServerStateUpdate]:
    """Stream the updates of one StopServer call; a failure raises grpc.aio.AioRpcError."""
    async for update in change_server(
        channel,
        STOP,
        server_id,
        account_id=account_id,
        region=region,
        timeout=timeout,
        token=token,
    ):
        yield update


def describe_update(update: pb.ServerStateUpdate) -> str:
    """One human line per update. A state not observed yet (UNSPECIFIED on the wire) is
    left out: it is no state of the server's."""
    stage = pb.Stage.Name(update.stage).removeprefix("STAGE_")
    wait = update.budget_wait.ToTimedelta().total_seconds()
    parts = [update.server_id, f"{stage:<18}"]
    if update.state != pb.SERVER_STATE_UNSPECIFIED:
        parts.append(pb.ServerState.Name(update.state).removeprefix("SERVER_STATE_"))
    if update.aws_request_id:
        parts.append(f"request={update.aws_request_id}")
    if wait:
        parts.append(f"budget_wait={wait:.2f}s")
    if update.terminal:
        parts.append("(terminal)")
    return "  ".join(parts)


def describe_error(error: grpc.aio.AioRpcError) -> str:
    """The code and what to fix: for bad fields each field with its reason (from the
    google.rpc.BadRequest in the trailers), not only the fields' names."""
    text = f"{error.code().name}: {error.details()}"
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # trailers that contradict the call's status: show the status alone
        return text
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            reasons = "; ".join(f"{v.field} {v.description}" for v in bad.field_violations)
            return f"{error.code().name}: {reasons}"
    return text


def update_json(update: pb.ServerStateUpdate) -> str:
    return json_format.MessageToJson(update, indent=None)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata carrying a bearer token (None without one)."""
    return (("authorization", f"Bearer {token}"),) if token else None


@dataclass(frozen=True)
class TlsOptions:
    """How the client reaches a gateway over TLS: the CA that signed the gateway's certificate,
    and a client certificate for mutual TLS."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: The name the gateway's certificate must carry, when it is not the target's host.
    server_name: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file)


def open_channel(target: str, tls: TlsOptions | None = None) -> grpc.aio.Channel:
    """A channel to the gateway: plain, TLS, or mutual TLS."""
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(target)

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca_file),
        private_key=read(tls.key_file),
        certificate_chain=read(tls.cert_file),
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.aio.secure_channel(target, credentials, options=options)


@dataclass
class _Line:
    """What the display shows for one server: its latest update, then how it ended."""

    server_id: str
    text: str = "waiting"
    outcome: str | None = None  # None while running; "OFFLINE", or an error code name
    ok: bool = False


@dataclass
class StopReport:
    """How a `stop` (or `start`) of several servers went, per server."""

    lines: list[_Line] = field(default_factory=list)
    change: Change = STOP

    @property
    def succeeded(self) -> int:
        return sum(1 for line in self.lines if line.ok)

    def summary(self) -> str:
        """The count, and which servers failed with which outcome (their lines, with the
        reasons, were shown already: not again)."""
        failed = [line for line in self.lines if not line.ok]
        text = f"{self.change.past} {self.succeeded} of {len(self.lines)} server(s)"
        if failed:
            text += "; failed: " + ", ".join(f"{f.server_id} ({f.outcome})" for f in failed)
        return text


class _Display:
    """One line per server. On a terminal the lines are redrawn in place as updates arrive;
    elsewhere (a pipe, a log) each update is printed as a line of its own, a failure on
    `err` (so `stop ... 2>&1 >/dev/null` shows only what went wrong)."""

    def __init__(self, report: StopReport, out: TextIO, err: TextIO, live: bool) -> None:
        self._report = report
        self._out = out
        self._err = err
        self._live = live
        self._drawn = False

    def update(self, line: _Line, *, failed: bool = False) -> None:
        if not self._live:
            stream = self._err if failed else self._out
            print(f"{line.server_id}  {line.text}", file=stream, flush=True)
            return
        if self._drawn:
            # Back to the first line of the block, then redraw every line (clearing each).
            self._out.write(f"\x1b[{len(self._report.lines)}F")
        for each in self._report.lines:
            self._out.write(f"\x1b[2K{each.server_id}  {each.text}\n")
        self._out.flush()
        self._drawn = True


async def stop_many(
    channel: grpc.aio.Channel,
    server_ids: Sequence[str],
    *,
    account_id: str = "",
    region: str = "",
    timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, passed to each call
    token: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    live: bool | None = None,
    as_json: bool = False,
    change: Change = STOP,
) -> StopReport:
    """Stop (or, with `change=START`, start) every server at once (the gateway queues them on
    the account's budget), showing one line per server as it goes, and return how each ended."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    live = (out.isatty() and len(server_ids) > 1) if live is None else live
    report = StopReport([_Line(server_id) for server_id in dict.fromkeys(server_ids)], change)
    display = _Display(report, out, err, live and not as_json)

    async def one(line: _Line) -> None:
        try:
            async for update in change_server(
                channel,
                change,
                line.server_id,
                account_id=account_id,
                region=region,
                timeout=timeout,
                token=token,
            ):
                if as_json:
                    print(update_json(update), file=out, flush=True)
                line.text = describe_update(update).removeprefix(line.server_id).strip()
                if update.terminal:
                    line.outcome = pb.ServerState.Name(update.state).removeprefix("SERVER_STATE_")
                    line.ok = update.state == change.done
                if not as_json:
                    display.update(line)
        except grpc.aio.AioRpcError as exc:
            line.outcome, line.ok = exc.code().name, False
            line.text = f"FAILED  {describe_error(exc)}"
            # Also with --json: stdout stays JSON, the failure goes to stderr.
            display.update(line, failed=True)
        else:
            if line.outcome is None:
                line.outcome = "ENDED_WITHOUT_TERMINAL_STATE"

    await asyncio.gather(*(one(line) for line in report.lines))
    return report

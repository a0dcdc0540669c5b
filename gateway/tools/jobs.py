"""The `transfer-gateway jobs` commands: create, list, get, watch and cancel fleet jobs.

Over gRPC, with a live progress line per job and a summary (`--json` for machines)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway._proto.transfer_gateway.v1 import gateway_pb2_grpc as pb_grpc
from gateway.tools.client import auth_metadata, describe_error

_OPERATIONS = {"stop": pb.JOB_OPERATION_STOP, "start": pb.JOB_OPERATION_START}
_ENDED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
#: Without a terminal, a progress line is printed at most this often (and at the end).
_PLAIN_EVERY_SECONDS = 1.0
_BAR_WIDTH = 24


def add_parser(sub: Any, common: Any) -> None:
    """`jobs` and its sub-commands; `common(parser)` adds the connection flags."""
    jobs = sub.add_parser("jobs", help="fleet jobs: stop or start many servers as one job")
    verbs = jobs.add_subparsers(
        dest="jobs_command", required=True, help="create, list, get, watch or cancel"
    )

    create = verbs.add_parser(
        "create",
        help="create a job (listed server ids, or a selector) and follow it to its end",
    )
    create.add_argument("operation", choices=sorted(_OPERATIONS), help="what to do to each server")
    create.add_argument(
        "server_id", nargs="*", help="servers to act on (s-...); none: select with the flags"
    )
    create.add_argument(
        "--account",
        action="append",
        default=[],
        help="12-digit account (repeatable; with server ids: their account, at most one);"
        " default: the gateway's",
    )
    create.add_argument(
        "--region",
        action="append",
        default=[],
        help="region (repeatable; with server ids: theirs, at most one); default: the gateway's",
    )
    create.add_argument(
        "--state",
        action="append",
        default=[],
        help="select only servers in this state (repeatable), e.g. ONLINE",
    )
    create.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="select only servers with this tag (repeatable: all must match)",
    )
    create.add_argument(
        "--request-id", default="", help="idempotency key: the same key answers the same job"
    )
    create.add_argument(
        "--no-watch", action="store_true", help="print the job's id and return at once"
    )
    for name, text in (
        ("list", "list the jobs, newest first"),
        ("get", "show one job and each of its servers"),
        ("watch", "follow a job to its end with a live progress line"),
        ("cancel", "cancel a job: nothing more is requested; what was is followed to its end"),
    ):
        verb = verbs.add_parser(name, help=text)
        if name != "list":
            verb.add_argument("job_id", help="the job's id (job-...)")
        common(verb)
    common(create)


@dataclass
class _Rate:
    """Servers finished per second since the watch began."""

    started: float
    first_done: int | None = None

    def per_second(self, done: int) -> float | None:
        if self.first_done is None:
            self.first_done = done
            return None
        elapsed = time.monotonic() - self.started
        if elapsed < 0.5:
            return None
        return (done - self.first_done) / elapsed


def progress_line(job: pb.Job, rate: float | None) -> str:
    """One line: id, operation, state, a bar, done/total, failures, queue, rate, time left."""
    counts = job.counts
    finished = counts.done + counts.failed + counts.cancelled
    total = max(counts.total, 1)
    filled = round(_BAR_WIDTH * finished / total)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    operation = pb.JobOperation.Name(job.operation).removeprefix("JOB_OPERATION_")
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
    parts = [
        job.job_id,
        operation,
        f"{state:<9}",
        f"[{bar}]",
        f"{counts.done}/{counts.total} done",
    ]
    if counts.failed:
        parts.append(f"{counts.failed} failed")
    if counts.cancelled:
        parts.append(f"{counts.cancelled} cancelled")
    if job.state not in _ENDED:
        parts.append(f"{counts.waiting_for_budget + counts.pending} to ask")
        parts.append(f"{counts.requested} under way")
        if rate is not None:
            parts.append(f"{rate:.1f}/s")
        if job.HasField("estimated_time_left"):
            left = job.estimated_time_left.ToTimedelta().total_seconds()
            parts.append(f"~{left:.0f}s left (budget)")
    return "  ".join(parts)


def summary(job: pb.Job, servers: Sequence[pb.JobServer] = ()) -> str:
    """The end of a job in words, naming each failed server and why."""
    counts = job.counts
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
    text = (
        f"job {job.job_id} {state}: {counts.done} of {counts.total} done, {counts.failed}"
        f" failed, {counts.cancelled} cancelled"
    )
    if job.error_message:
        text += f"; {job.error_message}"
    failed = [s for s in servers if s.status == pb.JOB_SERVER_STATUS_FAILED]
    for server in failed[:50]:
        text += f"\n  {server.server_id} ({server.account_id})  {server.error_reason}: "
        text += server.error_message
    if len(failed) > 50:
        text += f"\n  ... and {len(failed) - 50} more (jobs get {job.job_id} --json)"
    return text


class _Progress:
    """Redraws one line in place on a terminal; elsewhere prints it at most once a second."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self._out = out
        self._live = live
        self._last = 0.0
        self._drawn = False
        self._finished = False

    def show(self, line: str, *, final: bool = False) -> None:
        if self._finished:
            return
        self._finished = final
        if self._live:
            self._out.write(f"\r\x1b[2K{line}")
            if final:
                self._out.write("\n")
            self._out.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if final or now - self._last >= _PLAIN_EVERY_SECONDS:
            print(line, file=self._out, flush=True)
            self._last = now


async def watch_job(
    stub: Any,
    job_id: str,
    *,
    token: str | None,
    out: TextIO,
    as_json: bool,
    live: bool | None = None,
) -> pb.Job:
    """Follow a job to its end: a live progress line (or JSON lines), then the last Job."""
    live = out.isatty() if live is None else live
    progress = _Progress(out, live and not as_json)
    rate = _Rate(time.monotonic())
    last: pb.Job | None = None
    call = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=auth_metadata(token))
    async for update in call:
        last = update.job
        if as_json:
            print(json_format.MessageToJson(update, indent=None), file=out, flush=True)
            continue
        counts = update.job.counts
        speed = rate.per_second(counts.done + counts.failed)
        progress.show(progress_line(update.job, speed), final=update.job.state in _ENDED)
    if last is None:
        raise RuntimeError("the watch ended without an update")
    return last


async def run(args: argparse.Namespace, channel: grpc.aio.Channel, token: str | None) -> int:
    """One `jobs` sub-command; the exit code (0: done well, 1: the job or the call failed)."""
    # Any: grpc-stubs types the generated stub's methods as the sync API's.
    stub: Any = pb_grpc.TransferGatewayStub(channel)
    out, err = sys.stdout, sys.stderr
    metadata = auth_metadata(token)
    try:
        if args.jobs_command == "create":
            return await _create(args, stub, token, out, err)
        if args.jobs_command == "list":
            answer = await stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=metadata)
            if args.json:
                for job in answer.jobs:
                    print(json_format.MessageToJson(job, indent=None), file=out)
            else:
                for job in answer.jobs:
                    print(progress_line(job, None), file=out)
                if not answer.jobs:
                    print("no jobs", file=out)
            return 0
        if args.jobs_command == "get":
            job = await stub.GetJob(pb.GetJobRequest(job_id=args.job_id), metadata=metadata)
            if args.json:
                print(json_format.MessageToJson(job, indent=None), file=out)
            else:
                print(progress_line(job, None), file=out)
                for server in job.servers:
                    print(_server_line(server), file=out)
            return 0 if job.state != pb.JOB_STATE_FAILED else 1
        if args.jobs_command == "watch":
            job = await watch_job(stub, args.job_id, token=token, out=out, as_json=args.json)
            return await _finish(stub, job, metadata, out, err, as_json=args.json)
        if args.jobs_command == "cancel":
            job = await stub.CancelJob(pb.CancelJobRequest(job_id=args.job_id), metadata=metadata)
            if args.json:
                print(json_format.MessageToJson(job, indent=None), file=out)
            else:
                print(f"cancel requested: {progress_line(job, None)}", file=out)
            return 0
    except grpc.aio.AioRpcError as exc:
        print(f"transfer-gateway jobs {args.jobs_command}: {describe_error(exc)}", file=err)
        return 1
    raise AssertionError(f"unknown jobs command {args.jobs_command}")


async def _create(
    args: argparse.Namespace,
    stub: Any,
    token: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    request = pb.CreateJobRequest(operation=_OPERATIONS[args.operation], request_id=args.request_id)
    if args.server_id:
        if len(args.account) > 1 or len(args.region) > 1 or args.state or args.tag:
            print(
                "transfer-gateway jobs create: with server ids, give at most one --account and"
                " one --region, and no --state or --tag",
                file=err,
            )
            return 2
        account = args.account[0] if args.account else ""
        region = args.region[0] if args.region else ""
        request.targets.extend(
            pb.JobTarget(server_id=s, account_id=account, region=region) for s in args.server_id
        )
    else:
        tags = {}
        for raw in args.tag:
            key, sep, value = raw.partition("=")
            if not sep or not key:
                print(f"transfer-gateway jobs create: --tag {raw!r} is not KEY=VALUE", file=err)
                return 2
            tags[key] = value
        states = []
        for name in args.state:
            full = f"SERVER_STATE_{name.upper().removeprefix('SERVER_STATE_')}"
            if full not in pb.ServerState.keys():  # noqa: SIM118 - an EnumTypeWrapper
                print(f"transfer-gateway jobs create: no such state {name!r}", file=err)
                return 2
            states.append(pb.ServerState.Value(full))
        request.selector.CopyFrom(
            pb.JobSelector(account_ids=args.account, regions=args.region, states=states, tags=tags)
        )
    metadata = auth_metadata(token)
    operation = await stub.CreateJob(request, metadata=metadata)
    job = pb.Job()
    operation.metadata.Unpack(job)
    if args.json and args.no_watch:
        print(json_format.MessageToJson(operation, indent=None), file=out)
        return 0
    if not args.json:
        print(f"created {job.job_id} ({operation.name})", file=out, flush=True)
    if args.no_watch:
        return 0
    last = await watch_job(stub, job.job_id, token=token, out=out, as_json=args.json)
    return await _finish(stub, last, metadata, out, err, as_json=args.json)


async def _finish(
    stub: Any,
    job: pb.Job,
    metadata: Any,
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool,
) -> int:
    full = await stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=metadata)
    ok = full.state == pb.JOB_STATE_SUCCEEDED
    if not as_json:
        print(summary(full, full.servers), file=out if ok else err, flush=True)
    return 0 if ok else 1


def _server_line(server: pb.JobServer) -> str:
    status = pb.JobServerStatus.Name(server.status).removeprefix("JOB_SERVER_STATUS_")
    state = pb.ServerState.Name(server.state).removeprefix("SERVER_STATE_")
    line = f"  {server.server_id}  {server.account_id}/{server.region}  {status:<18} {state}"
    if server.error_reason:
        line += f"  {server.error_reason}: {server.error_message}"
    return line

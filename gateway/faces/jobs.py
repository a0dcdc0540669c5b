"""Fleet jobs on the faces: gRPC methods, google.longrunning.Operations, HTTP routes.

They translate to and from gateway.core.jobs; no logic beyond reading and rendering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import structlog
from aiohttp import web
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, duration_pb2, empty_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.core.jobs import (
    ItemStatus,
    Job,
    JobEvent,
    JobItem,
    JobManager,
    JobSpec,
    JobState,
    build_spec,
)
from gateway.domain import Target
from gateway.errors import ErrorKind, FieldViolation, GatewayError, InvalidArgument
from gateway.faces.auth import Access, Caller, grpc_caller, request_caller
from gateway.faces.http import _send, _wants_sse, error_response, status_json
from gateway.faces.messages import STATES, error_to_status
from gateway.faces.openapi import NDJSON, SSE
from gateway.faces.sse import (
    LAST_EVENT_ID,
    JobEventIds,
    JobResumeFrom,
    parse_job_last_event_id,
    retry_frame,
)
from gateway.observability import Metrics

log = structlog.get_logger(__name__)
_M = TypeVar("_M", bound=Message)

_OPERATION_TO: dict[str, pb.JobOperation.ValueType] = {
    "StopServer": pb.JOB_OPERATION_STOP,
    "StartServer": pb.JOB_OPERATION_START,
}
_OPERATION_OF: dict[int, str] = {v: k for k, v in _OPERATION_TO.items()}
_JOB_STATES: dict[JobState, pb.JobState.ValueType] = {
    JobState.SELECTING: pb.JOB_STATE_SELECTING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_ITEM_STATUSES: dict[ItemStatus, pb.JobServerStatus.ValueType] = {
    s: pb.JobServerStatus.ValueType(pb.JobServerStatus.Value(f"JOB_SERVER_STATUS_{s.name}"))
    for s in ItemStatus
}
#: ListJobs' page_size is an int32.
_INT32_MAX = 2**31 - 1
#: ListJobs / ListOperations page sizes.
_DEFAULT_PAGE = 50
_MAX_PAGE = 1000
#: A dummy server id, to check a caller against an account and region with the one rule.
_ANY_SERVER = "s-00000000000000000"


# -- rendering ------------------------------------------------------------------------------------
def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def item_to_proto(item: JobItem) -> pb.JobServer:
    return pb.JobServer(
        server_id=item.target.server_id,
        account_id=item.target.account_id,
        region=item.target.region,
        status=_ITEM_STATUSES[item.status],
        state=STATES[item.state],
        error_reason=item.reason,
        error_message=item.message,
        aws_request_id=item.aws_request_id,
        update_time=_timestamp(item.updated_at),
    )


def job_to_proto(
    job: Job,
    estimate: float | None,
    *,
    servers: bool,
    state: JobState | None = None,
    counts: Mapping[ItemStatus, int] | None = None,
) -> pb.Job:
    """The job in proto; `state` and `counts` as they were at an event (now, by default)."""
    state = job.state if state is None else state
    counts = job.counts() if counts is None else counts
    spec = job.spec
    out = pb.Job(
        job_id=job.id,
        name=job.name,
        operation=_OPERATION_TO[spec.operation],
        targets=[
            pb.JobTarget(server_id=t.server_id, account_id=t.account_id, region=t.region)
            for t in spec.targets
        ],
        state=_JOB_STATES[state],
        counts=pb.JobCounts(
            total=sum(counts.values()),
            pending=counts.get(ItemStatus.PENDING, 0),
            waiting_for_budget=counts.get(ItemStatus.WAITING_FOR_BUDGET, 0),
            requested=counts.get(ItemStatus.REQUESTED, 0),
            done=counts.get(ItemStatus.DONE, 0),
            failed=counts.get(ItemStatus.FAILED, 0),
            cancelled=counts.get(ItemStatus.CANCELLED, 0),
        ),
        create_time=_timestamp(job.created_at),
        update_time=_timestamp(job.updated_at or job.created_at),
        cancel_requested=job.cancel_requested,
        error_message=job.error,
    )
    if spec.selector is not None:
        out.selector.CopyFrom(
            pb.JobSelector(
                account_ids=list(spec.selector.accounts),
                regions=list(spec.selector.regions),
                states=[STATES[s] for s in spec.selector.states],
                tags=dict(spec.selector.tags),
            )
        )
    if estimate is not None and not state.ended:
        left = duration_pb2.Duration()
        left.FromNanoseconds(int(estimate * 1e9))
        out.estimated_time_left.CopyFrom(left)
    if servers:
        out.servers.extend(item_to_proto(item) for item in job.items)
    return out


def event_to_proto(event: JobEvent) -> pb.JobUpdate:
    update = pb.JobUpdate(
        job=job_to_proto(
            event.job, event.estimate, servers=False, state=event.state, counts=event.counts
        )
    )
    if event.item is not None:
        update.server.CopyFrom(item_to_proto(event.item))
    return update


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def job_to_operation(job: Job, estimate: float | None) -> operations_pb2.Operation:
    """The job as a google.longrunning.Operation (AIP-151): metadata the Job (counts), done
    once it ended, with the Job as the response, or the error when the job FAILED."""
    summary = job_to_proto(job, estimate, servers=False)
    operation = operations_pb2.Operation(name=job.name, metadata=_pack(summary))
    if job.state.ended:
        operation.done = True
        if job.state is JobState.FAILED:
            failed = job.counts()[ItemStatus.FAILED]
            message = job.error or f"{failed} of {len(job.items)} server(s) failed"
            operation.error.CopyFrom(
                error_to_status(GatewayError(ErrorKind.JOB_FAILED, message, {"job_id": job.id}))
            )
        else:
            operation.response.CopyFrom(_pack(job_to_proto(job, None, servers=True)))
    return operation


# -- reading ------------------------------------------------------------------------------------
def spec_from_proto(
    request: pb.CreateJobRequest,
    *,
    default_account: str,
    default_region: str,
    names: Callable[[str], str] = lambda name: name,
) -> JobSpec:
    """The core's JobSpec from a CreateJobRequest (InvalidArgument naming every bad field)."""
    selector = None
    if request.HasField("selector"):
        sel = request.selector
        selector = (
            list(sel.account_ids),
            list(sel.regions),
            [pb.ServerState.Name(s).removeprefix("SERVER_STATE_") for s in sel.states],
            dict(sel.tags),
        )
    return build_spec(
        _OPERATION_OF.get(request.operation, ""),
        [(t.server_id, t.account_id, t.region) for t in request.targets],
        selector,
        request_id=request.request_id,
        default_account=default_account,
        default_region=default_region,
        names=names,
    )


def _page(
    jobs: list[Job], size: int, token: str, names: Callable[[str], str] = lambda name: name
) -> tuple[list[Job], str]:
    """One page of `jobs` (newest first) after `token` (the last job id of the previous page);
    `names` spells the fields as the face's callers do (HTTP: pageSize, pageToken)."""
    if size < 0:
        raise InvalidArgument([FieldViolation(names("page_size"), "must be >= 0")])
    size = min(size or _DEFAULT_PAGE, _MAX_PAGE)
    start = 0
    if token:
        ids = [j.id for j in jobs]
        if token not in ids:
            raise InvalidArgument([FieldViolation(names("page_token"), "is not a token this gave")])
        start = ids.index(token) + 1
    page = jobs[start : start + size]
    more = start + size < len(jobs)
    return page, (page[-1].id if more and page else "")


# -- who may see a job ------------------------------------------------------------------------
class _Guard:
    """A caller may create, see, watch or cancel a job only on accounts they may act on."""

    def __init__(self, access: Access | None) -> None:
        self._access = access

    def check(self, caller: Caller | None, job_or_targets: Job | list[Target]) -> None:
        if self._access is None or caller is None:
            return
        targets = job_or_targets if isinstance(job_or_targets, list) else _scope(job_or_targets)
        for target in targets:
            self._access.authorize(caller, target)

    def visible(self, caller: Caller | None, job: Job) -> bool:
        try:
            self.check(caller, job)
        except GatewayError:
            return False
        return True


def _scope(job: Job) -> list[Target]:
    """One target per (account, region) the job acts on."""
    return _spec_scope(job.spec)


def _spec_scope(spec: JobSpec) -> list[Target]:
    if spec.selector is not None:
        return [
            Target(a, r, _ANY_SERVER) for a in spec.selector.accounts for r in spec.selector.regions
        ]
    seen = dict.fromkeys((t.account_id, t.region) for t in spec.targets)
    return [Target(a, r, _ANY_SERVER) for a, r in seen]


# -- gRPC ---------------------------------------------------------------------------------------
class JobMethods:
    """The TransferGateway service's job methods (mixed into faces.grpc's servicer)."""

    _jobs: JobManager | None
    _access: Access | None
    _metrics: Metrics

    def _manager(self) -> JobManager:
        if self._jobs is None:
            raise GatewayError(ErrorKind.INTERNAL, "jobs are not served here")
        return self._jobs

    async def _unary(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[JobManager, Caller | None], Awaitable[_M]],
    ) -> _M:
        started = time.monotonic()
        outcome = "OK"
        try:
            caller = grpc_caller(self._access, context) if self._access else None
            return await work(self._manager(), caller)
        except GatewayError as exc:
            outcome = exc.kind.grpc_code.name
            await _abort(context, exc)
            raise AssertionError("unreachable") from exc  # abort raises
        except Exception:
            outcome = "INTERNAL"
            log.exception("call.bug", method=method)
            await _abort(context, GatewayError(ErrorKind.INTERNAL, "internal error in the gateway"))
            raise
        finally:
            self._metrics.calls.labels("grpc", method, outcome).inc()
            log.info(
                "call.end",
                method=method,
                face="grpc",
                outcome=outcome,
                duration=round(time.monotonic() - started, 4),
            )

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> operations_pb2.Operation:
        async def work(jobs: JobManager, caller: Caller | None) -> operations_pb2.Operation:
            settings = jobs.core.settings
            spec = spec_from_proto(
                request,
                default_account=settings.default_account,
                default_region=settings.default_region,
            )
            _Guard(self._access).check(caller, _spec_scope(spec))
            job = await jobs.create(spec)
            return job_to_operation(job, jobs.estimate(job))

        return await self._unary("CreateJob", context, work)

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        async def work(jobs: JobManager, caller: Caller | None) -> pb.Job:
            job = await jobs.get(request.job_id)
            _Guard(self._access).check(caller, job)
            return job_to_proto(job, jobs.estimate(job), servers=True)

        return await self._unary("GetJob", context, work)

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        async def work(jobs: JobManager, caller: Caller | None) -> pb.ListJobsResponse:
            guard = _Guard(self._access)
            mine = [j for j in await jobs.list_jobs() if guard.visible(caller, j)]
            page, token = _page(mine, request.page_size, request.page_token)
            return pb.ListJobsResponse(
                jobs=[job_to_proto(j, jobs.estimate(j), servers=False) for j in page],
                next_page_token=token,
            )

        return await self._unary("ListJobs", context, work)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        async def work(jobs: JobManager, caller: Caller | None) -> pb.Job:
            job = await jobs.get(request.job_id)
            _Guard(self._access).check(caller, job)
            job = await jobs.cancel(job.id)
            return job_to_proto(job, jobs.estimate(job), servers=False)

        return await self._unary("CancelJob", context, work)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.JobUpdate]:
        outcome = "OK"
        self._metrics.open_streams.labels("grpc").inc()
        try:
            jobs = self._manager()
            caller = grpc_caller(self._access, context) if self._access else None
            job = await jobs.get(request.job_id)
            _Guard(self._access).check(caller, job)
            async for event in jobs.watch(job.id):
                yield event_to_proto(event)
        except GatewayError as exc:
            outcome = exc.kind.grpc_code.name
            await _abort(context, exc)
        except BaseException:
            outcome = "CANCELLED"
            raise
        finally:
            self._metrics.open_streams.labels("grpc").dec()
            self._metrics.calls.labels("grpc", "WatchJob", outcome).inc()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> None:
    status = rpc_status.to_status(error_to_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)


class OperationsService(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """google.longrunning.Operations over the gateway's jobs (operation name
    "operations/<job id>"), so standard tooling polls a job as any long-running operation.
    DeleteOperation is UNIMPLEMENTED: job records are the audit trail."""

    def __init__(self, jobs: JobManager, access: Access | None, metrics: Metrics) -> None:
        self._jobs = jobs
        self._access = access
        self._metrics = metrics
        self._methods = JobMethods()
        self._methods._jobs = jobs
        self._methods._access = access
        self._methods._metrics = metrics

    async def _job(self, name: str) -> Job:
        job_id = name.removeprefix("operations/")
        if job_id == name or not job_id:
            raise InvalidArgument([FieldViolation("name", "must be operations/<job id>")])
        return await self._jobs.get(job_id)

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Any
    ) -> operations_pb2.Operation:
        async def work(jobs: JobManager, caller: Caller | None) -> operations_pb2.Operation:
            job = await self._job(request.name)
            _Guard(self._access).check(caller, job)
            return job_to_operation(job, jobs.estimate(job))

        return await self._methods._unary("GetOperation", context, work)

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: Any
    ) -> operations_pb2.ListOperationsResponse:
        async def work(
            jobs: JobManager, caller: Caller | None
        ) -> operations_pb2.ListOperationsResponse:
            if request.name not in ("", "operations"):
                raise InvalidArgument([FieldViolation("name", "must be empty or operations")])
            if request.filter:
                raise InvalidArgument([FieldViolation("filter", "filters are not supported")])
            guard = _Guard(self._access)
            mine = [j for j in await jobs.list_jobs() if guard.visible(caller, j)]
            page, token = _page(mine, request.page_size, request.page_token)
            return operations_pb2.ListOperationsResponse(
                operations=[job_to_operation(j, jobs.estimate(j)) for j in page],
                next_page_token=token,
            )

        return await self._methods._unary("ListOperations", context, work)

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: Any
    ) -> empty_pb2.Empty:
        async def work(jobs: JobManager, caller: Caller | None) -> empty_pb2.Empty:
            job = await self._job(request.name)
            _Guard(self._access).check(caller, job)
            await jobs.cancel(job.id)
            return empty_pb2.Empty()

        return await self._methods._unary("CancelOperation", context, work)

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: Any
    ) -> operations_pb2.Operation:
        async def work(jobs: JobManager, caller: Caller | None) -> operations_pb2.Operation:
            job = await self._job(request.name)
            _Guard(self._access).check(caller, job)
            timeout = (
                request.timeout.ToTimedelta().total_seconds()
                if request.HasField("timeout")
                else None
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for _ in jobs.watch(job.id):
                        pass
            return job_to_operation(job, jobs.estimate(job))

        return await self._methods._unary("WaitOperation", context, work)

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: Any
    ) -> empty_pb2.Empty:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "jobs are kept; cancel one instead")
        raise AssertionError("unreachable")


# -- HTTP ---------------------------------------------------------------------------------------
def _camel(path: str) -> str:
    """A field path as proto JSON spells it: targets[0].server_id -> targets[0].serverId."""
    parts = path.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


class JobRoutes:
    """The job routes of the HTTP face, mirroring the gRPC methods (proto JSON bodies)."""

    def __init__(
        self,
        jobs: JobManager,
        metrics: Metrics,
        *,
        access: Access | None = None,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self._jobs = jobs
        self._metrics = metrics
        self._access = access
        self._heartbeat_seconds = heartbeat_seconds

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/jobs", self.create)
        app.router.add_get("/v1/jobs", self.list, allow_head=False)
        app.router.add_get("/v1/jobs/{jobId:[^/:]+}", self.get, allow_head=False)
        app.router.add_get("/v1/jobs/{jobId:[^/]+}:watch", self.watch, allow_head=False)
        app.router.add_post("/v1/jobs/{jobId:[^/]+}:cancel", self.cancel)

    def _caller(self, request: web.Request) -> Caller | None:
        return request_caller(request) if self._access is not None else None

    async def _answer(
        self, request: web.Request, method: str, work: Callable[[], Awaitable[Message]]
    ) -> web.Response:
        outcome = "OK"
        try:
            return web.json_response(_json(await work()))
        except GatewayError as exc:
            outcome = exc.kind.grpc_code.name
            return error_response(exc)
        except Exception:
            outcome = "INTERNAL"
            log.exception("call.bug", face="http", method=method)
            return error_response(GatewayError(ErrorKind.INTERNAL, "internal error in the gateway"))
        finally:
            self._metrics.calls.labels("http", method, outcome).inc()
            log.info("call.end", face="http", method=method, outcome=outcome)

    async def create(self, request: web.Request) -> web.Response:
        async def work() -> Message:
            body = await _read_body(request)
            message = pb.CreateJobRequest()
            try:
                json_format.ParseDict(body, message)
            except json_format.ParseError as exc:
                raise InvalidArgument([FieldViolation("body", str(exc)[:200])]) from None
            settings = self._jobs.core.settings
            spec = spec_from_proto(
                message,
                default_account=settings.default_account,
                default_region=settings.default_region,
                names=_camel,
            )
            _Guard(self._access).check(self._caller(request), _spec_scope(spec))
            job = await self._jobs.create(spec)
            operation: Message = job_to_operation(job, self._jobs.estimate(job))
            return operation

        return await self._answer(request, "CreateJob", work)

    async def list(self, request: web.Request) -> web.Response:
        async def work() -> Message:
            for name in ("pageSize", "pageToken"):
                if len(request.query.getall(name, [])) > 1:
                    raise InvalidArgument([FieldViolation(name, "must be given at most once")])
            try:
                size = int(request.query.get("pageSize", "0") or 0)
            except ValueError:
                size = -1
            # An int32, as the proto (and gRPC) has it: a larger number is not a page size.
            if not 0 <= size <= _INT32_MAX:
                raise InvalidArgument(
                    [FieldViolation("pageSize", f"must be an integer from 0 to {_INT32_MAX}")]
                )
            guard = _Guard(self._access)
            caller = self._caller(request)
            mine = [j for j in await self._jobs.list_jobs() if guard.visible(caller, j)]
            page, token = _page(mine, size, request.query.get("pageToken", ""), names=_camel)
            return pb.ListJobsResponse(
                jobs=[job_to_proto(j, self._jobs.estimate(j), servers=False) for j in page],
                next_page_token=token,
            )

        return await self._answer(request, "ListJobs", work)

    async def get(self, request: web.Request) -> web.Response:
        async def work() -> Message:
            job = await self._jobs.get(request.match_info["jobId"])
            _Guard(self._access).check(self._caller(request), job)
            return job_to_proto(job, self._jobs.estimate(job), servers=True)

        return await self._answer(request, "GetJob", work)

    async def cancel(self, request: web.Request) -> web.Response:
        async def work() -> Message:
            job = await self._jobs.get(request.match_info["jobId"])
            _Guard(self._access).check(self._caller(request), job)
            job = await self._jobs.cancel(job.id)
            return job_to_proto(job, self._jobs.estimate(job), servers=False)

        return await self._answer(request, "CancelJob", work)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        sse = _wants_sse(request)
        outcome = "OK"
        self._metrics.open_streams.labels("http").inc()
        response: web.StreamResponse | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            try:
                # A reconnecting EventSource names the last event it had (gateway.faces.sse);
                # a bad one is the caller's field, checked before the job is looked up.
                resume = _last_event_id(request, sse)
                if isinstance(resume, FieldViolation):
                    raise InvalidArgument([resume])
                job = await self._jobs.get(request.match_info["jobId"])
                _Guard(self._access).check(self._caller(request), job)
            except GatewayError as exc:
                outcome = exc.kind.grpc_code.name
                return error_response(exc)
            if resume is not None and resume.ended:
                # The client had the stream's end: 204 tells EventSource to stop reconnecting.
                return web.Response(status=204, headers={"Cache-Control": "no-cache"})
            ids = JobEventIds(job.id, resume) if sse else None
            response = web.StreamResponse(
                headers={
                    "Content-Type": SSE if sse else NDJSON,
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            if sse:
                await response.write(retry_frame())
                heartbeat = asyncio.create_task(self._heartbeat(response))
            try:
                # A resumed watch starts with the job as it is now: its counts cover the
                # events missed, so nothing needs replaying; only the ids go on.
                async for event in self._jobs.watch(job.id):
                    event_id = ids.for_event(event.final) if ids is not None else None
                    payload = _json(event_to_proto(event))
                    await _send(response, sse, "result", payload, event_id=event_id)
            except GatewayError as exc:
                outcome = exc.kind.grpc_code.name
                event_id = ids.for_status() if ids is not None else None
                await _send(response, sse, "error", status_json(exc), event_id=event_id)
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            outcome = "CANCELLED"
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                    await heartbeat
            self._metrics.open_streams.labels("http").dec()
            self._metrics.calls.labels("http", "WatchJob", outcome).inc()
            log.info("call.end", face="http", method="WatchJob", outcome=outcome)

    async def _heartbeat(self, response: web.StreamResponse) -> None:
        while True:
            await self._jobs.clock.sleep(self._heartbeat_seconds)
            await response.write(b": keep-alive\n\n")


def _last_event_id(request: web.Request, sse: bool) -> JobResumeFrom | FieldViolation | None:
    """Where a reconnecting EventSource left off; None without the header (or an empty one),
    and on NDJSON, which has no ids."""
    raw = request.headers.get(LAST_EVENT_ID, "")
    if not raw or not sse:
        return None
    return parse_job_last_event_id(raw, request.match_info["jobId"])


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


#: A job request body: a few hundred targets at most in practice; 10,000 targets fit.
MAX_JOB_BODY_BYTES = 2 * 1024 * 1024


async def _read_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JOB_BODY_BYTES:
        raise InvalidArgument(
            [FieldViolation("body", f"must be at most {MAX_JOB_BODY_BYTES} bytes")]
        )
    raw = await request.content.read(MAX_JOB_BODY_BYTES + 1)
    if len(raw) > MAX_JOB_BODY_BYTES:
        raise InvalidArgument(
            [FieldViolation("body", f"must be at most {MAX_JOB_BODY_BYTES} bytes")]
        )
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")]) from None
    if not isinstance(body, dict):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    return body

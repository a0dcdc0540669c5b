"""Domain <-> protobuf: state updates and errors as the wire sees them, for both transports."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gateway._proto.transfer_gateway.v1 import gateway_pb2 as pb
from gateway.domain import ServerState, StateUpdate
from gateway.errors import ERROR_DOMAIN, ErrorKind, GatewayError

#: google.rpc.ResourceInfo.resource_type of what an error names: AWS's own service name for a
#: Transfer Family server, the gateway's domain for an account it does not serve.
SERVER_RESOURCE = "transfer.amazonaws.com/Server"
ACCOUNT_RESOURCE = f"{ERROR_DOMAIN}/Account"

STATES: dict[ServerState, pb.ServerState.ValueType] = {
    ServerState.UNKNOWN: pb.SERVER_STATE_UNSPECIFIED,
    ServerState.OFFLINE: pb.SERVER_STATE_OFFLINE,
    ServerState.ONLINE: pb.SERVER_STATE_ONLINE,
    ServerState.STARTING: pb.SERVER_STATE_STARTING,
    ServerState.STOPPING: pb.SERVER_STATE_STOPPING,
    ServerState.START_FAILED: pb.SERVER_STATE_START_FAILED,
    ServerState.STOP_FAILED: pb.SERVER_STATE_STOP_FAILED,
}


def stage_to_proto(update: StateUpdate) -> pb.Stage.ValueType:
    """The proto Stage the update's wire name stands for: `STAGE_` + its name, so a new
    operation's REQUESTED stage (STAGE_START_REQUESTED, ...) needs only its proto value."""
    return pb.Stage.Value(f"STAGE_{update.wire_stage}")


def update_to_proto(update: StateUpdate) -> pb.ServerStateUpdate:
    observed = timestamp_pb2.Timestamp()
    observed.FromNanoseconds(int(update.observed_at * 1e9))
    wait = duration_pb2.Duration()
    wait.FromNanoseconds(int(update.budget_wait * 1e9))
    return pb.ServerStateUpdate(
        server_id=update.target.server_id,
        account_id=update.target.account_id,
        region=update.target.region,
        state=STATES[update.state],
        stage=stage_to_proto(update),
        observed_at=observed,
        terminal=update.terminal,
        aws_request_id=update.aws_request_id,
        budget_wait=wait,
    )


def error_to_status(error: GatewayError) -> status_pb2.Status:
    """google.rpc.Status with ErrorInfo always, ResourceInfo when the error names a server (or
    an account the gateway does not serve), BadRequest for bad fields, RetryInfo when a retry
    can succeed (the same details on gRPC and in HTTP bodies)."""
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=error.kind.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details.append(_pack(info))
    resource = resource_info(error)
    if resource is not None:
        details.append(_pack(resource))
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(0.0, error.retry_after) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    code: int = error.kind.grpc_code.value[0]
    return status_pb2.Status(code=code, message=error.message, details=details)


def resource_info(error: GatewayError) -> error_details_pb2.ResourceInfo | None:
    """What the error is about, from its metadata: the account when it is the account the
    gateway does not serve, else the server when one is named, else nothing."""
    meta = error.metadata
    account = meta.get("account_id", "")
    if error.kind is ErrorKind.ACCOUNT_NOT_CONFIGURED and account:
        return error_details_pb2.ResourceInfo(
            resource_type=ACCOUNT_RESOURCE, resource_name=account, description=error.message
        )
    server = meta.get("server_id", "")
    if not server:
        return None
    return error_details_pb2.ResourceInfo(
        resource_type=SERVER_RESOURCE,
        resource_name=server,
        owner=account,
        description=error.message,
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed

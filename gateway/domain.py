"""The core's vocabulary: targets, server states, stages and state updates."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ServerState(enum.StrEnum):
    """Transfer Family's `State` enum (botocore model 2018-11-05), plus UNKNOWN before a read."""

    UNKNOWN = "UNKNOWN"
    OFFLINE = "OFFLINE"
    ONLINE = "ONLINE"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    START_FAILED = "START_FAILED"
    STOP_FAILED = "STOP_FAILED"

    @classmethod
    def parse(cls, value: str) -> ServerState:
        """An AWS state string; anything this model does not know becomes UNKNOWN."""
        # A dict lookup, not cls(value): a poll parses a state for every server on a page.
        member = cls._value2member_map_.get(value)
        return member if isinstance(member, ServerState) else cls.UNKNOWN


class Stage(enum.Enum):
    """The gateway's own progress on one request, whatever the operation.

    REQUESTED is "AWS accepted the operation's call (or said it is under way already)"; each
    operation names it on the wire (StopServer: STOP_REQUESTED, see StateUpdate.stage_name),
    so the proto keeps one value per operation while the core has one stage for all."""

    WAITING_FOR_BUDGET = "WAITING_FOR_BUDGET"
    REQUESTED = "REQUESTED"
    WATCHING = "WATCHING"
    DONE = "DONE"


@dataclass(frozen=True, slots=True)
class BucketKey:
    """One upstream budget: AWS throttles per account and region, so the gateway does too."""

    account_id: str
    region: str

    def __str__(self) -> str:
        return f"{self.account_id}/{self.region}"


@dataclass(frozen=True, slots=True)
class Target:
    """A validated server address: which server, in which account and region."""

    account_id: str
    region: str
    server_id: str

    @property
    def bucket(self) -> BucketKey:
        return BucketKey(self.account_id, self.region)


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """One event of a stream, shared by every caller of the same stop or watch."""

    target: Target
    state: ServerState
    stage: Stage
    observed_at: float  # wall clock, seconds since the epoch
    terminal: bool = False
    aws_request_id: str = ""
    budget_wait: float = 0.0
    #: The stage as the wire names it (the operation's name for REQUESTED, e.g.
    #: "STOP_REQUESTED"); empty: the stage's own name.
    stage_name: str = ""

    @property
    def wire_stage(self) -> str:
        """`stage_name`, or the stage's own name when the core gave none."""
        return self.stage_name or self.stage.name

"""Server-Sent Events on the HTTP face: frames, event names, `retry:`, and event ids that resume.

Every event of a server's stream carries `id: <serverId>.<n>.<STATE>` (`.end` appended on the
event that ended the stream): `n` counts the stream's events from 1 and goes on counting in a
resumed stream, and STATE is the server state the client has last been told. A reconnecting
EventSource sends the last id as `Last-Event-ID`; GET :watch then resumes from it
(ResumeFrom): the first state is not sent again if it is the one the client already has, and an
id marked `.end` is answered 204 No Content, which tells EventSource to stop reconnecting.

A job's stream (GET /v1/jobs/{id}:watch) has ids `<jobId>.<n>[.end]` the same way, with no
state: a resumed job watch sends the job as it is now (its counts say all that was missed),
numbered on from `n`, and an id marked `.end` is answered 204 as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.domain import ServerState, StateUpdate
from gateway.errors import FieldViolation

#: The header EventSource sends on reconnecting, and the name a bad one is reported under.
LAST_EVENT_ID = "Last-Event-ID"
#: Milliseconds a client should wait before reconnecting a stream that broke (`retry:`, sent
#: once at the start of each stream). EventSource's own default is about 3 s in browsers; 2 s
#: resumes a watch cut by a drained replica soon without a client hammering a gateway that is
#: down (each reconnect is one more call on the caller's limits).
RETRY_MS = 2000
#: SSE event names by the NDJSON envelope key. Not `error`: EventSource fires its own `error`
#: event on every connection problem, and a listener for ours would hear both.
EVENT_NAMES = {"result": "result", "error": "status"}

ID_RE = re.compile(
    r"(?P<server>[^.\s]{1,64})\.(?P<seq>[1-9][0-9]{0,11})\.(?P<state>[A-Z_]{1,20})(?P<end>\.end)?"
)
JOB_ID_RE = re.compile(r"(?P<job>[^.\s]{1,64})\.(?P<seq>[1-9][0-9]{0,11})(?P<end>\.end)?")
_STATES = {state.value: state for state in ServerState}


def frame(kind: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE event: `kind` is the NDJSON key ("result", "error"), named as EVENT_NAMES says."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {EVENT_NAMES[kind]}\ndata: {data}\n\n".encode()


def retry_frame() -> bytes:
    """The reconnection delay, a frame with no data (EventSource dispatches no event for it)."""
    return f"retry: {RETRY_MS}\n\n".encode()


@dataclass(frozen=True)
class ResumeFrom:
    """A parsed Last-Event-ID: the client has had events up to `seq`, and was last told `state`;
    `ended`: it has had the stream's last event."""

    server_id: str
    seq: int
    state: ServerState
    ended: bool = False


def parse_last_event_id(raw: str, server_id: str) -> ResumeFrom | FieldViolation:
    """The header's value for the stream of `server_id` (as the path names it), or what is wrong
    with it. Only ids this gateway sends are accepted: a client's own id cannot say where to
    resume."""
    match = ID_RE.fullmatch(raw)
    if match is None or match["state"] not in _STATES:
        return FieldViolation(
            LAST_EVENT_ID,
            "must be an id this gateway sent: <serverId>.<n>.<STATE>[.end]",
        )
    if match["server"] != server_id:
        return FieldViolation(LAST_EVENT_ID, "is an id of another server's stream")
    return ResumeFrom(server_id, int(match["seq"]), _STATES[match["state"]], bool(match["end"]))


@dataclass(frozen=True)
class JobResumeFrom:
    """A parsed Last-Event-ID of a job's stream: the client has had events up to `seq`;
    `ended`: it has had the stream's last event."""

    job_id: str
    seq: int
    ended: bool = False


def parse_job_last_event_id(raw: str, job_id: str) -> JobResumeFrom | FieldViolation:
    """As parse_last_event_id, for the stream of the job `job_id` (as the path names it)."""
    match = JOB_ID_RE.fullmatch(raw)
    if match is None:
        return FieldViolation(LAST_EVENT_ID, "must be an id this gateway sent: <jobId>.<n>[.end]")
    if match["job"] != job_id:
        return FieldViolation(LAST_EVENT_ID, "is an id of another job's stream")
    return JobResumeFrom(job_id, int(match["seq"]), bool(match["end"]))


class JobEventIds:
    """The ids of one job's stream, from 1 or from where a resumed one left off."""

    def __init__(self, job_id: str, resume: JobResumeFrom | None = None) -> None:
        self._job_id = job_id
        self._seq = resume.seq if resume is not None else 0

    def for_event(self, final: bool) -> str:
        """The next event's id; `final`: the event the stream ends with (the job ended)."""
        self._seq += 1
        return f"{self._job_id}.{self._seq}{'.end' if final else ''}"

    def for_status(self) -> str:
        """The id of an error's status: not an end, so EventSource reconnects and watches on."""
        return self.for_event(False)


class EventIds:
    """The ids of one stream, from 1 or from where a resumed one left off. An event's id says
    the state the client has after it: an update's own, or for the final status the last one."""

    def __init__(self, server_id: str, resume: ResumeFrom | None = None) -> None:
        self._server_id = server_id
        self._seq = resume.seq if resume is not None else 0
        self._state = resume.state if resume is not None else None
        self._ended = False

    def seen(self, update: StateUpdate) -> bool:
        """The client has this update already: the state it was last told, not an end. A watch
        sends changes only, so only a resumed stream's first update can be one."""
        return not update.terminal and update.state is self._state

    def for_update(self, update: StateUpdate) -> str:
        self._state = update.state
        self._ended = update.terminal
        return self._next()

    def for_status(self) -> str:
        return self._next()

    def _next(self) -> str:
        self._seq += 1
        state = (self._state or ServerState.UNKNOWN).value
        end = ".end" if self._ended else ""
        return f"{self._server_id}.{self._seq}.{state}{end}"

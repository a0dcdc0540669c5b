"""A cheap reading of ListServers pages for polls: only each server's id and state.

botocore parses every member of every ListedServer on a page (up to 1,000, with nested shapes)
before the gateway looks at two of them; on an account of thousands of servers that parsing was
about a quarter of the gateway's CPU in the overhead benchmark. A poll needs only `ServerId`,
`State` and `NextToken`, so for polls (and only for them: the AWS-compatible face returns pages
as AWS sent them) the raw JSON body is read here through botocore's documented `before-parse`
hook and the parser is handed an empty body. Anything unexpected (an error status, a body that
is not the JSON object we expect) is left to botocore's own parser untouched.

A poll that knows which servers it watches (`compact(wanted)`) keeps only theirs: with 64
stops in flight in an account of 3,200 servers, building the other 936 entries of each page
cost as much as decoding the page.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Container, Iterator
from typing import Any

#: Set while a poll's ListServers call runs (the hook runs in the same task, so it sees it): a
#: 1-tuple of the ids wanted, or of None for every server on the page. Unset: botocore parses.
_COMPACT: contextvars.ContextVar[tuple[Container[str] | None] | None] = contextvars.ContextVar(
    "compact_listing", default=None
)

#: botocore's event for the response of ListServers, before its parser runs.
EVENT = "before-parse.transfer.ListServers"


@contextlib.contextmanager
def compact(wanted: Container[str] | None = None) -> Iterator[None]:
    """Within this block, ListServers answers carry only ServerId and State per server, and
    only for the servers in `wanted` when it is given (the others are left out)."""
    token = _COMPACT.set((wanted,))
    try:
        yield
    finally:
        _COMPACT.reset(token)


def read_compactly(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """The `before-parse` handler: fill the parsed answer from the raw body, empty the body."""
    reading = _COMPACT.get()
    if reading is None or response_dict.get("status_code") != 200:
        return
    (wanted,) = reading
    try:
        body = json.loads(response_dict.get("body") or b"{}")
        listed = body.get("Servers", [])
        if wanted is not None:  # the test of membership is all that is done for the others
            listed = [s for s in listed if s["ServerId"] in wanted]
        servers = [
            {"ServerId": str(s["ServerId"]), "State": str(s.get("State", ""))} for s in listed
        ]
        token = body.get("NextToken")
    except (ValueError, TypeError, KeyError, AttributeError):
        return  # not what we expect: botocore's parser decides, as for any other answer
    customized_response_dict["Servers"] = servers
    if token:
        customized_response_dict["NextToken"] = str(token)
    response_dict["body"] = b"{}"

"""A cheap reading of ListServers pages for polls: only each server's id and state.

botocore parses every member of every ListedServer on a page (up to 1,000, with nested shapes)
before the gateway looks at two of them; on an account of thousands of servers that parsing was
about a quarter of the gateway's CPU in the overhead benchmark. A poll needs only `ServerId`,
`State` and `NextToken`, so for polls (and only for them: the AWS-compatible face returns pages
as AWS sent them) the raw JSON body is read here through botocore's documented `before-parse`
hook and the parser is handed an empty body. Anything unexpected (an error status, a body that
is not the JSON object we expect) is left to botocore's own parser untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator
from typing import Any

#: Set while a poll's ListServers call runs: the hook runs in the same task, so it sees it.
_COMPACT: contextvars.ContextVar[bool] = contextvars.ContextVar("compact_listing", default=False)

#: botocore's event for the response of ListServers, before its parser runs.
EVENT = "before-parse.transfer.ListServers"


@contextlib.contextmanager
def compact() -> Iterator[None]:
    """Within this block, ListServers answers carry only ServerId and State per server."""
    token = _COMPACT.set(True)
    try:
        yield
    finally:
        _COMPACT.reset(token)


def read_compactly(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """The `before-parse` handler: fill the parsed answer from the raw body, empty the body."""
    if not _COMPACT.get() or response_dict.get("status_code") != 200:
        return
    try:
        body = json.loads(response_dict.get("body") or b"{}")
        servers = [
            {"ServerId": str(s["ServerId"]), "State": str(s.get("State", ""))}
            for s in body.get("Servers", [])
        ]
        token = body.get("NextToken")
    except (ValueError, TypeError, KeyError, AttributeError):
        return  # not what we expect: botocore's parser decides, as for any other answer
    customized_response_dict["Servers"] = servers
    if token:
        customized_response_dict["NextToken"] = str(token)
    response_dict["body"] = b"{}"

"""docs/errors.md is the error table in prose: it must say what gateway/errors.py does."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.errors import ErrorKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _rows() -> dict[str, tuple[str, int]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \| (\w+) \| (\d+) \|", line)
        if match:
            rows[match[1]] = (match[2], int(match[3]))
    return rows


class TestErrorDoc:
    def test_every_row_of_the_table_is_documented_as_it_is(self) -> None:
        """Each ErrorKind appears in docs/errors.md with its gRPC code and HTTP status, and the
        page lists no reason the code does not have."""
        documented = _rows()
        in_code = {k.reason: (k.grpc_code.name, k.http_status) for k in ErrorKind}
        assert documented == in_code

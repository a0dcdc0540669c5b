"""One home for each fact, read from the source: the AWS name patterns live in gateway/names.py
and botocore's ClientError is translated in gateway/upstream/errors.py, nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway import names

ROOT = Path(__file__).resolve().parents[2] / "gateway"

#: Fragments that only a copy of an AWS name pattern would contain.
PATTERN_FRAGMENTS = ("[0-9]{12}", "[0-9a-f]{17}", "[a-z]{2}(-[a-z]+)+")


def _sources() -> dict[Path, str]:
    return {
        p: p.read_text() for p in ROOT.rglob("*.py") if "_proto" not in p.relative_to(ROOT).parts
    }


class TestOneHome:
    def test_name_patterns_are_written_only_in_names(self) -> None:
        """No module but gateway/names.py spells out the server id, account id or region
        pattern in a string (docstrings and comments may describe them)."""
        found = []
        for path, source in _sources().items():
            if path == ROOT / "names.py":
                continue
            tree = ast.parse(source)
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and any(f in node.value for f in PATTERN_FRAGMENTS)
                ):
                    found.append(f"{path.relative_to(ROOT.parent)}: {node.value!r}")
        assert found == []

    def test_client_error_is_translated_in_one_place(self) -> None:
        """Only gateway/upstream/errors.py turns an AWS answer into an UpstreamError through
        the table (from_aws) or reads a ClientError's response."""
        readers = sorted(
            str(path.relative_to(ROOT.parent))
            for path, source in _sources().items()
            if path not in (ROOT / "errors.py", ROOT / "upstream" / "errors.py")
            and (re.search(r"\bfrom_aws\(", source) or ".response.get(" in source)
        )
        assert readers == []

    def test_the_patterns_say_what_aws_says(self) -> None:
        """The patterns accept what AWS names things and refuse near misses (the regexes
        every validator now shares)."""
        assert names.is_server_id("s-0123456789abcdef0")
        assert not names.is_server_id("s-0123456789ABCDEF0")  # upper-case hex
        assert not names.is_server_id("s-0123456789abcdef01")  # 18 digits
        assert names.is_account_id("123456789012")
        assert not names.is_account_id("12345678901")
        assert names.REGION_NAME.fullmatch("us-gov-west-1")
        assert not names.REGION_NAME.fullmatch("useast1")
        match = names.ROLE_ARN.fullmatch("arn:aws:iam::123456789012:role/ops")
        assert match is not None
        assert match.group(1) == "123456789012"

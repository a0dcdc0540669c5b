"""The test suite's own shape: fixtures come from conftest files (never imported), helpers from
tests/support, every test asserts something, and no wait in tests/core reads the wall clock."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: Helpers that assert for the test calling them (by name): a test whose only checks are calls
#: of these still fails when the behaviour breaks.
ASSERTING_HELPERS = re.compile(r"^_?(check|assert|expect)\w*$|^(aws_error|eventually\w*)$")


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(TESTS.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _folder_package(path: Path) -> str:
    """`tests.http` for tests/http/test_x.py; `tests` for tests/conftest.py."""
    return ".".join(path.parent.relative_to(TESTS.parent).parts)


class TestImports:
    """Fixtures reach tests through pytest's conftest discovery, shared helpers through
    tests/support: a test that imports a conftest (or another folder's module) breaks when that
    folder changes, and its fixtures can be defined twice."""

    def test_no_module_imports_a_conftest(self) -> None:
        """No file under tests/ imports a conftest module, its own folder's included."""
        offenders = [
            f"{path.relative_to(TESTS.parent)} imports {name}"
            for path, tree in _modules()
            for name in _imported(tree)
            if name.split(".")[-1] == "conftest" or ".conftest." in name
        ]
        assert offenders == []

    def test_tests_import_only_support_or_their_own_folder(self) -> None:
        """A `tests.*` import names tests.support or a module of the importer's own folder."""
        offenders = []
        for path, tree in _modules():
            own = _folder_package(path)
            for name in _imported(tree):
                if not name.startswith("tests.") or name.startswith("tests.support"):
                    continue
                # The root conftest may import tests.support only; a folder, its own modules.
                in_own_folder = own != "tests" and (
                    name.rsplit(".", 1)[0] == own or name.startswith(own + ".")
                )
                if not in_own_folder:
                    offenders.append(f"{path.relative_to(TESTS.parent)} imports {name}")
        assert offenders == []

    def test_the_pin_sees_imports(self) -> None:
        """The checks above find an import of a conftest when there is one (they can fail)."""
        tree = ast.parse("from tests.e2e.conftest import collect\nimport tests.http.conftest\n")
        found = [n for n in _imported(tree) if n.split(".")[-1] == "conftest"]
        assert found == ["tests.e2e.conftest", "tests.http.conftest"]


def _tests(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node


def _checks(test: ast.AST) -> bool:
    """Whether a test (with its nested functions) asserts: an assert statement, pytest.raises /
    warns / fail, or a call of a helper that asserts (ASSERTING_HELPERS)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Attribute) and node.attr in {"raises", "warns", "fail"}:
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if ASSERTING_HELPERS.match(name):
                return True
    return False


class TestEveryTestAsserts:
    """A test with nothing that can fail passes whatever the code does."""

    def test_every_test_function_checks_something(self) -> None:
        """Every test_* function under tests/ asserts, expects an error, or calls a helper
        that asserts."""
        silent = [
            f"{path.relative_to(TESTS.parent)}::{test.name}"
            for path, tree in _modules()
            if path.name.startswith("test_")
            for test in _tests(tree)
            if not _checks(test)
        ]
        assert silent == []

    def test_the_pin_sees_a_silent_test(self) -> None:
        """The check above flags a test that only calls code (it can fail)."""
        silent = ast.parse("async def test_x(client):\n    await client.list_servers()\n")
        checked = ast.parse("def test_y():\n    with pytest.raises(ValueError):\n        f()\n")
        assert [_checks(t) for t in _tests(silent)] == [False]
        assert [_checks(t) for t in _tests(checked)] == [True]


class TestCoreTestsUseTheClock:
    """tests/core runs on a ManualClock: a wall-clock sleep there is a flaky test in waiting."""

    def test_no_wall_clock_sleep_in_tests_core(self) -> None:
        """No `time.sleep(x)` or `asyncio.sleep(x)` with x other than 0 under tests/core."""
        sleeps = [
            f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}"
            for path in sorted((TESTS / "core").rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"(time|asyncio)\.sleep\((?!0\))", line)
        ]
        assert sleeps == []


#: A skip (pytest.skip, mark.skipif, importorskip) whose arguments name Chromium.
_SKIP_ON_BROWSER = re.compile(r"skip\w*\((?:[^()]|\([^()]*\))*chromium", re.IGNORECASE)


class TestOneBrowser:
    """Browser tests share one Chromium fixture (tests/conftest.py's `browser`, launched by
    tests/support/browser.py) with one rule for a missing Chromium: fail, naming the fix. A test
    launching its own could skip instead, and a skipped test hides a failure."""

    def test_only_the_support_module_launches_chromium(self) -> None:
        """No file under tests/ but tests/support/browser.py imports async_playwright, and no
        test skips on a missing browser."""
        own = TESTS / "support" / "browser.py"
        offenders = [
            f"{path.relative_to(TESTS.parent)} imports {name}"
            for path, tree in _modules()
            if path != own
            for name in _imported(tree)
            if name.endswith(".async_playwright") or name.endswith(".sync_playwright")
        ]
        skips = [
            str(path.relative_to(TESTS.parent))
            for path in sorted(TESTS.rglob("*.py"))
            if path != Path(__file__) and _SKIP_ON_BROWSER.search(path.read_text())
        ]
        assert (offenders, skips) == ([], [])

    def test_the_pin_sees_a_skip_on_a_missing_browser(self) -> None:
        """The check above flags the skipif the browser tests had before."""
        old = (
            "@pytest.mark.skipif(\n    not os.path.exists(CHROMIUM) and not os.environ.get('CI'),"
            "\n    reason='no Debian chromium here',\n)\nclass TestInChromium:\n"
        )
        assert _SKIP_ON_BROWSER.search(old)
        assert not _SKIP_ON_BROWSER.search("pytest.skip('no Redis')\nbrowser = chromium()")

"""The `transfer-gateway` command for tests that run it as a process."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

#: The command installed beside this interpreter (the project's .venv).
CLI = Path(sys.executable).parent / "transfer-gateway"

#: The `run_cli` fixture (tests/config/conftest.py): `await run_cli(*argv, within=20.0)` gives
#: (exit code, stdout, stderr) of one run.
RunCli = Callable[..., Awaitable[tuple[int, str, str]]]

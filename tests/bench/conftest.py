"""Fixtures for the load generator's tests: the command's logging set-up stays in its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _keep_logging_config() -> Iterator[None]:
    """`transfer-gateway bench` configures structlog process-wide (at warning, as a command
    should); put back what the suite had so later tests still see their info lines."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)

"""Suite-wide fixtures: no test can reach real AWS, and loopback servers bind port 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_real_aws(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Strip AWS_* from the environment and point AWS config files at an empty folder."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("TRANSFER_GATEWAY_"):
            monkeypatch.delenv(name, raising=False)
    empty: Path = tmp_path_factory.mktemp("no-aws")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return

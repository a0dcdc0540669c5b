"""The vendored uPlot is the version tools/uplot pins, with its licence; the package reads it."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.faces import assets

ROOT = Path(__file__).resolve().parents[2]


def test_vendored_uplot_is_the_pinned_version() -> None:
    """package.json pins one exact version, the lock resolves to it, and the committed browser
    build announces it (`make vendor-check` compares the bytes when npm is at hand)."""
    pinned = json.loads((ROOT / "tools/uplot/package.json").read_text())["devDependencies"]["uplot"]
    locked = json.loads((ROOT / "tools/uplot/package-lock.json").read_text())
    assert locked["packages"]["node_modules/uplot"]["version"] == pinned
    js, css = assets.uplot()
    assert js.startswith(f"/*! https://github.com/leeoniya/uPlot (v{pinned}) */")
    assert ".uplot" in css


def test_vendored_uplot_ships_its_licence() -> None:
    """uPlot is MIT: its licence text travels with the copy."""
    text = assets.static_text(assets.UPLOT_LICENSE)
    assert "The MIT License" in text
    assert "Leon Sorokin" in text

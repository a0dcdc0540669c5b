"""The package's static files (the /ui page and the vendored uPlot), read from the install."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

#: gateway/faces/static/, wherever the package is installed (pyproject's package-data ships it).
STATIC: Traversable = files("gateway.faces") / "static"

#: uPlot's files as `make vendor-uplot` copies them from the pinned npm package.
UPLOT_JS = "vendor/uplot/uPlot.iife.min.js"
UPLOT_CSS = "vendor/uplot/uPlot.min.css"
UPLOT_LICENSE = "vendor/uplot/LICENSE"


def static_text(name: str) -> str:
    """One static file's text, by its path under static/ (e.g. UPLOT_JS)."""
    return (STATIC / name).read_text(encoding="utf-8")


def uplot() -> tuple[str, str]:
    """uPlot's browser build and stylesheet, for pages that inline them (the bench report)."""
    return static_text(UPLOT_JS), static_text(UPLOT_CSS)

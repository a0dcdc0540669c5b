"""`transfer-gateway bench --html`: the load report as one self-contained page (no network)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

from gateway.faces.assets import uplot

#: The `<script type="application/json">` holding the report, which the page's script reads.
DATA_ID = "bench-data"
#: The page's own drawing script and stylesheet, beside this module (shipped as package data).
SCRIPT = "report_html.js"
STYLE = "report_html.css"
#: Inline scripts and styles only, nothing fetched: the file opens the same anywhere.
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
_END_TAG = re.compile(r"</(script|style)", re.IGNORECASE)


def _own(name: str) -> str:
    return (files("gateway.tools") / name).read_text(encoding="utf-8")


def _inline(text: str, tag: str) -> str:
    """`text` as the body of a `<tag>` element; one that would close it early is refused."""
    if _END_TAG.search(text):
        raise ValueError(f"cannot inline text holding a closing </{tag}> tag")
    return f"<{tag}>{text}</{tag}>"


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its `<script>` element (`<`, `>` and `&` as \\u escapes)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _ms(ns: float) -> str:
    # The text summary's format (bench.summary), so both show the same figures.
    return f"{ns / 1e6:.2f} ms"


def summary_sections(report: dict[str, Any]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The text summary's figures as (section, [(name, value)]) for the page's tables."""
    yield (
        "Summary",
        [
            ("Count", str(report["count"])),
            ("Total", _ms(report["total"])),
            ("Slowest", _ms(report["slowest"])),
            ("Fastest", _ms(report["fastest"])),
            ("Average", _ms(report["average"])),
            ("Requests/sec", f"{report['rps']:.2f}"),
        ],
    )
    yield (
        "Latency distribution",
        [(f"{d['percentage']:g} %", _ms(d["latency"])) for d in report["latencyDistribution"]],
    )
    streams = []
    for name, label in (
        ("timeToFirstUpdate", "Time to first update"),
        ("timeToTerminal", "Time to terminal state"),
        ("budgetWait", "Budget wait"),
    ):
        d = report[name]
        if d.get("count"):
            streams.append(
                (
                    label,
                    f"p50 {_ms(d['p50'])}, p99 {_ms(d['p99'])}, max {_ms(d['slowest'])}"
                    f" (n={d['count']})",
                )
            )
    yield "Stream times", streams
    up = report["upstream"]
    yield (
        "Upstream (counted by the emulator)",
        [
            ("Calls", str(up["totalCalls"])),
            *((f"{op}", str(n)) for op, n in up["calls"].items()),
            ("Throttled", str(up["throttled"])),
            ("Faults", str(up["faults"])),
        ],
    )
    yield (
        "Status code distribution",
        [(code, f"{n} responses") for code, n in report["statusCodeDistribution"].items()],
    )
    if report["errorDistribution"]:
        yield (
            "Error distribution",
            [(str(n), msg[:160]) for msg, n in report["errorDistribution"].items()],
        )


def _tables(report: dict[str, Any]) -> str:
    out = []
    for title, rows in summary_sections(report):
        if not rows:
            continue
        body = "".join(
            f"<tr><th scope=row>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        out.append(f"<table><caption>{html.escape(title)}</caption>{body}</table>")
    return "\n".join(out)


def _run_line(report: dict[str, Any]) -> str:
    o = report["options"]
    offered = f"{o['duration']:g} s" if o.get("duration") else f"{o['total']} stops"
    loop = f"open loop at {o['rate']:g}/s" if o.get("rate") else f"concurrency {o['concurrency']}"
    return (
        f"{report['date']}: {offered}, {loop}, {len(o['account_ids']) or o['accounts']}"
        f" account(s) in {o['region']}, {report['rounds']} round(s), ended {report['endReason']}"
    )


def render(report: dict[str, Any]) -> str:
    """The whole page: uPlot, the page's script and style and the report, all inline."""
    uplot_js, uplot_css = uplot()
    title = f"transfer-gateway bench, {report['date']}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            _inline(uplot_css, "style"),
            _inline(_own(STYLE), "style"),
            "</head>",
            "<body>",
            "<h1>StopServer load report</h1>",
            f'<p class="run">{html.escape(_run_line(report))}</p>',
            '<div class="tables">',
            _tables(report),
            "</div>",
            '<section><h2>Latency</h2><div class="chart" id="latency"></div></section>',
            "<section><h2>Time to first update and to terminal state</h2>"
            '<div class="chart" id="stream-times"></div></section>',
            "<section><h2>Upstream calls per second by operation</h2>"
            '<div class="chart" id="upstream"></div></section>',
            f'<script type="application/json" id="{DATA_ID}">{_json_for_script(report)}</script>',
            _inline(uplot_js, "script"),
            _inline(_own(SCRIPT), "script"),
            "</body>",
            "</html>",
            "",
        ]
    )


def write_html(report: dict[str, Any], path: str) -> None:
    """Write the page for `report` to `path`."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(render(report))


__all__ = ["DATA_ID", "render", "summary_sections", "write_html"]

"""`transfer-gateway bench --html`: the file holds the run's data and uPlot; Chromium draws it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from gateway import cli
from gateway.faces.assets import uplot
from gateway.tools.bench import LoadOptions, run_in_process
from gateway.tools.report_html import DATA_ID, write_html
from tests.bench.support import FAST
from tests.support.gateways import make_settings

_DATA = re.compile(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', re.DOTALL)


def embedded(page: str) -> dict[str, Any]:
    """The report the page carries, parsed as its script parses it."""
    found = _DATA.findall(page)
    assert len(found) == 1, "the page holds one data block"
    data: dict[str, Any] = json.loads(found[0])
    return data


class TestFile:
    def test_holds_the_runs_data_and_the_library(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A short run with --json and --html: the page carries the same report (one detail
        per call, each with its stream times; upstream calls over time ending at the totals),
        the text summary's figures in its tables, and uPlot inline: nothing to fetch."""
        out_json, out_html = tmp_path / "bench.json", tmp_path / "report.html"
        run = ["bench", "-n", "30", "-c", "5", "--servers-per-account", "10", *FAST]
        code = cli.main([*run, "--json", str(out_json), "--html", str(out_html)])
        assert code == 0
        page = out_html.read_text(encoding="utf-8")
        data = embedded(page)
        assert data == json.loads(out_json.read_text())
        assert data["count"] == 30
        assert len(data["details"]) == 30
        assert {d["status"] for d in data["details"]} == {"OK"}
        assert all(d["timeToFirstUpdate"] <= d["timeToTerminal"] for d in data["details"])
        assert sum(b["count"] for b in data["histogram"]) == 30
        # Three rounds of ten servers: two restarts between them, the pool's own calls left out.
        assert data["rounds"] == 3
        assert len(data["restarts"]) == 2
        timeline = data["upstreamTimeline"]
        assert (timeline[0]["t"], timeline[0]["totalCalls"]) == (0, 0)
        assert [s["t"] for s in timeline] == sorted(s["t"] for s in timeline)
        assert timeline[-1]["calls"] == data["upstream"]["calls"]
        assert timeline[-1]["calls"]["StopServer"] == 30
        # Same figures as the text summary printed on stdout.
        figures = re.findall(r"\d+\.\d\d ms", capsys.readouterr().out)
        assert len(figures) > 10
        assert [f for f in figures if f not in page] == []
        # The library is inline, and nothing names a file or address to load.
        uplot_js, uplot_css = uplot()
        assert uplot_js in page
        assert uplot_css in page
        assert re.search(r"<(script|link|img)\b[^>]*\b(src|href)=", page) is None

    def test_markup_in_the_data_cannot_end_its_block(self, tmp_path: Path) -> None:
        """An error message holding `</script>` stays data: the page still has one data block,
        parsed back to the same text."""
        report = _report_with_error("UNAVAILABLE: </script><script>alert(1)</script>")
        path = tmp_path / "report.html"
        write_html(report, str(path))
        assert embedded(path.read_text())["errorDistribution"] == report["errorDistribution"]


def _report_with_error(message: str) -> dict[str, Any]:
    from gateway.tools.bench import CallResult, build_report

    result = CallResult(account="000000000000", started=0.0, latency=0.01, code="UNAVAILABLE")
    result.error = message
    return build_report(
        [result],
        total_seconds=0.01,
        upstream={"calls": {}, "totalCalls": 0, "throttled": 0, "faults": 0},
        options=LoadOptions(total=1),
    )


class TestInChromium:
    @pytest.mark.timeout(180)
    async def test_draws_three_charts_without_errors(
        self, tmp_path: Path, browser: Browser
    ) -> None:
        """The page from a real run, opened as a file in headless Chromium: no script error,
        no request beyond the file itself, three charts drawn (ink on each canvas) with the
        run's operations in the legend, and the summary table showing the count."""
        options = LoadOptions(concurrency=5, total=40, servers_per_account=20, timeout=30)
        report = await run_in_process(options, make_settings())
        path = tmp_path / "report.html"
        write_html(report, str(path))

        errors: list[str] = []
        requests: list[str] = []
        page = await browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(path.as_uri())
        await page.wait_for_selector("body[data-charts='3']", timeout=60_000)
        charts = await page.evaluate(_INK)
        legends = await page.locator(".u-legend").all_inner_texts()
        summary = page.locator("table", has=page.locator("caption", has_text="Summary"))
        count = await summary.locator("td").first.inner_text()
        await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []
        assert requests == [path.as_uri()]
        assert [c["title"] for c in charts] == [
            "StopServer stream latency, 40 calls in 10 bins",
            "Share of calls that had their first update / reached a terminal state by then",
            "Upstream calls per second by operation (the emulator's counters);"
            " grey: the pool restarted between rounds, not counted",
        ]
        assert all(c["inked"] > 500 for c in charts), charts
        assert "time to first update (n=40)" in legends[1]
        assert "StopServer" in legends[2]
        assert "throttled" in legends[2]
        assert count == "40"


#: Each chart's title and how many of its canvas pixels are in colour: the axes, grid and
#: shading are grey, so what is counted is the drawn data (bars, steps).
_INK = """
() => [...document.querySelectorAll(".uplot")].map((chart) => {
  const canvas = chart.querySelector("canvas");
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 0; i < px.length; i += 4) {
    const [r, g, b, a] = [px[i], px[i + 1], px[i + 2], px[i + 3]];
    if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 40) inked += 1;
  }
  return { title: chart.querySelector(".u-title").textContent, inked: inked };
})
"""

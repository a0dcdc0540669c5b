"""`transfer-gateway bench` end to end: a small run against a real gateway, checked via its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.app import GatewayApp
from gateway.tools.bench import LoadOptions, distribution, run_against_target, run_in_process
from tests.bench.support import FAST
from tests.support.gateways import make_settings

#: ghz's top-level fields, which tools reading ghz's JSON rely on.
GHZ_FIELDS = {
    "count",
    "total",
    "average",
    "fastest",
    "slowest",
    "rps",
    "errorDistribution",
    "statusCodeDistribution",
    "latencyDistribution",
    "histogram",
}


def _run_cli(tmp_path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "bench.json"
    code = cli.main(["bench", *flags, *FAST, "--json", str(out)])
    return code, json.loads(out.read_text())


class TestCommand:
    def test_writes_ghz_json_with_gateway_figures(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A few dozen stops through an in-process gateway: exit 0, a summary on stdout, a
        progress line on stderr, and JSON with ghz's fields plus the gateway's own figures,
        consistent with each other."""
        code, report = _run_cli(tmp_path, "-n", "36", "-c", "6", "--accounts", "2", "--warmup", "4")
        assert code == 0
        assert set(report) >= GHZ_FIELDS
        assert report["count"] == 36
        assert report["statusCodeDistribution"] == {"OK": 36}
        assert report["errorDistribution"] == {}
        assert report["fastest"] <= report["average"] <= report["slowest"]
        assert report["rps"] > 0
        assert [d["percentage"] for d in report["latencyDistribution"]][-4:] == [90, 95, 99, 99.9]
        latencies = [d["latency"] for d in report["latencyDistribution"]]
        assert latencies == sorted(latencies)
        assert sum(b["count"] for b in report["histogram"]) == 36
        for name in ("timeToFirstUpdate", "timeToTerminal", "budgetWait"):
            assert report[name]["count"] == 36, name
        assert report["timeToFirstUpdate"]["p50"] <= report["timeToTerminal"]["p50"]
        # The warm-up's stops are left out of the emulator's counts too.
        assert report["upstream"]["calls"]["StopServer"] == 36
        assert report["upstream"]["throttled"] == 0
        assert set(report["accounts"]) == {"000000000000", "000000000001"}
        assert sum(a["count"] for a in report["accounts"].values()) == 36
        captured = capsys.readouterr()
        assert "Requests/sec" in captured.out
        assert "36/36 done" in captured.err

    def test_target_without_emulator_url_is_refused(self, tmp_path: Path) -> None:
        """--target alone cannot make servers: exit 2 and say which flag is missing."""
        code = cli.main(["bench", "--target", "127.0.0.1:1", "-n", "1"])
        assert code == 2

    def test_out_of_range_option_is_refused_by_name(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad option exits 2 with a message naming it, before anything starts."""
        assert cli.main(["bench", "--concurrency", "0"]) == 2
        assert "concurrency" in capsys.readouterr().err


class TestRounds:
    async def test_servers_are_started_again_between_rounds(self) -> None:
        """A pool smaller than the run: every stop still finds its server ONLINE (all OK and
        one upstream StopServer per stop), over as many rounds as the pool dictates."""
        settings = make_settings()
        options = LoadOptions(concurrency=5, total=30, servers_per_account=10, timeout=30)
        report = await run_in_process(options, settings)
        assert report["rounds"] == 3
        assert report["statusCodeDistribution"] == {"OK": 30}
        assert report["upstream"]["calls"]["StopServer"] == 30

    async def test_open_loop_against_a_running_gateway_counts_only_its_calls(self) -> None:
        """Against a gateway started elsewhere (servers made and restarted through its
        emulator's API), the report counts the gateway's upstream calls, not the load
        generator's own CreateServer/StartServer/ListServers."""
        app = GatewayApp(make_settings())
        await app.start()
        try:
            assert app.emulator is not None
            options = LoadOptions(total=24, rate=200, accounts=2, servers_per_account=6, timeout=30)
            report = await run_against_target(
                f"127.0.0.1:{app.grpc_port}", app.emulator.url, options
            )
            direct = app.emulator.calls("StopServer")
        finally:
            await app.stop(grace=0)
        assert report["statusCodeDistribution"] == {"OK": 24}
        assert report["rounds"] == 2
        assert report["upstream"]["calls"]["StopServer"] == direct == 24
        assert "CreateServer" not in report["upstream"]["calls"]
        assert "StartServer" not in report["upstream"]["calls"]


class TestDistribution:
    def test_nearest_rank_percentiles_in_nanoseconds(self) -> None:
        """Percentiles are nearest-rank (as ghz reports them) and durations are integers in
        nanoseconds."""
        d = distribution([i / 1000 for i in range(1, 101)])  # 1..100 ms
        assert d["count"] == 100
        assert d["p50"] == 50_000_000
        assert d["p99"] == 99_000_000
        assert d["p99.9"] == 100_000_000
        assert d["fastest"] == 1_000_000
        assert d["slowest"] == 100_000_000

    def test_empty_has_only_a_count(self) -> None:
        """No values: a count of zero and nothing made up."""
        assert distribution([]) == {"count": 0}

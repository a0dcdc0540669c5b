// The bench report's charts, drawn with uPlot (inlined above) from the JSON in #bench-data.
"use strict";

(function () {
  const report = JSON.parse(document.getElementById("bench-data").textContent);
  const NS_PER_MS = 1e6; // the report's durations are integer nanoseconds, as ghz's are
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];
  // One colour per operation in every report, so runs compare at a glance.
  const OPERATION_COLORS = {
    StopServer: "#2ca02c",
    ListServers: "#d62728",
    DescribeServer: "#1f77b4",
    StartServer: "#9467bd",
  };
  const HEIGHT = 300;
  const charts = [];

  function widthOf(el) {
    return Math.max(320, el.clientWidth);
  }

  function noData(el, text) {
    el.textContent = text;
    el.classList.add("empty");
  }

  function draw(el, options, data) {
    options.width = widthOf(el);
    options.height = HEIGHT;
    charts.push({ el: el, plot: new uPlot(options, data, el) });
  }

  function ms(values) {
    return values.filter((v) => v !== null && v !== undefined).map((v) => v / NS_PER_MS);
  }

  function fmtMs(u, v) {
    return v === null || v === undefined ? "-" : v.toFixed(2) + " ms";
  }

  // Equal-width bins from the smallest value to the largest: the bin of a value, the centres
  // and the edges.
  function bins(values, n) {
    const low = values.reduce((a, b) => Math.min(a, b)); // not Math.min(...): 100k arguments
    const high = values.reduce((a, b) => Math.max(a, b));
    const width = (high - low) / n || 1e-9;
    return {
      of: (v) => Math.min(n - 1, Math.floor((v - low) / width)),
      centres: Array.from({ length: n }, (_, i) => low + (i + 0.5) * width),
      edges: [low, low + n * width],
    };
  }

  function counts(values, bin, n) {
    const out = new Array(n).fill(0);
    for (const v of values) out[bin.of(v)] += 1;
    return out;
  }

  // For each x of the ascending `xs`: the percentage of `sorted` (ascending) at or below it.
  function cdfAt(sorted, xs) {
    const out = [];
    let i = 0;
    for (const x of xs) {
      while (i < sorted.length && sorted[i] <= x) i += 1;
      out.push(sorted.length ? (100 * i) / sorted.length : null);
    }
    return out;
  }

  // The points a CDF is drawn at: every value, or (past `most`) evenly spaced on a log scale.
  function cdfPoints(all, most) {
    const unique = [...new Set(all)].sort((a, b) => a - b);
    if (unique.length <= most) return unique;
    const low = Math.log(unique[0]);
    const high = Math.log(unique[unique.length - 1]);
    return Array.from({ length: most }, (_, i) => Math.exp(low + ((high - low) * i) / (most - 1)));
  }

  function latencyChart(el) {
    const latencies = ms(report.details.map((d) => d.latency));
    if (!latencies.length) return noData(el, "no calls were made");
    const failed = ms(report.details.filter((d) => d.status !== "OK").map((d) => d.latency));
    const n = Math.min(60, Math.max(10, Math.ceil(Math.sqrt(latencies.length))));
    const bin = bins(latencies, n);
    const bars = uPlot.paths.bars({ size: [0.9, 80] });
    const series = [
      { label: "bin centre", value: fmtMs },
      { label: "calls", stroke: COLORS[0], fill: COLORS[0] + "99", paths: bars, points: { show: false } },
    ];
    const data = [bin.centres, counts(latencies, bin, n)];
    if (failed.length) {
      // Drawn over the first bars from the bottom up: the red part of a bar failed.
      series.push({ label: "of which failed", stroke: COLORS[1], fill: COLORS[1] + "cc", paths: bars, points: { show: false } });
      data.push(counts(failed, bin, n));
    }
    draw(
      el,
      {
        title: `StopServer stream latency, ${latencies.length} calls in ${n} bins`,
        scales: { x: { time: false, range: () => bin.edges } }, // whole bars at both ends
        axes: [{ label: "latency (ms)" }, { label: "calls" }],
        series: series,
      },
      data,
    );
  }

  function streamTimesChart(el) {
    // A log scale: the first update comes in milliseconds, the terminal state in seconds.
    const floor = 0.001; // ms; a log scale has no zero
    const first = ms(report.details.map((d) => d.timeToFirstUpdate)).map((v) => Math.max(v, floor));
    const terminal = ms(report.details.map((d) => d.timeToTerminal)).map((v) => Math.max(v, floor));
    if (!first.length && !terminal.length) return noData(el, "no stream sent an update");
    first.sort((a, b) => a - b);
    terminal.sort((a, b) => a - b);
    const xs = cdfPoints(first.concat(terminal), 4000);
    const stepped = uPlot.paths.stepped({ align: 1 });
    draw(
      el,
      {
        title: "Share of calls that had their first update / reached a terminal state by then",
        scales: { x: { time: false, distr: 3 }, y: { range: [0, 100] } },
        axes: [{ label: "time from the call's start (ms, log scale)" }, { label: "% of calls" }],
        series: [
          { label: "time", value: fmtMs },
          {
            label: `time to first update (n=${first.length})`,
            stroke: COLORS[0],
            width: 2,
            paths: stepped,
            points: { show: false },
            value: (u, v) => (v === null ? "-" : v.toFixed(1) + " %"),
          },
          {
            label: `time to terminal state (n=${terminal.length})`,
            stroke: COLORS[1],
            width: 2,
            paths: stepped,
            points: { show: false },
            value: (u, v) => (v === null ? "-" : v.toFixed(1) + " %"),
          },
        ],
      },
      [xs, cdfAt(first, xs), cdfAt(terminal, xs)],
    );
  }

  // A uPlot hook shading each [from, to] (x values) across the plot, under the lines.
  function shade(spans, colour) {
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = colour;
      for (const [from, to] of spans) {
        const left = u.valToPos(from, "x", true);
        const right = u.valToPos(to, "x", true);
        ctx.fillRect(left, u.bbox.top, Math.max(1, right - left), u.bbox.height);
      }
      ctx.restore();
    };
  }

  function upstreamChart(el) {
    // Cumulative counters read during the run: each interval's rate, held until the next one.
    const samples = report.upstreamTimeline;
    if (samples.length < 2) return noData(el, "the emulator's counters were read only once");
    const operations = [...new Set(samples.flatMap((s) => Object.keys(s.calls)))].sort();
    const times = samples.map((s) => s.t);
    const rate = (count) => {
      const out = [];
      for (let i = 1; i < samples.length; i += 1) {
        const dt = samples[i].t - samples[i - 1].t;
        out.push(dt > 0 ? (count(samples[i]) - count(samples[i - 1])) / dt : 0);
      }
      out.push(out[out.length - 1]); // the last step ends at the last reading
      return out;
    };
    const stepped = uPlot.paths.stepped({ align: 1 });
    const seconds = (u, v) => (v === null ? "-" : v.toFixed(1) + " s");
    const series = [{ label: "s since the start", value: seconds }];
    const data = [times];
    operations.forEach((op, i) => {
      const stroke = OPERATION_COLORS[op] || COLORS[(i + 4) % COLORS.length];
      series.push({ label: op, stroke: stroke, width: 2, paths: stepped, points: { show: false } });
      data.push(rate((s) => s.calls[op] || 0));
    });
    // What AWS refused, dashed: throttles (black) and injected faults (orange).
    for (const [label, stroke, count] of [
      ["throttled", "#000", (s) => s.throttled],
      ["faults", "#ff7f0e", (s) => s.faults],
    ]) {
      series.push({ label: label, stroke: stroke, dash: [6, 4], width: 1, paths: stepped, points: { show: false } });
      data.push(rate(count));
    }
    const restarts = report.restarts || [];
    draw(
      el,
      {
        title:
          "Upstream calls per second by operation (the emulator's counters)" +
          (restarts.length ? "; grey: the pool restarted between rounds, not counted" : ""),
        hooks: { drawAxes: [shade(restarts, "rgba(0, 0, 0, 0.08)")] },
        scales: { x: { time: false } },
        axes: [{ label: "seconds since the run's start" }, { label: "calls/s" }],
        series: series,
      },
      data,
    );
  }

  latencyChart(document.getElementById("latency"));
  streamTimesChart(document.getElementById("stream-times"));
  upstreamChart(document.getElementById("upstream"));

  window.addEventListener("resize", () => {
    for (const c of charts) c.plot.setSize({ width: widthOf(c.el), height: HEIGHT });
  });
  document.body.dataset.charts = String(charts.length); // drawn: for a reader, or a test
})();

// The live page: follows /ui/events (one snapshot a second, no polling here) and keeps its
// tables in step. Rows are keyed and updated in place, so charts and buttons survive updates.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const charts = new Map(); // pair key -> uPlot instance
  const jobMessages = new Map(); // job id -> {text, ok}: a cancel's answer, kept across updates

  function fmt(value, digits = 2) {
    if (value === null || value === undefined) return "";
    return Number(value.toFixed(digits)).toString();
  }

  function setText(el, value) {
    const text = String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  function newRow(classes) {
    const tr = document.createElement("tr");
    for (const cls of classes) {
      const td = document.createElement("td");
      td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }

  function cell(tr, cls) {
    return tr.querySelector("td." + cls.split(" ")[0]);
  }

  // Makes `tbody` hold one row per item, in the items' order: `create` makes a new row,
  // `update` fills it, `remove` cleans up after a row that left.
  function syncRows(tbody, items, keyOf, create, update, remove) {
    const existing = new Map(Array.from(tbody.rows, (tr) => [tr.dataset.key, tr]));
    for (const item of items) {
      const key = keyOf(item);
      let tr = existing.get(key);
      if (tr === undefined) {
        tr = create(item, key);
        tr.dataset.key = key;
      }
      existing.delete(key);
      tbody.appendChild(tr); // appending an existing row moves it into order
      update(tr, item, key);
    }
    for (const [key, tr] of existing) {
      if (remove) remove(key);
      tr.remove();
    }
  }

  // -- budgets ---------------------------------------------------------------------------
  const PAIR_CELLS = [
    "account mono", "region", "tokens num", "rate num", "rate-now num", "factor num",
    "ceiling num", "queue num", "calls num", "throttles num", "poller mono", "chart",
  ];

  function chartData(history) {
    return [
      history.map((p) => p.at),
      history.map((p) => p.spent_per_second),
      history.map((p) => p.rate_per_second),
    ];
  }

  function newChart(td, history) {
    if (typeof uPlot === "undefined") return null;
    const opts = {
      width: 260,
      height: 70,
      legend: { show: false },
      cursor: { show: false },
      axes: [{ show: false }, { size: 34, font: "10px system-ui", ticks: { show: false } }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      series: [
        {},
        {
          label: "spent/s", stroke: "#1f5fbf", fill: "rgba(31,95,191,0.12)", width: 1.5,
          points: { show: false },
        },
        { label: "rate/s", stroke: "#c62828", dash: [4, 3], width: 1.2, points: { show: false } },
      ],
    };
    return new uPlot(opts, chartData(history), td);
  }

  function updatePair(tr, p, key) {
    tr.dataset.account = p.account_id;
    tr.dataset.region = p.region;
    const throttled = p.rate_factor < 1;
    tr.classList.toggle("throttled", throttled);
    setText(cell(tr, "account"), p.account_id);
    setText(cell(tr, "region"), p.region);
    setText(cell(tr, "tokens"), fmt(p.tokens, 1) + " / " + p.burst);
    setText(cell(tr, "rate"), fmt(p.rate) + "/s");
    setText(cell(tr, "rate-now"), fmt(p.rate_now) + "/s" + (throttled ? " (lowered)" : ""));
    setText(cell(tr, "factor"), fmt(p.rate_factor, 3));
    setText(cell(tr, "ceiling"), p.ceiling_per_second > 0 ? fmt(p.ceiling_per_second) + "/s" : "–");
    setText(cell(tr, "queue"), p.queued_poll + " / " + p.queued_change + " / " + p.queued_job);
    setText(cell(tr, "calls"), fmt(p.calls_per_second, 1));
    setText(cell(tr, "throttles"), fmt(p.throttles_per_second, 1));
    // With the shared watch: the replica that polls (this one's role); "?" until it is heard.
    setText(cell(tr, "poller"), p.watch_role ? (p.polled_by || "?") + " (" + p.watch_role + ")" : "this replica");
    const chart = charts.get(key);
    if (chart) {
      chart.setData(chartData(p.history));
    } else {
      const made = newChart(cell(tr, "chart"), p.history);
      if (made) charts.set(key, made);
    }
  }

  function dropChart(key) {
    const chart = charts.get(key);
    if (chart) chart.destroy();
    charts.delete(key);
  }

  // -- servers ---------------------------------------------------------------------------
  const SERVER_CELLS = [
    "server mono", "account mono", "region", "operation", "stage", "state", "in-state num",
    "callers num", "request mono",
  ];

  function updateServer(tr, s) {
    tr.dataset.server = s.server_id;
    tr.classList.toggle("ended", s.outcome !== "");
    setText(cell(tr, "server"), s.server_id);
    setText(cell(tr, "account"), s.account_id);
    setText(cell(tr, "region"), s.region);
    setText(cell(tr, "operation"), s.operation);
    setText(cell(tr, "stage"), s.outcome && s.outcome !== "ok" ? s.stage + " (" + s.outcome + ")" : s.stage);
    const state = cell(tr, "state");
    setText(state, s.state);
    state.className = "state state-" + s.state;
    setText(cell(tr, "in-state"), fmt(s.seconds_in_state, 0) + " s");
    setText(cell(tr, "callers"), s.callers);
    setText(cell(tr, "request"), s.aws_request_id || "–");
  }

  // -- jobs ------------------------------------------------------------------------------
  const ENDED = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

  function newJobRow() {
    const tr = newRow(["job mono", "operation", "progress", "counts", "state", "actions"]);
    const progress = document.createElement("progress");
    const label = document.createElement("span");
    label.className = "pct";
    cell(tr, "progress").append(progress, " ", label);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cancel";
    button.textContent = "Cancel";
    const message = document.createElement("span");
    message.className = "job-message";
    cell(tr, "actions").append(button, message);
    button.addEventListener("click", () => cancelJob(tr.dataset.key, button));
    return tr;
  }

  function updateJob(tr, j) {
    tr.dataset.job = j.job_id;
    setText(cell(tr, "job"), j.job_id);
    const others = j.other_accounts > 0 ? " (+" + j.other_accounts + " other account" + (j.other_accounts > 1 ? "s" : "") + ")" : "";
    setText(cell(tr, "operation"), j.operation + others);
    const progress = tr.querySelector("progress");
    progress.max = Math.max(1, j.total);
    progress.value = j.ended;
    const pct = j.total > 0 ? Math.floor((100 * j.ended) / j.total) : (ENDED.has(j.state) ? 100 : 0);
    setText(tr.querySelector(".pct"), j.ended + " / " + j.total + " (" + pct + " %)");
    const counts = Object.entries(j.counts).filter(([, n]) => n > 0).map(([k, n]) => k.toLowerCase() + " " + n);
    setText(cell(tr, "counts"), counts.join(", ") || "–");
    const state = cell(tr, "state");
    setText(state, j.cancel_requested && !ENDED.has(j.state) ? j.state + " (cancelling)" : j.state);
    state.className = "state state-" + j.state;
    const button = tr.querySelector("button.cancel");
    button.hidden = ENDED.has(j.state);
    button.disabled = j.cancel_requested;
    const message = tr.querySelector(".job-message");
    const shown = jobMessages.get(j.job_id);
    setText(message, shown ? shown.text : "");
    message.classList.toggle("ok", Boolean(shown && shown.ok));
  }

  async function cancelJob(jobId, button) {
    button.disabled = true;
    let shown;
    try {
      const response = await fetch("/v1/jobs/" + encodeURIComponent(jobId) + ":cancel", {
        method: "POST",
        credentials: "same-origin",
        // The cookie counts for a POST only with this header (docs/security.md).
        headers: { "X-Transfer-Gateway-UI": "1" },
      });
      if (response.ok) {
        shown = { text: "cancel requested", ok: true };
      } else {
        let reason = response.statusText;
        try {
          reason = (await response.json()).message || reason;
        } catch (e) { /* not JSON: the status text will do */ }
        shown = { text: response.status + ": " + reason, ok: false };
        button.disabled = false;
      }
    } catch (e) {
      shown = { text: "no answer: " + e, ok: false };
      button.disabled = false;
    }
    jobMessages.set(jobId, shown);
    const tr = byId("jobs").querySelector('tr[data-key="' + CSS.escape(jobId) + '"]');
    if (tr) {
      const message = tr.querySelector(".job-message");
      setText(message, shown.text);
      message.classList.toggle("ok", shown.ok);
    }
  }

  // -- health ----------------------------------------------------------------------------
  function renderHealth(health) {
    const list = byId("health");
    list.textContent = "";
    for (const [name, c] of Object.entries(health)) {
      const li = document.createElement("li");
      li.className = "h-" + c.state;
      li.dataset.component = name;
      const b = document.createElement("b");
      b.textContent = name + ": " + c.state;
      li.appendChild(b);
      if (c.detail) {
        const detail = document.createElement("span");
        detail.className = "detail";
        detail.textContent = " — " + c.detail;
        li.appendChild(detail);
      }
      list.appendChild(li);
    }
  }

  // -- the stream ------------------------------------------------------------------------
  function render(snapshot) {
    setText(byId("replica"), snapshot.replica || "?");
    setText(byId("caller"), snapshot.caller);
    setText(byId("updated"), "updated " + new Date(snapshot.at * 1000).toLocaleTimeString());
    renderHealth(snapshot.health);
    syncRows(
      byId("pairs").tBodies[0], snapshot.pairs, (p) => p.account_id + "/" + p.region,
      () => newRow(PAIR_CELLS), updatePair, dropChart,
    );
    byId("pairs-empty").hidden = snapshot.pairs.length > 0;
    syncRows(
      byId("servers").tBodies[0], snapshot.servers,
      (s) => [s.account_id, s.region, s.server_id, s.operation].join("/"),
      () => newRow(SERVER_CELLS), updateServer,
    );
    byId("servers-empty").hidden = snapshot.servers.length > 0;
    syncRows(byId("jobs").tBodies[0], snapshot.jobs, (j) => j.job_id, newJobRow, updateJob);
    byId("jobs-empty").hidden = snapshot.jobs.length > 0;
  }

  function connect() {
    const connection = byId("connection");
    const events = new EventSource("/ui/events");
    events.addEventListener("open", () => {
      setText(connection, "live");
      connection.className = "conn-live";
    });
    events.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) {
        // Refused (401/403: signed out, token revoked) or the gateway is gone for good.
        setText(connection, "disconnected: reload the page (sign in again if asked)");
        connection.className = "conn-closed";
      } else {
        setText(connection, "reconnecting…");
        connection.className = "conn-pending";
      }
    });
  }

  connect();
})();

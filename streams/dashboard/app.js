"use strict";
// The stepstream dashboard: plain JavaScript over the worker's JSON API (/openapi.json).
// Views: #/runs (filters, pages, bulk cancel), #/run/ID (timeline, outputs, errors, logs,
// cancel and replay; live through the run's event stream, with step progress),
// #/functions (counts, failure rates, schedules, bulk replay, pause and resume),
// #/dlq (dead letters).
// Data is only ever put in the page as text (textContent), never as HTML.

const REFRESH_MS = 2000;
const FINAL = ["completed", "failed", "cancelled"];
const ui = { timer: null, cursors: [], selected: null, seq: null, runId: null, run: null,
  stream: null, progress: {} };

// --- helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// With a token set, the session cookie (from /login) goes along by itself: same origin,
// HttpOnly. A 401 means it has ended: back to the login page, keeping the view.
async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body) headers["Content-Type"] = "application/json";
  const reply = await fetch(path, { ...options, headers });
  if (reply.status === 401) {
    location.assign("/login" + location.hash);
    throw new Error("not logged in");
  }
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(body.error || `${reply.status} ${reply.statusText}`);
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body || {}) });
}

// The log out button, for a browser signed in with the session cookie.
async function showLogout() {
  const session = await api("/v1/session").catch(() => null);
  const button = document.getElementById("logout");
  if (!session || session.via !== "cookie") return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    await post("/logout").catch(() => null);
    location.assign("/login");
  });
}

function fmtTime(ms) {
  if (ms == null) return "–";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtDur(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
}

function badge(status) { return h("span", { class: `badge ${status}` }, status); }
function json(value) { return JSON.stringify(value, null, 2); }

function notice(text, isError) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = !text;
}

function setView(...children) {
  const view = document.getElementById("view");
  view.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
  return view;
}

function stamp() { document.getElementById("updated").textContent = "updated " + fmtTime(Date.now()).slice(11); }

// Runs the view's refresh now and then every REFRESH_MS while auto-refresh is on.
function every(refresh) {
  stopLive();
  const tick = () => refresh().then(stamp, (err) => notice(err.message, true));
  tick();
  ui.timer = setInterval(() => {
    if (document.getElementById("auto-refresh").checked) tick();
  }, REFRESH_MS);
}

async function act(what, request) {
  try {
    await request();
    notice(`${what} requested; the run changes once the orchestrator has it.`);
    return true;
  } catch (err) {
    notice(`${what} refused: ${err.message}`, true);
    return false;
  }
}

// --- runs list -------------------------------------------------------------------------

function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

async function showRuns(params) {
  const filters = Object.fromEntries(params);
  const fnSelect = h("select", { name: "function" }, h("option", { value: "" }, "all functions"));
  const form = h("form", { class: "filters", id: "filters", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "function", fnSelect),
    h("label", {}, "status", h("select", { name: "status" }, h("option", { value: "" }, "any status"),
      ["running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s }, s)))),
    h("label", {}, "started after", h("input", { type: "datetime-local", name: "since" })),
    h("label", {}, "started before", h("input", { type: "datetime-local", name: "until" })),
    h("button", { type: "button", onclick: () => { location.hash = "#/runs"; } }, "clear"),
    h("button", { type: "button", id: "bulk-cancel", class: "danger", onclick: () => bulkCancel(filters) },
      "cancel running…"));
  form.status.value = filters.status || "";
  form.since.value = toLocalInput(filters.since);
  form.until.value = toLocalInput(filters.until);
  form.addEventListener("change", () => {
    const next = new URLSearchParams();
    if (form.function.value) next.set("function", form.function.value);
    if (form.status.value) next.set("status", form.status.value);
    for (const name of ["since", "until"]) {
      if (form[name].value) next.set(name, String(new Date(form[name].value).getTime()));
    }
    ui.cursors = [];
    location.hash = "#/runs?" + next.toString();
  });
  const body = h("tbody");
  const older = h("button", { id: "older", disabled: true }, "older →");
  const newer = h("button", { id: "newer", disabled: true }, "← newer");
  setView(h("h1", {}, "Runs"), form,
    h("table", { id: "runs-table" }, h("thead", {}, h("tr", {},
      ["status", "run", "function", "event", "started", "duration", "steps", "error"].map((c) => h("th", {}, c)))), body),
    h("div", { class: "pager" }, newer, older));
  api("/v1/functions").then(({ functions }) => {
    fnSelect.append(...functions.map((f) => h("option", { value: f.function_id }, f.function_id)));
    fnSelect.value = filters.function || "";
  }).catch(() => {});
  let cursor = ui.cursors.at(-1) || "";
  older.onclick = () => { ui.cursors.push(older.dataset.cursor); cursor = older.dataset.cursor; refresh(); };
  newer.onclick = () => { ui.cursors.pop(); cursor = ui.cursors.at(-1) || ""; refresh(); };
  async function refresh() {
    const query = new URLSearchParams(filters);
    if (cursor) query.set("cursor", cursor);
    const page = await api("/v1/runs?" + query.toString());
    body.replaceChildren(...page.runs.map((run) => h("tr", {
      class: "link", "data-run-id": run.run_id, "data-status": run.status,
      onclick: () => { location.hash = "#/run/" + encodeURIComponent(run.run_id); },
    }, h("td", {}, badge(run.status)), h("td", { class: "mono" }, run.run_id),
    h("td", {}, run.function_id), h("td", {}, run.event.name || "–"),
    h("td", { class: "mono" }, fmtTime(run.started_at)), h("td", {}, fmtDur(run.duration_ms)),
    h("td", {}, run.steps), h("td", {}, run.error ? `${run.error.type}: ${run.error.message}` : ""))));
    if (!page.runs.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs match.")));
    older.disabled = !page.next_cursor;
    older.dataset.cursor = page.next_cursor || "";
    newer.disabled = !ui.cursors.length;
  }
  every(refresh);
}

// Cancels every running run the list's filters select, after a confirmation with the count.
async function bulkCancel(filters) {
  const query = { status: "running" };
  if (filters.function) query.function = filters.function;
  if (filters.since) query.started_after = Number(filters.since);
  if (filters.until) query.started_before = Number(filters.until);
  try {
    const { matched } = await post("/v1/runs/cancel", { ...query, dry_run: true });
    if (!matched) return notice("No running run matches these filters.");
    const what = filters.function ? ` of ${filters.function}` : "";
    if (!window.confirm(`Cancel ${matched} running runs${what}?`)) return;
    const { requested } = await post("/v1/runs/cancel", { ...query, reason: "cancelled from the dashboard (bulk)" });
    notice(`Cancel requested for ${requested} runs; each changes once the orchestrator has it.`);
  } catch (err) {
    notice(`Bulk cancel refused: ${err.message}`, true);
  }
}

// --- one run ---------------------------------------------------------------------------

function timelineSpan(run) {
  let end = run.ended_at || Date.now();
  for (const step of run.steps) {
    for (const a of step.history) end = Math.max(end, a.ended_at || 0, a.ts || 0);
  }
  return { t0: run.started_at, total: Math.max(1, end - run.started_at), end };
}

function bar(span, from, to, cls, title) {
  const left = ((from - span.t0) / span.total) * 100;
  const width = (Math.max(0, to - from) / span.total) * 100;
  return h("div", { class: `bar ${cls}`, title, "data-outcome": cls,
    style: `left:${Math.max(0, left)}%;width:${Math.max(0.4, width)}%` });
}

function stepBars(run, step, span) {
  const bars = [];
  step.history.forEach((a, i) => {
    const next = step.history[i + 1];
    const label = `attempt ${a.attempt + 1}${a.replay ? ` (replay ${a.replay})` : ""} · ${a.outcome}`;
    if (a.started_at != null) {
      const cls = a.outcome === "failed" ? (a.next_attempt_at ? "retrying" : "failed") : "completed";
      const b = bar(span, a.started_at, a.ended_at ?? span.end, cls, `${label} · ${fmtDur(a.duration_ms)}`);
      b.dataset.step = step.id;
      b.dataset.attempt = a.attempt;
      bars.push(b);
      if (a.next_attempt_at) {  // the backoff before the next attempt
        bars.push(bar(span, a.ended_at, next?.started_at ?? a.next_attempt_at, "wait", "backoff"));
      }
    } else if (["sleeping", "waiting", "invoking"].includes(a.outcome)) {
      const until = next?.ts ?? (FINAL.includes(run.status) ? run.ended_at : span.end);
      bars.push(bar(span, a.ts, until ?? span.end, "wait", `${a.outcome} until ${fmtTime(a.next_attempt_at)}`));
    }
  });
  return bars;
}

function timeline(run) {
  const span = timelineSpan(run);
  const rows = run.steps.map((step) => h("div", {
    class: "tl-row" + (ui.selected === step.id ? " selected" : ""), "data-step": step.id,
    onclick: () => { ui.selected = ui.selected === step.id ? null : step.id; ui.seq = null; renderRun(run); },
  }, h("div", { class: "tl-label", title: step.id }, badge(step.status), " ", step.id),
  h("div", { class: "tl-track" }, stepBars(run, step, span)),
  h("div", { class: "tl-dur" }, fmtDur(step.duration_ms))));
  return h("div", { class: "timeline", id: "timeline" },
    h("div", { class: "tl-axis" }, h("div", {}, "step"),
      h("div", {}, h("span", {}, "0"), h("span", {}, fmtDur(Math.round(span.total / 2))), h("span", {}, fmtDur(span.total))),
      h("div", {}, "")),
    rows.length ? rows : h("p", { class: "muted" }, "No step has reported yet."));
}

function errorBox(error) {
  if (!error) return null;
  return h("pre", { class: "error" }, `${error.type}: ${error.message}` + (error.traceback ? "\n\n" + error.traceback : ""));
}

function logLines(run, stepId) {
  const lines = run.logs.filter((l) => !stepId || l.step_id === stepId);
  if (!lines.length) return h("p", { class: "muted" }, stepId ? "No log lines from this step." : "No log lines.");
  return h("div", { class: "logs", id: "logs" }, lines.map((l) => h("div", { class: `logline ${l.level}` },
    h("span", { class: "ts" }, fmtTime(l.ts).slice(11), " "), h("span", { class: "lvl" }, l.level),
    l.step_id ? h("span", { class: "step" }, `[${l.step_id}${l.attempt != null ? " #" + (l.attempt + 1) : ""}] `) : null,
    l.message)));
}

function stepDetail(run, step) {
  const replayable = ["failed", "cancelled"].includes(run.status);
  return h("div", { class: "card", id: "step-detail" },
    h("h2", {}, "Step ", h("code", {}, step.id), " ", badge(step.status)),
    h("div", { class: "meta" },
      h("div", {}, h("span", {}, "attempts"), step.attempts),
      h("div", {}, h("span", {}, "started"), fmtTime(step.started_at)),
      h("div", {}, h("span", {}, "ended"), fmtTime(step.ended_at)),
      h("div", {}, h("span", {}, "duration"), fmtDur(step.duration_ms))),
    replayable ? h("div", { class: "actions" }, h("button", {
      id: "replay-from-btn",
      onclick: () => replay(run, `Replay from ${step.id}`, { from_step: step.id }),
    }, "Replay from this step")) : null,
    h("h2", {}, "Attempts"),
    h("table", {}, h("thead", {}, h("tr", {}, ["#", "replay", "outcome", "started", "duration", "error"].map((c) => h("th", {}, c)))),
      h("tbody", {}, step.history.map((a) => h("tr", {}, h("td", {}, a.attempt + 1), h("td", {}, a.replay),
        h("td", {}, a.outcome), h("td", { class: "mono" }, fmtTime(a.started_at ?? a.ts)), h("td", {}, fmtDur(a.duration_ms)),
        h("td", {}, errorBox(a.error)))))),
    step.output !== null ? [h("h2", {}, "Output"), h("pre", { id: "step-output" }, json(step.output))] : null,
    h("h2", {}, "Logs of this step"), logLines(run, step.id));
}

function renderRun(run) {
  if (ui.seq === run.seq && ui.runId === run.run_id) return;
  ui.seq = run.seq;
  ui.runId = run.run_id;
  ui.run = run;
  const id = encodeURIComponent(run.run_id);
  const selected = run.steps.find((s) => s.id === ui.selected);
  setView(
    h("p", {}, h("a", { href: "#/runs" }, "← runs")),
    h("h1", {}, run.function_id, " ", h("span", { id: "run-status", "data-status": run.status }, badge(run.status))),
    h("div", { class: "card" },
      h("div", { class: "meta" },
        h("div", {}, h("span", {}, "run"), h("code", {}, run.run_id)),
        h("div", {}, h("span", {}, "event"), run.event ? `${run.event.name} (${run.event.id})` : "–"),
        h("div", {}, h("span", {}, "started"), fmtTime(run.started_at)),
        h("div", {}, h("span", {}, "ended"), fmtTime(run.ended_at)),
        h("div", {}, h("span", {}, "duration"), fmtDur(run.duration_ms)),
        h("div", {}, h("span", {}, "replays"), run.replays),
        run.backfill ? h("div", { id: "run-backfill" }, h("span", {}, "backfill"), h("code", {}, run.backfill)) : null),
      h("div", { class: "actions" },
        h("button", { id: "cancel-btn", class: "danger", disabled: FINAL.includes(run.status),
          onclick: () => act("Cancel", () => post(`/v1/runs/${id}/cancel`, { reason: "cancelled from the dashboard" })) }, "Cancel"),
        h("button", { id: "replay-btn", class: "primary", disabled: !["failed", "cancelled"].includes(run.status),
          onclick: () => replay(run, "Replay", {}) }, "Replay failed steps"))),
    run.error ? h("div", { class: "card" }, h("h2", {}, "Error"), errorBox(run.error)) : null,
    run.status === "completed" ? h("div", { class: "card" }, h("h2", {}, "Output"), h("pre", { id: "run-output" }, json(run.output))) : null,
    h("div", { class: "card", id: "progress", hidden: true }),
    h("div", { class: "card" }, h("h2", {}, "Timeline"), timeline(run)),
    selected ? stepDetail(run, selected) : h("p", { class: "muted" }, "Click a step for its attempts, output and logs."),
    h("div", { class: "card" }, h("h2", {}, "Logs", run.logs_dropped ? ` (${run.logs_dropped} older lines not kept)` : ""), logLines(run, null)),
    run.event ? h("div", { class: "card" }, h("h2", {}, "Event data"), h("pre", {}, json(run.event.data))) : null);
  renderProgress();
}

// What running steps last said of their progress (ctx.progress), from the run's stream.
function renderProgress() {
  const card = document.getElementById("progress");
  if (!card || !ui.run) return;
  const done = new Set(ui.run.steps.filter((s) => ["completed", "failed"].includes(s.status)).map((s) => s.id));
  const live = FINAL.includes(ui.run.status) ? [] :
    Object.values(ui.progress).filter((p) => !done.has(p.step_id));
  card.hidden = !live.length;
  card.replaceChildren(h("h2", {}, "In progress"), ...live.map((p) => h("div", { class: "progress-row", "data-step": p.step_id || "" },
    h("span", { class: "tl-label" }, p.step_id || "(run)"),
    h("span", { class: "progress-track" }, h("span", { class: "progress-fill", style: `width:${Math.round(p.fraction * 100)}%` })),
    h("span", { class: "progress-pct" }, `${Math.round(p.fraction * 100)} %`),
    h("span", { class: "muted" }, p.message))));
}

// A run's stream ends with the run; a replay starts it again once the orchestrator has
// applied it (a moment after the request): then the page follows the new stream.
async function replay(run, what, body) {
  const path = "/v1/runs/" + encodeURIComponent(run.run_id);
  if (!await act(what, () => post(path + "/replay", body))) return;
  for (let tries = 0; tries < 50 && location.hash.startsWith("#/run/"); tries++) {
    const now = await api(path).catch(() => run);
    if (now.replays > run.replays) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  if (ui.runId === run.run_id && location.hash.startsWith("#/run/")) showRun(run.run_id);
}

function stopLive() {
  clearInterval(ui.timer);
  if (ui.stream) ui.stream.close();
  ui.stream = null;
}

// The run page follows the run's event stream (GET /v1/runs/ID/stream): each step and
// the end make it read the run once; progress is drawn from the events themselves. The
// browser reconnects a broken stream by itself (Last-Event-ID); a stream refused (the
// worker's stream limit) falls back to polling.
function showRun(runId) {
  ui.seq = null;
  if (ui.runId !== runId) { ui.selected = null; ui.run = null; }
  ui.progress = {};
  const path = "/v1/runs/" + encodeURIComponent(runId);
  const load = async () => renderRun(await api(path));
  if (!window.EventSource) return every(load);
  stopLive();
  let loading = null, again = false;
  const refresh = () => {
    if (loading) { again = true; return; }
    loading = load().then(stamp, (err) => notice(err.message, true)).finally(() => {
      loading = null;
      if (again) { again = false; refresh(); }
    });
  };
  const source = new EventSource(path + "/stream");
  ui.stream = source;
  source.addEventListener("run", refresh);
  source.addEventListener("step", refresh);
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    ui.progress[p.step_id || ""] = p;
    renderProgress();
  });
  source.addEventListener("end", () => { source.close(); refresh(); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && ui.stream === source) every(load);
  };
}

// --- functions and dead letters --------------------------------------------------------

function showFunctions() {
  const body = h("tbody");
  setView(h("h1", {}, "Functions"),
    h("table", { id: "functions-table" }, h("thead", {}, h("tr", {},
      ["function", "state", "runs", "running", "completed", "failed", "cancelled", "failure rate", "schedule", ""].map((c) => h("th", {}, c)))), body));
  every(async () => {
    const { functions } = await api("/v1/functions");
    body.replaceChildren(...functions.map((f) => h("tr", { "data-function": f.function_id },
      h("td", {}, h("a", { href: "#/runs?function=" + encodeURIComponent(f.function_id) }, f.function_id)),
      h("td", { class: "state" }, badge(f.paused ? "paused" : "active")),
      h("td", {}, f.runs), h("td", {}, f.running), h("td", {}, f.completed), h("td", {}, f.failed), h("td", {}, f.cancelled),
      h("td", { class: "failure-rate" }, f.failure_rate == null ? "–" : [
        h("span", { class: "rate", style: `width:${Math.round(f.failure_rate * 60)}px` }), `${(f.failure_rate * 100).toFixed(1)} %`]),
      h("td", { class: "schedule" }, scheduleText(f.schedule)),
      h("td", {}, h("button", { disabled: !f.failed, onclick: () => {
        if (window.confirm(`Replay the ${f.failed} failed runs of ${f.function_id}?`)) {
          act("Bulk replay", () => post(`/v1/functions/${encodeURIComponent(f.function_id)}/replay`, { status: "failed" }));
        }
      } }, "replay failed"), " ", pauseButton(f)))));
    if (!functions.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No functions yet.")));
  });
}

// A cron schedule, its zone and its next tick in that zone; paused: no next tick.
function scheduleText(s) {
  if (!s) return "";
  const next = s.next_tick == null ? "no tick while paused"
    : "next " + new Date(s.next_tick).toLocaleString(undefined, { timeZone: s.tz, timeZoneName: "short" });
  return `${s.cron} (${s.tz}) · ${next}`;
}

function pauseButton(f) {
  const action = f.paused ? "resume" : "pause";
  return h("button", { class: f.paused ? "primary pause-btn" : "pause-btn", onclick: async () => {
    try {
      await post(`/v1/functions/${encodeURIComponent(f.function_id)}/${action}`, {});
      notice(f.paused ? `${f.function_id} resumed: its waiting runs continue${f.schedule ? ", its schedule ticks from the next tick on (the pause's ticks are skipped)" : ""}.`
        : `${f.function_id} paused: ${f.schedule ? "its schedule starts no tick" : "new events wait as runs"}, running runs stop after their current step.`);
    } catch (err) {
      notice(`${action} refused: ${err.message}`, true);
    }
  } }, f.paused ? "Resume" : "Pause");
}

function showDlq() {
  const body = h("tbody");
  const total = h("span", { class: "muted" });
  setView(h("h1", {}, "Dead letters ", total),
    h("p", { class: "muted" }, "Steps that exhausted their retries. Replaying runs the failed step again; completed steps stay memoized."),
    h("table", { id: "dlq-table" }, h("thead", {}, h("tr", {},
      ["when", "function", "run", "step", "attempts", "error", ""].map((c) => h("th", {}, c)))), body));
  every(async () => {
    const page = await api("/v1/dlq?limit=200");
    total.textContent = `(${page.total})`;
    body.replaceChildren(...page.dead_letters.map((d) => h("tr", {},
      h("td", { class: "mono" }, fmtTime(d.ts)), h("td", {}, d.function_id),
      h("td", { class: "mono" }, h("a", { href: "#/run/" + encodeURIComponent(d.run_id) }, d.run_id)),
      h("td", { class: "mono" }, d.step_id), h("td", {}, d.attempt + 1),
      h("td", {}, d.error ? `${d.error.type}: ${d.error.message}` : ""),
      h("td", {}, h("button", { onclick: () => act("Replay", () => post(`/v1/dlq/${encodeURIComponent(d.run_id)}/replay`)) }, "replay")))));
    if (!page.dead_letters.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No dead letters.")));
  });
}

// --- routing ---------------------------------------------------------------------------

function route() {
  notice("");
  stopLive();
  const [path, query] = (location.hash || "#/runs").slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] === "run" ? "runs" : (parts[0] || "runs");
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (parts[0] === "run" && parts[1]) return showRun(decodeURIComponent(parts.slice(1).join("/")));
  if (parts[0] === "functions") return showFunctions();
  if (parts[0] === "dlq") return showDlq();
  return showRuns(new URLSearchParams(query || ""));
}

window.addEventListener("hashchange", route);
route();
showLogout();

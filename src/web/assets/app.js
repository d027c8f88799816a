// flashline dashboard. Plain JS, no libraries. Every string from the station (serials,
// messages, slot names) goes into the page through textContent — never innerHTML: barcodes
// are hostile input.
"use strict";

const STEP_LABEL = {
  connect: "connecting", identify: "reading signature", read_fuses: "reading fuses", erase: "erasing",
  program: "programming flash", verify: "verifying flash", eeprom: "writing EEPROM", fuses: "writing fuses",
  lock: "setting lock bits", read: "reading", leave: "releasing target",
};
// Rough share of a unit's cycle per step, for one overall progress bar.
const STEP_WEIGHT = { connect: 2, identify: 2, read_fuses: 2, erase: 6, program: 40, verify: 34, eeprom: 4, fuses: 4, lock: 2, leave: 2 };
const WEIGHT_SUM = Object.values(STEP_WEIGHT).reduce((a, b) => a + b, 0);
const BADGE = { idle: "IDLE", busy: "BUSY", pass: "PASS", fail: "FAIL", error: "ERROR", interrupted: "INTERRUPTED", offline: "OFFLINE" };

let model = null;
let access = { read_only: false, needs_token: false };
const tileEls = new Map();

const $ = (id) => document.getElementById(id);
function text(el, s) { el.textContent = s == null ? "" : String(s); }

// ---- model updates (mirror of src/web/model.rs `Model::apply`) ----
function tileOf(slot) { return model.tiles.find((t) => t.slot === slot); }
function blankTile(slot) {
  return { slot, state: "idle", serial: null, attempt: null, step: null, done: 0, total: 0, steps_done: [],
           failure_class: null, message: null, hint: null, cycle_ms: null, programmer: null };
}
function nowClock() { return new Date().toISOString().substring(11, 19); }

function apply(ev) {
  const t = ev.slot != null ? tileOf(ev.slot) : null;
  switch (ev.event) {
    case "started":
      model.station = ev.station; model.sku = ev.sku; model.recipe = ev.recipe; model.operator = ev.operator;
      for (const s of ev.slots) if (!tileOf(s)) model.tiles.push(blankTile(s));
      renderAll(); return;
    case "slot_online": if (t) t.programmer = ev.programmer; break;
    case "slot_offline":
      if (t) { t.state = "offline"; t.message = ev.reason;
               t.hint = "the slot takes no boards until the station is restarted: check the programmer and its cable"; }
      break;
    case "scan_rejected":
      model.refused.unshift({ at: nowClock(), raw: ev.raw, slot: ev.slot, reason: ev.reason });
      model.refused.length = Math.min(model.refused.length, 12);
      renderRefused(); return;
    case "job_started":
      if (t) { const p = t.programmer; Object.assign(t, blankTile(ev.slot)); t.programmer = p;
               t.state = "busy"; t.serial = ev.serial; t.attempt = ev.attempt; }
      break;
    case "step":
      if (t) { t.step = ev.step; t.done = 0; t.total = 0;
               if (ev.state === "finished" && !t.steps_done.includes(ev.step)) t.steps_done.push(ev.step); }
      break;
    case "progress": if (t) { t.step = ev.step; t.done = ev.done; t.total = ev.total; } break;
    case "job_finished":
      if (t) { if (t.state !== "offline") t.state = ev.result; t.serial = ev.serial; t.attempt = ev.attempt;
               t.failure_class = ev.failure_class; t.message = ev.message; t.hint = hintFor(ev.failure_class);
               t.cycle_ms = ev.cycle_ms; t.step = null; }
      model.recent.unshift({ at: nowClock(), slot: ev.slot, serial: ev.serial, attempt: ev.attempt, result: ev.result,
                             failure_class: ev.failure_class, message: ev.message, cycle_ms: ev.cycle_ms });
      model.recent.length = Math.min(model.recent.length, 12);
      renderRecent(); scheduleCharts();
      break;
    case "records_unavailable": model.records_unavailable = ev.reason; renderNotice(); return;
    case "records_available": model.records_unavailable = null; renderNotice(); return;
    case "totals": model.totals = withYield(ev); renderTotals(); return;
    case "stopped": model.totals = withYield(ev); model.stopping = true; renderTotals(); renderNotice(); return;
    default: return;
  }
  if (t) renderTile(t);
}

function withYield(t) {
  const o = Object.assign({}, t); delete o.event;
  o.yield_pct = t.units > 0 ? 100 * t.units_passed / t.units : null;
  return o;
}

// Operator hints come from the server: after a result it sends the folded tile ("tile" event).
function hintFor(cls) { return null; }
function replaceTile(nt) {
  const i = model.tiles.findIndex((t) => t.slot === nt.slot);
  if (i >= 0) model.tiles[i] = nt; else model.tiles.push(nt);
  renderTile(nt);
}

// ---- rendering ----
function renderAll() {
  text($("station"), model.station || "—");
  text($("product"), model.sku ? `${model.sku} · ${model.recipe}` : "");
  text($("operator"), model.operator ? `operator ${model.operator}` : "");
  document.body.classList.toggle("readonly", access.read_only);
  text($("t-yield-label"), model.mode === "records" ? "TODAY YIELD" : "SHIFT YIELD");
  const main = $("tiles");
  const want = new Set(model.tiles.map((t) => t.slot));
  for (const [slot, el] of tileEls) if (!want.has(slot)) { el.remove(); tileEls.delete(slot); }
  for (const t of model.tiles) renderTile(t);
  // keep DOM order = model order
  for (const t of model.tiles) main.appendChild(tileEls.get(t.slot));
  renderTotals(); renderRefused(); renderRecent(); renderNotice();
}

function tileEl(slot) {
  let el = tileEls.get(slot);
  if (!el) {
    el = $("tile-tpl").content.firstElementChild.cloneNode(true);
    el.dataset.slot = slot;
    el.querySelector(".retest").addEventListener("click", () => retest(slot));
    tileEls.set(slot, el);
    $("tiles").appendChild(el);
  }
  return el;
}

function progressPct(t) {
  if (t.state === "pass") return 100;
  if (t.state !== "busy") return t.state === "idle" || t.state === "offline" ? 0 : 100;
  let w = 0;
  for (const s of t.steps_done) w += STEP_WEIGHT[s] || 0;
  if (t.step && !t.steps_done.includes(t.step) && t.total > 0) w += (STEP_WEIGHT[t.step] || 0) * t.done / t.total;
  return Math.min(99, Math.round(100 * w / WEIGHT_SUM));
}

function renderTile(t) {
  const el = tileEl(t.slot);
  el.className = `tile s-${t.state}`;
  el.dataset.state = t.state;
  const q = (c) => el.querySelector(c);
  text(q(".slot"), t.slot);
  text(q(".prog"), t.programmer || "");
  text(q(".badge"), BADGE[t.state] || t.state.toUpperCase());
  text(q(".serial"), t.serial || "");
  let step = "";
  if (t.state === "busy") step = t.step ? (STEP_LABEL[t.step] || t.step) : "starting";
  else if (t.state === "idle") step = "ready — scan a board";
  else if (t.state === "pass") step = t.cycle_ms != null ? `done in ${(t.cycle_ms / 1000).toFixed(1)} s` : "done";
  text(q(".step"), step);
  const pct = progressPct(t);
  q(".fill").style.width = pct + "%";
  q(".bar").setAttribute("aria-valuenow", String(pct));
  const failed = t.state === "fail" || t.state === "error" || t.state === "interrupted" || t.state === "offline";
  text(q(".message"), failed ? (t.message || t.failure_class || "") : "");
  text(q(".hint"), failed && t.hint ? `→ ${t.hint}` : "");
  const meta = [];
  if (t.attempt) meta.push(`attempt ${t.attempt}`);
  if (t.failure_class && failed) meta.push(t.failure_class);
  text(q(".meta"), meta.join(" · "));
  q(".retest").disabled = !!model.stopping;
}

function fmtPct(v) { return v == null ? "—" : `${v.toFixed(1)}%`; }

function renderTotals() {
  const t = model.totals;
  text($("t-passed"), t.passed); text($("t-failed"), t.failed); text($("t-units"), t.units);
  text($("t-yield"), fmtPct(t.yield_pct)); text($("t-attempts"), t.attempts); text($("t-errors"), t.errors);
  text($("t-refused"), t.rejected_scans);
  // Results the records could not take: the boards must be set aside (never hidden).
  text($("t-unrecorded"), t.unrecorded || 0); $("t-unrecorded-row").hidden = !t.unrecorded;
}

function renderRefused() {
  const ul = $("refused");
  ul.replaceChildren();
  for (const r of model.refused) {
    const li = document.createElement("li");
    const at = document.createElement("span"); text(at, r.at);
    const raw = document.createElement("span"); raw.className = "raw"; text(raw, r.raw);
    const why = document.createElement("span"); text(why, r.reason);
    li.append(at, raw, why);
    ul.appendChild(li);
  }
}

function renderRecent() {
  const tb = $("recent");
  tb.replaceChildren();
  for (const r of model.recent) {
    const tr = document.createElement("tr");
    const cells = [r.at, r.slot, r.serial, r.attempt, r.result.toUpperCase(), r.failure_class || ""];
    cells.forEach((c, i) => {
      const td = document.createElement("td"); text(td, c);
      if (i === 2) td.className = "serial-cell";
      if (i === 4) td.className = `r-${r.result}`;
      tr.appendChild(td);
    });
    if (r.message) tr.title = r.message;
    tb.appendChild(tr);
  }
}

function renderNotice() {
  const n = $("notice");
  let msg = "";
  if (model.records_unavailable) msg = model.records_unavailable;
  else if (model.stopping) msg = "Station stopping: boards in the fixtures finish and are recorded; no new scans.";
  else if (access.read_only) msg = "Read-only view of the records (flashline serve): scan at the station.";
  else if (access.needs_token) msg = "Scans and retests need the station token: open /login?token=TOKEN once in this browser.";
  n.hidden = !msg; text(n, msg);
  $("stop").disabled = !!model.stopping;
}

// ---- charts and today's figures (from the records) ----
let chartTimer = null, chartLast = 0;
function scheduleCharts() {
  if (chartTimer) return;
  const wait = Math.max(0, 1500 - (Date.now() - chartLast));
  chartTimer = setTimeout(() => { chartTimer = null; refreshCharts(); }, wait);
}
async function refreshCharts() {
  chartLast = Date.now();
  $("charts").src = "/api/charts.svg?t=" + chartLast;
  try {
    const r = await fetch("/api/today", { credentials: "same-origin" });
    if (!r.ok) return;
    const d = await r.json();
    text($("today-day"), d.day);
    text($("today-fpy"), d.first_pass_yield == null ? "—" : `${(100 * d.first_pass_yield).toFixed(1)}%`);
    text($("today-final"), d.final_yield == null ? "—" : `${(100 * d.final_yield).toFixed(1)}%`);
    text($("today-units"), d.units);
  } catch (e) { /* next event retries */ }
}

// ---- write actions ----
async function post(path, body) {
  try {
    const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
                                  body: JSON.stringify(body) });
    const ct = r.headers.get("content-type") || "";
    if (ct.startsWith("application/json")) return await r.json();
    return { ok: false, message: (await r.text()).trim() || `HTTP ${r.status}` };
  } catch (e) {
    return { ok: false, message: "the station does not answer: check that flashline is running" };
  }
}

function scanMessage(ok, msg) {
  const el = $("scanmsg");
  el.className = "scanmsg " + (ok ? "ok" : "refused");
  text(el, ok ? msg : `REFUSED: ${msg}`);
}

async function onScan(ev) {
  ev.preventDefault();
  const box = $("scan");
  const line = box.value;
  box.value = "";
  if (!line.trim()) return;
  const r = await post("/api/scan", { line });
  scanMessage(r.ok, r.message);
}

async function retest(slot) {
  const r = await post("/api/retest", { slot });
  scanMessage(r.ok, r.ok ? `retest: ${r.message}` : r.message);
  $("scan").focus();
}

let stopArmed = null;
async function onStop() {
  const b = $("stop");
  if (!stopArmed) {
    text(b, "PRESS AGAIN TO STOP");
    stopArmed = setTimeout(() => { stopArmed = null; text(b, "STOP STATION"); }, 4000);
    return;
  }
  clearTimeout(stopArmed); stopArmed = null;
  const r = await post("/api/stop", {});
  scanMessage(r.ok, r.message);
  text(b, "STOP STATION");
}

// The scan box keeps focus: a barcode scanner types wherever the focus is.
function keepFocus() {
  const box = $("scan");
  box.addEventListener("blur", () => setTimeout(() => {
    const a = document.activeElement;
    if (!access.read_only && (!a || a === document.body || a.tagName !== "BUTTON")) box.focus();
  }, 100));
  document.addEventListener("keydown", (e) => {
    if (document.activeElement !== box && !access.read_only && !e.ctrlKey && !e.altKey && !e.metaKey) box.focus();
  });
  document.addEventListener("click", () => setTimeout(() => { if (!access.read_only) box.focus(); }, 0));
}

// ---- connection ----
async function loadSnapshot() {
  const r = await fetch("/api/snapshot", { credentials: "same-origin" });
  if (!r.ok) throw new Error(`snapshot: HTTP ${r.status}`);
  const s = await r.json();
  model = s.model; access = s.access;
  renderAll();
}

function connect() {
  const es = new EventSource("/api/events");
  const conn = $("conn");
  es.onopen = () => { conn.className = "conn-state live"; text(conn, "live"); };
  es.onerror = () => { conn.className = "conn-state down"; text(conn, "connection lost — retrying"); };
  es.addEventListener("snapshot", (e) => { model = JSON.parse(e.data); renderAll(); scheduleCharts(); });
  es.addEventListener("tile", (e) => { if (model) replaceTile(JSON.parse(e.data)); });
  es.addEventListener("station", (e) => { if (model) apply(JSON.parse(e.data)); });
  es.addEventListener("resync", () => { loadSnapshot().catch(() => {}); });
}

function tick() { text($("clock"), new Date().toLocaleTimeString()); }

document.addEventListener("DOMContentLoaded", async () => {
  $("scanform").addEventListener("submit", onScan);
  $("stop").addEventListener("click", onStop);
  keepFocus(); tick(); setInterval(tick, 1000);
  try { await loadSnapshot(); } catch (e) { text($("conn"), String(e.message)); }
  connect(); refreshCharts();
  $("scan").focus();
});

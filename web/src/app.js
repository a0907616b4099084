// Keel's web console. Talks to the appliance's REST API (/api/v1) with the bearer token
// the operator signs in with (kept in this tab's sessionStorage only, never in a URL), and
// to a VM's serial console over its WebSocket. Everything shown is inserted as text.

import { Terminal } from "/assets/xterm.mjs";
import { FitAddon } from "/assets/addon-fit.mjs";
import { Graph, formatNumber } from "/assets/graph.js";

const TOKEN_KEY = "keel-token";
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

// ---- API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// Calls the API; answers { status, etag, body } or throws ApiError with the server's message.
async function api(method, path, { body, headers = {}, tokenOverride } = {}) {
  const init = { method, headers: { Authorization: "Bearer " + (tokenOverride ?? token()), ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = init.headers["Content-Type"] || "application/json";
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "the appliance did not answer (" + e.message + ")", null);
  }
  const text = await r.text();
  let parsed = null;
  if (text && (r.headers.get("Content-Type") || "").startsWith("application/json")) {
    try { parsed = JSON.parse(text); } catch { parsed = null; }
  }
  if (!r.ok) {
    const message = parsed && parsed.error ? parsed.error.message : `${r.status} ${r.statusText}`;
    if (r.status === 401 && !tokenOverride) signOut("Signed out: " + message);
    throw new ApiError(r.status, message, parsed);
  }
  return { status: r.status, etag: r.headers.get("ETag"), body: parsed ?? text };
}

const vmPath = (name) => "/api/v1/vms/" + encodeURIComponent(name);

// ---- Sign-in and views --------------------------------------------------------------

let timers = [];

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const b of document.querySelectorAll("#nav button[data-view]")) b.classList.toggle("active", b.dataset.view === view);
  if (view === "config") loadConfig();
  if (view === "store") loadStore();
  if (view === "events") pollEvents();
}

function notice(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
}

async function signIn(candidate) {
  $("signin-error").textContent = "";
  try {
    await api("GET", "/api/v1/system", { tokenOverride: candidate });
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? "Wrong token: " + e.message : e.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("token").value = "";
  $("nav").hidden = false;
  notice("");
  show("dashboard");
  tick();
  timers.push(setInterval(tick, POLL_MS));
  timers.push(setInterval(pollEvents, 3 * POLL_MS));
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const t of timers) clearInterval(t);
  timers = [];
  closeConsole();
  $("nav").hidden = true;
  $("host-name").textContent = "";
  show("signin");
  notice(message);
}

// ---- Dashboard ----------------------------------------------------------------------

const graphs = {
  cpu: new Graph($("graph-cpu"), $("legend-cpu"), { fixedMax: 100, unit: "%" }),
  mem: new Graph($("graph-mem"), $("legend-mem"), { unit: " MiB" }),
  exits: new Graph($("graph-exits"), $("legend-exits"), { unit: "/s" }),
  nic: new Graph($("graph-nic"), $("legend-nic"), { unit: " KiB/s" }),
};
let previous = { exits: new Map(), metrics: null, t: 0 };
let metricsAvailable = true;

function fact(label, value) {
  const div = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = label;
  dd.textContent = value;
  div.append(dt, dd);
  return div;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = Math.floor(seconds % 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + s + "s";
}

const mib = (bytes) => bytes / (1024 * 1024);

// One poll: system facts, the VM list, per-VM exits and /metrics, then the graphs.
async function tick() {
  if (!token()) return;
  const now = Date.now();
  try {
    const sys = (await api("GET", "/api/v1/system")).body;
    $("host-name").textContent = "· " + sys.hostname;
    const net = sys.network || {};
    $("system").replaceChildren(
      fact("Hostname", sys.hostname),
      fact("Version", sys.version),
      fact("Uptime", duration(sys.uptime_ms / 1000)),
      fact("Virtualization", sys.virtualization),
      fact("CPUs", String(sys.cpus)),
      fact("Memory", `${formatNumber(mib(sys.memory.total_bytes - sys.memory.free_bytes))} of ${formatNumber(mib(sys.memory.total_bytes))} MiB in use`),
      fact("Network address", (net.address || "none") + (net.dhcp ? " (DHCP)" : "")),
      fact("MAC", net.mac || "-"),
    );
    graphs.mem.add("in use", now, mib(sys.memory.total_bytes - sys.memory.free_bytes));
    graphs.mem.add("VMs", now, mib(sys.memory.by_use ? sys.memory.by_use.vms_bytes : 0));
    const vms = (await api("GET", "/api/v1/vms")).body.vms;
    renderVms(vms);
    await sampleExits(vms, now);
    await sampleMetrics(now);
  } catch (e) {
    if (token()) notice(e.message);
    return;
  }
  notice("");
  previous.t = now;
  for (const g of Object.values(graphs)) g.draw(now);
}

async function sampleExits(vms, now) {
  const seen = new Set();
  for (const vm of vms) {
    if (!["running", "idle", "paused", "stopping"].includes(vm.state)) continue;
    const detail = (await api("GET", vmPath(vm.configured ? vm.name : String(vm.number)))).body;
    const total = Object.values(detail.exits || {}).reduce((a, b) => a + b, 0);
    const before = previous.exits.get(vm.name);
    if (before && previous.t && total >= before) graphs.exits.add(vm.name, now, (total - before) / ((now - previous.t) / 1000));
    previous.exits.set(vm.name, total);
    seen.add(vm.name);
  }
  for (const name of [...previous.exits.keys()]) if (!seen.has(name)) previous.exits.delete(name);
}

// Prometheus text format: `name{label="v",...} value` lines; answers [{name, labels, value}].
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function sampleMetrics(now) {
  if (!metricsAvailable) return;
  let samples;
  try {
    samples = parseMetrics((await api("GET", "/metrics")).body);
  } catch (e) {
    if (e.status === 404) {
      metricsAvailable = false;
      $("metrics-note").textContent = "This appliance has no /metrics: CPU and NIC graphs stay empty.";
      return;
    }
    throw e;
  }
  const prev = previous.metrics;
  previous.metrics = { samples, t: now };
  if (!prev) return;
  const dt = (now - prev.t) / 1000;
  const find = (list, name, labels) => list.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  // CPU: busy share of each CPU's time since the last sample.
  const cpus = new Set(samples.filter((s) => s.name === "keel_cpu_seconds_total").map((s) => s.labels.cpu));
  for (const cpu of cpus) {
    const d = (mode) => {
      const a = find(samples, "keel_cpu_seconds_total", { cpu, mode });
      const b = find(prev.samples, "keel_cpu_seconds_total", { cpu, mode });
      return a && b ? a.value - b.value : 0;
    };
    const busy = d("busy"), idle = d("idle");
    if (busy + idle > 0) graphs.cpu.add("cpu" + cpu, now, (100 * busy) / (busy + idle));
  }
  // NICs: every keel_nic_*_bytes_total counter as a rate, by NIC and direction.
  for (const s of samples) {
    if (!/^keel_nic_.*bytes_total$/.test(s.name)) continue;
    const before = find(prev.samples, s.name, s.labels);
    if (!before || s.value < before.value) continue;
    const nic = s.labels.nic || s.labels.name || s.labels.device || "nic";
    const dir = s.name.replace(/^keel_nic_/, "").replace(/_?bytes_total$/, "") || "bytes";
    graphs.nic.add(`${nic} ${dir}`, now, (s.value - before.value) / 1024 / dt);
  }
}

// ---- VMs ----------------------------------------------------------------------------

let vmListShown = "";

function button(label, onClick, { enabled = true, danger = false, name } = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.disabled = !enabled;
  if (danger) b.classList.add("danger");
  if (name) b.dataset.action = name;
  b.addEventListener("click", onClick);
  return b;
}

function renderVms(vms) {
  const body = $("vm-table").querySelector("tbody");
  // Redraw only when more than uptimes changed: a redraw replaces the buttons under the
  // operator's pointer.
  const shown = JSON.stringify(vms.map((vm) => ({ ...vm, uptime_s: null })));
  if (shown === vmListShown) {
    vms.forEach((vm, i) => {
      const cell = body.rows[i] && body.rows[i].cells[3];
      if (cell) cell.textContent = duration(vm.uptime_s);
    });
    return;
  }
  vmListShown = shown;
  const rows = vms.map((vm) => {
    const tr = document.createElement("tr");
    tr.dataset.vm = vm.name;
    const cell = (text, cls) => {
      const td = tr.insertCell();
      td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    cell(String(vm.number));
    cell(vm.name);
    cell(vm.state + (vm.stop_reason ? ": " + vm.stop_reason : ""), "state state-" + vm.state);
    cell(duration(vm.uptime_s));
    cell(String(vm.vcpus));
    cell(vm.memory_mib + " MiB");
    cell(vm.source);
    const key = vm.configured ? vm.name : String(vm.number);
    const live = ["running", "idle"].includes(vm.state);
    const down = ["defined", "stopped"].includes(vm.state);
    const actions = tr.insertCell();
    actions.className = "actions";
    actions.append(
      button("Start", () => vmAction(key, "start"), { enabled: down, name: "start" }),
      button("Stop", () => vmAction(key, "stop", {}), { enabled: live || vm.state === "paused", name: "stop" }),
      button("Force off", () => vmAction(key, "stop", { force: true }), { enabled: !down, danger: true, name: "force" }),
      button("Restart", () => vmAction(key, "restart", {}), { enabled: live, name: "restart" }),
      button("Pause", () => vmAction(key, "pause"), { enabled: live, name: "pause" }),
      button("Resume", () => vmAction(key, "resume"), { enabled: vm.state === "paused", name: "resume" }),
      button("Console", () => openConsole(key), { enabled: !down || vm.state === "stopped", name: "console" }),
      button("Edit", () => openForm(vm.name), { enabled: vm.configured, name: "edit" }),
      button("Delete", () => deleteVm(key), { danger: true, name: "delete" }),
    );
    return tr;
  });
  body.replaceChildren(...rows);
}

async function refreshVms() {
  try {
    renderVms((await api("GET", "/api/v1/vms")).body.vms);
  } catch (e) {
    notice(e.message);
  }
}

async function vmAction(key, action, body) {
  try {
    await api("POST", vmPath(key) + "/" + action, { body });
    notice("");
  } catch (e) {
    notice(`${action} ${key}: ${e.message}`);
  }
  refreshVms();
}

async function deleteVm(key) {
  if (!confirm(`Delete VM ${key}? A running VM is stopped first; its definition is removed from the configuration.`)) return;
  try {
    await api("DELETE", vmPath(key));
  } catch (e) {
    notice(`delete ${key}: ${e.message}`);
  }
  refreshVms();
}

// ---- The VM form, built from the API's schema of a VM definition ---------------------

let vmSchema = null;
let storeFiles = [];
let editing = null; // { name, index, etag } when editing a configured VM

async function schema() {
  if (vmSchema) return vmSchema;
  const doc = (await api("GET", "/api/v1/openapi.json")).body;
  const all = doc.components.schemas;
  vmSchema = { root: all.ConfigVm, all };
  return vmSchema;
}

// The JSON type a property takes: "integer", "number", "boolean", "string", or "json" for
// arrays, objects and references (edited as JSON text).
function kindOf(prop, all) {
  if (!prop) return "json";
  if (prop.$ref) {
    const target = all[prop.$ref.split("/").pop()];
    if (target && target.enum) return "enum";
    return "json";
  }
  if (prop.enum) return "enum";
  let t = prop.type;
  if (Array.isArray(t)) t = t.find((x) => x !== "null");
  if (!t && prop.anyOf) {
    const inner = prop.anyOf.find((x) => x.type !== "null");
    return kindOf(inner, all);
  }
  return ["integer", "number", "boolean", "string"].includes(t) ? t : "json";
}

function enumValues(prop, all) {
  if (prop.enum) return prop.enum;
  if (prop.$ref) return all[prop.$ref.split("/").pop()].enum || [];
  return [];
}

async function openForm(name) {
  let s;
  try {
    s = await schema();
    storeFiles = (await api("GET", "/api/v1/store")).body.files.map((f) => f.name);
  } catch (e) {
    if (!s) return notice("the VM form needs the API description: " + e.message);
    storeFiles = [];
  }
  let values = {};
  editing = null;
  if (name) {
    const r = await api("GET", "/api/v1/config");
    const index = r.body.vms.findIndex((v) => v.name === name);
    if (index < 0) return notice(`VM ${name} is not in the configuration`);
    values = r.body.vms[index];
    editing = { name, index, etag: r.etag };
  }
  $("vm-form-title").textContent = name ? `Edit VM ${name}` : "New VM";
  $("vm-save").textContent = name ? "Save" : "Create";
  $("vm-start-after-label").hidden = !!name;
  $("vm-form-error").textContent = "";
  const required = new Set(s.root.required || []);
  const list = document.createElement("datalist");
  list.id = "store-files";
  for (const f of storeFiles) {
    const o = document.createElement("option");
    o.value = f;
    list.append(o);
  }
  const fields = Object.entries(s.root.properties).map(([key, prop]) => fieldFor(key, prop, values[key], required.has(key), s.all));
  $("vm-fields").replaceChildren(list, ...fields);
  $("vm-form").hidden = false;
  $("vm-form").scrollIntoView({ block: "nearest" });
}

function fieldFor(key, prop, value, required, all) {
  const kind = kindOf(prop, all);
  const div = document.createElement("div");
  div.className = "field";
  div.dataset.field = key;
  const label = document.createElement("label");
  label.textContent = key + (required ? " *" : "");
  label.htmlFor = "vm-field-" + key;
  let input;
  if (kind === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = value ?? prop.default ?? false;
  } else if (kind === "enum") {
    input = document.createElement("select");
    for (const v of ["", ...enumValues(prop, all)]) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = v === "" ? "(default)" : v;
      input.append(o);
    }
    input.value = value ?? "";
  } else if (kind === "json") {
    input = document.createElement("textarea");
    input.rows = 2;
    input.value = value === undefined ? "" : JSON.stringify(value);
    input.placeholder = "JSON";
  } else {
    input = document.createElement("input");
    input.type = kind === "integer" || kind === "number" ? "number" : "text";
    if (kind === "string" && ["kernel", "initrd", "firmware"].includes(key)) input.setAttribute("list", "store-files");
    input.value = value ?? "";
    if (value === undefined && prop.default !== undefined && typeof prop.default !== "object") input.placeholder = String(prop.default);
  }
  input.id = "vm-field-" + key;
  input.name = key;
  input.dataset.kind = kind;
  const hint = document.createElement("span");
  hint.className = "hint";
  hint.textContent = (prop.description || "").split("\n")[0];
  const error = document.createElement("div");
  error.className = "field-error";
  error.id = "vm-error-" + key;
  div.append(label, input, hint, error);
  return div;
}

// The form's values as a VM definition; empty optional fields are left out.
function formValues() {
  const vm = {};
  const problems = [];
  for (const input of $("vm-fields").querySelectorAll("[data-kind]")) {
    const key = input.name, kind = input.dataset.kind;
    if (kind === "boolean") {
      vm[key] = input.checked;
      continue;
    }
    const text = input.value.trim();
    if (text === "") continue;
    if (kind === "integer" || kind === "number") {
      const n = Number(text);
      if (!Number.isFinite(n)) problems.push({ path: key, message: "not a number" });
      else vm[key] = n;
    } else if (kind === "json") {
      try { vm[key] = JSON.parse(text); } catch (e) { problems.push({ path: key, message: "not JSON: " + e.message }); }
    } else {
      vm[key] = text;
    }
  }
  return { vm, problems };
}

// Shows each problem at its field: the first segment of its path, relative to the VM
// (`memory_mib`, `disks[0].file` → disks; `vms[2].memory_mib` → memory_mib).
function showProblems(problems, fallback) {
  for (const f of $("vm-fields").querySelectorAll(".field")) {
    f.classList.remove("invalid");
    f.querySelector(".field-error").textContent = "";
  }
  const general = [];
  for (const p of problems) {
    const path = (p.path || "").replace(/^vms\[\d+\]\.?/, "");
    const key = path.split(/[.[]/)[0];
    const field = key && $("vm-fields").querySelector(`.field[data-field="${CSS.escape(key)}"]`);
    if (field) {
      field.classList.add("invalid");
      const e = field.querySelector(".field-error");
      e.textContent = (e.textContent ? e.textContent + "; " : "") + (path !== key ? path + ": " : "") + p.message;
    } else {
      general.push((p.path ? p.path + ": " : "") + p.message);
    }
  }
  $("vm-form-error").textContent = general.length ? general.join("\n") : fallback || "";
}

async function submitForm(event) {
  event.preventDefault();
  const { vm, problems } = formValues();
  if (problems.length) return showProblems(problems, "fix the fields marked above");
  try {
    if (editing) {
      const r = await api("GET", "/api/v1/config");
      if (editing.etag && r.etag !== editing.etag) {
        throw new ApiError(412, "the configuration changed since this form was opened: close it and edit again", null);
      }
      const config = r.body;
      config.vms[editing.index] = vm;
      await api("PUT", "/api/v1/config", { body: config, headers: { "If-Match": r.etag } });
    } else {
      await api("POST", "/api/v1/vms", { body: vm });
      if ($("vm-start-after").checked && !vm.autostart) await api("POST", vmPath(vm.name) + "/start");
    }
  } catch (e) {
    const errors = e.body && Array.isArray(e.body.errors) ? e.body.errors : [];
    showProblems(errors, e.message);
    if (!errors.length) $("vm-form-error").textContent = e.message;
    refreshVms();
    return;
  }
  $("vm-form").hidden = true;
  refreshVms();
}

// ---- Console: xterm.js over the WebSocket --------------------------------------------

let session = null; // { term, fit, socket, observer, poll }

function openConsole(key) {
  closeConsole();
  $("console-panel").hidden = false;
  $("console-vm").textContent = key;
  const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open($("terminal"));
  fit.fit();
  // Refit when the panel changes size (window resize, phone rotation); the guest's serial
  // line has no size, so nothing is sent to it.
  const observer = new ResizeObserver(() => {
    try { fit.fit(); } catch { /* hidden panel: nothing to fit */ }
  });
  observer.observe($("terminal"));
  session = { term, fit, observer, socket: null, poll: null, key };
  const encoder = new TextEncoder();
  term.onData((data) => send(encoder.encode(data)));
  connectSocket(session);
  term.focus();
  $("console-panel").scrollIntoView({ block: "nearest" });
}

function status(text) {
  $("console-status").textContent = text;
}

function send(bytes) {
  if (!session) return;
  if (session.socket && session.socket.readyState === WebSocket.OPEN) session.socket.send(bytes);
  else if (session.poll) session.poll.queue.push(bytes);
}

function connectSocket(s) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}${vmPath(s.key)}/console/ws`);
  socket.binaryType = "arraybuffer";
  s.socket = socket;
  let opened = false;
  status("connecting…");
  socket.addEventListener("open", () => {
    opened = true;
    // Browsers cannot set headers on a WebSocket: the token is the first message.
    socket.send(JSON.stringify({ token: token() }));
    status("connected (WebSocket)");
  });
  socket.addEventListener("message", (m) => {
    if (session !== s) return;
    s.term.write(typeof m.data === "string" ? m.data : new Uint8Array(m.data));
  });
  socket.addEventListener("close", (e) => {
    if (session !== s) return;
    if (!opened) {
      // No WebSocket console on this appliance (or a proxy refuses upgrades): poll instead.
      startPolling(s);
      return;
    }
    const why = { 1000: "closed", 1008: "refused: token not accepted", 1009: "message too big", 1011: "server error" }[e.code] || "closed";
    status(`${why} (code ${e.code}${e.reason ? ": " + e.reason : ""})`);
  });
}

// The HTTP fallback: GET console?since=N every half second, typed bytes POSTed.
function startPolling(s) {
  status("connected (HTTP polling: WebSocket unavailable)");
  s.socket = null;
  s.poll = { next: 0, queue: [], busy: false, timer: null };
  const decoder = new TextDecoder();
  const step = async () => {
    if (session !== s || s.poll.busy) return;
    s.poll.busy = true;
    try {
      while (s.poll.queue.length) {
        const bytes = s.poll.queue.shift();
        await api("POST", vmPath(s.key) + "/console", { body: decoder.decode(bytes), headers: { "Content-Type": "text/plain" } });
      }
      const chunk = (await api("GET", `${vmPath(s.key)}/console?since=${s.poll.next}`)).body;
      if (chunk.data) s.term.write(chunk.data);
      s.poll.next = chunk.next;
    } catch (e) {
      status("console: " + e.message);
    } finally {
      s.poll.busy = false;
    }
  };
  s.poll.timer = setInterval(step, 500);
  step();
}

function closeConsole() {
  if (!session) return;
  const s = session;
  session = null;
  if (s.socket) s.socket.close(1000, "closed by the operator");
  if (s.poll) clearInterval(s.poll.timer);
  s.observer.disconnect();
  s.term.dispose();
  $("console-panel").hidden = true;
}

// ---- Configuration ------------------------------------------------------------------

let configEtag = null;

async function loadConfig() {
  $("config-error").textContent = "";
  $("config-problems").replaceChildren();
  $("config-ok").textContent = "";
  try {
    const r = await api("GET", "/api/v1/config");
    configEtag = r.etag;
    $("config-etag").textContent = r.etag || "";
    $("config-text").value = JSON.stringify(r.body, null, 2);
  } catch (e) {
    $("config-error").textContent = e.message;
  }
}

async function saveConfig() {
  $("config-error").textContent = "";
  $("config-problems").replaceChildren();
  $("config-ok").textContent = "";
  let doc;
  try {
    doc = JSON.parse($("config-text").value);
  } catch (e) {
    $("config-error").textContent = "not JSON: " + e.message;
    return;
  }
  try {
    const r = await api("PUT", "/api/v1/config", { body: doc, headers: { "If-Match": configEtag || "*" } });
    configEtag = r.etag;
    $("config-etag").textContent = r.etag || "";
    $("config-text").value = JSON.stringify(r.body, null, 2);
    $("config-ok").textContent = "Saved.";
  } catch (e) {
    if (e.status === 412) {
      $("config-error").textContent = "Conflict: someone changed the configuration since you loaded it. " +
        "Reload to see theirs, then reapply your change. (" + e.message + ")";
      $("config-error").dataset.conflict = "true";
      return;
    }
    $("config-error").textContent = e.message;
    const items = (e.body && e.body.errors ? e.body.errors : []).map((p) => {
      const li = document.createElement("li");
      li.textContent = (p.path ? p.path + ": " : "") + p.message;
      return li;
    });
    $("config-problems").replaceChildren(...items);
  }
}

// ---- Store and events ---------------------------------------------------------------

async function loadStore() {
  $("store-error").textContent = "";
  try {
    const files = (await api("GET", "/api/v1/store")).body.files;
    const rows = files.map((f) => {
      const tr = document.createElement("tr");
      tr.insertCell().textContent = f.name;
      tr.insertCell().textContent = formatNumber(f.size / 1024) + " KiB";
      return tr;
    });
    $("store-table").querySelector("tbody").replaceChildren(...rows);
  } catch (e) {
    $("store-error").textContent = e.message;
  }
}

let eventsNext = 0;
let eventsAvailable = true;

async function pollEvents() {
  if (!token() || !eventsAvailable) return;
  try {
    const r = (await api("GET", "/api/v1/events?since=" + eventsNext)).body;
    eventsNext = r.next;
    const body = $("event-table").querySelector("tbody");
    for (const ev of r.events) {
      const tr = document.createElement("tr");
      tr.insertCell().textContent = String(ev.seq);
      tr.insertCell().textContent = duration(ev.time_ms / 1000) + " after boot";
      tr.insertCell().textContent = ev.kind;
      tr.insertCell().textContent = ev.vm ?? "";
      const m = tr.insertCell();
      m.textContent = ev.message;
      m.className = "message";
      body.prepend(tr);
    }
    $("events-error").textContent = "";
  } catch (e) {
    if (e.status === 404) {
      eventsAvailable = false;
      $("events-error").textContent = "This appliance has no event log (GET /api/v1/events).";
    } else {
      $("events-error").textContent = e.message;
    }
  }
}

// ---- Wiring -------------------------------------------------------------------------

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("token").value);
});
$("sign-out").addEventListener("click", () => signOut());
for (const b of document.querySelectorAll("#nav button[data-view]")) b.addEventListener("click", () => show(b.dataset.view));
$("vm-new").addEventListener("click", () => openForm(null));
$("vm-cancel").addEventListener("click", () => ($("vm-form").hidden = true));
$("vm-form").addEventListener("submit", submitForm);
$("console-close").addEventListener("click", closeConsole);
$("config-reload").addEventListener("click", loadConfig);
$("config-save").addEventListener("click", saveConfig);
window.addEventListener("resize", () => {
  for (const g of Object.values(graphs)) g.draw(Date.now());
});

if (token()) signIn(token());
else show("signin");
document.body.dataset.readyMs = String(performance.now());
document.body.dataset.ready = "true";

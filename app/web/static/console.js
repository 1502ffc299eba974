// The operators' console: a live picture of the whole queue, pushed every two seconds
// over /api/v1/admin/stream, and buttons that call the admin API.
// No framework and no build step: this file is served as it is. Data from the server is
// put in the page as text only; the charts are SVG the server renders (app/web/charts.py).
"use strict";

const RETRY_MAX_MS = 15000;
const requiresKeys = document.body.dataset.requiresKeys === "true";
// The server: `api` (api.js, loaded first) reaches it, with the page's key.

// ---------------------------------------------------------------------------------------
// Small helpers: elements from text, durations, sizes.
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return `${n.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

const shortId = (id) => el("code", { title: id }, id.slice(0, 8));

function notice(text, kind = "info") {
  const node = $("notice");
  node.textContent = text;
  node.dataset.kind = kind;
}

function setConnection(state, text) {
  const node = $("connection");
  node.dataset.state = state;
  node.textContent = text;
}

function fillTable(id, rows, columns, emptyText) {
  const body = $(id).querySelector("tbody");
  const fresh = rows.length
    ? rows.map((row) => el("tr", { dataset: { id: row.id ?? row.machine ?? row.owner ?? "" } },
        ...columns(row).map((cell) => (cell instanceof HTMLElement && cell.tagName === "TD" ? cell : el("td", {}, cell)))))
    : [el("tr", {}, el("td", { className: "empty-row", colSpan: $(id).querySelectorAll("th").length }, emptyText))];
  // Keep a control the operator is using (an open priority menu) from being replaced.
  if (body.contains(document.activeElement) && document.activeElement.tagName === "SELECT") return;
  body.replaceChildren(...fresh);
}

// ---------------------------------------------------------------------------------------
// Actions: each is one admin API call; the next push shows its effect.
async function act(label, method, path, body) {
  const answer = await api.request(method, path, body);
  if (answer.ok) notice(`${label}: done.`);
  else notice(`${label}: ${answer.data.error ? answer.data.error.message : `HTTP ${answer.status}`}`, "error");
  return answer;
}

function button(text, onClick, className = "secondary") {
  const node = el("button", { type: "button", className }, text);
  node.addEventListener("click", async () => {
    node.disabled = true;
    try { await onClick(); } finally { node.disabled = false; }
  });
  return node;
}

const cancelButton = (job) =>
  button("Cancel", () => act(`Cancel ${job.id.slice(0, 8)}`, "POST", `/admin/jobs/${job.id}/cancel`));
const retryButton = (job) =>
  button("Retry", () => act(`Retry ${job.id.slice(0, 8)}`, "POST", `/admin/jobs/${job.id}/retry`));

function priorityMenu(job) {
  const menu = el("select", { "aria-label": `Priority of job ${job.id.slice(0, 8)}` },
    ...["high", "normal", "low"].map((p) => el("option", { value: p, selected: p === job.priority }, p)));
  menu.addEventListener("change", async () => {
    await act(`Priority of ${job.id.slice(0, 8)} → ${menu.value}`, "POST", `/admin/jobs/${job.id}/priority`, { priority: menu.value });
    menu.blur();
  });
  return menu;
}

// ---------------------------------------------------------------------------------------
// Rendering one snapshot.
let current = null;

function render(snapshot) {
  current = snapshot;
  $("board").hidden = false;
  renderQueue(snapshot);
  for (const name of ["depth", "latency", "throughput"]) $(`chart-${name}`).innerHTML = snapshot.charts[name];
  renderMachines(snapshot.processes);
  fillTable("running", snapshot.running, (job) => [
    shortId(job.id), job.owner, job.generator, job.priority,
    el("td", {}, el("span", { className: "mini-bar" }, el("span", { style: `width:${job.percent}%` })), `${Math.round(job.percent)}%${job.stage ? ` · ${job.stage}` : ""}`),
    duration(job.running_seconds), job.worker || "–", el("td", {}, cancelButton(job)),
  ], "Nothing is running.");
  fillTable("next", snapshot.next, (job) => [
    shortId(job.id), job.owner, job.generator, el("td", {}, priorityMenu(job)), duration(job.age_seconds),
    el("td", {}, cancelButton(job)),
  ], "The queue is empty.");
  fillTable("failures", snapshot.failures, (job) => [
    shortId(job.id), job.owner, el("td", { className: "error-text" }, job.error || ""), job.attempts,
    `${duration(job.finished_seconds_ago)} ago`, el("td", {}, retryButton(job)),
  ], "No failures.");
  fillTable("owners", snapshot.owners, (row) => [row.owner, row.queued], "Nobody is waiting.");
}

function renderQueue(snapshot) {
  const queue = snapshot.queue;
  $("queued").textContent = `${queue.queued} / ${queue.capacity}`;
  $("queued-split").textContent = `high ${queue.depth.high} · normal ${queue.depth.normal} · low ${queue.depth.low}`;
  $("running-count").textContent = snapshot.running.length;
  const workers = snapshot.processes.reduce((sum, p) => sum + p.workers, 0);
  const busy = snapshot.processes.reduce((sum, p) => sum + p.busy, 0);
  $("workers-split").textContent = `${busy} of ${workers} workers busy`;
  const oldest = queue.oldest.reduce((a, b) => (a && a.age_seconds >= b.age_seconds ? a : b), null);
  $("oldest").textContent = oldest ? duration(oldest.age_seconds) : "–";
  $("oldest").parentElement.classList.toggle("late", Boolean(oldest && oldest.age_seconds > oldest.aging_bound_seconds + queue.aging_seconds));
  $("oldest-detail").textContent = oldest
    ? `${oldest.priority}; aging bound ${duration(oldest.aging_bound_seconds)}`
    : "nothing queued";
  const hooks = snapshot.webhooks;
  $("webhooks").textContent = hooks.pending;
  $("webhooks-detail").textContent = `pending · ${hooks.delivered} delivered · ${hooks.failed} failed`;
  const results = snapshot.results;
  $("results").textContent = results.stored;
  $("results-detail").textContent = `${bytes(results.bytes)}${results.ttl_hours ? ` · kept ${results.ttl_hours} h` : " · kept forever"}`;
  const pause = $("pause");
  pause.hidden = false;
  pause.textContent = queue.paused ? "Resume queue" : "Pause queue";
  pause.dataset.paused = queue.paused;
  const banner = $("paused-banner");
  banner.hidden = !queue.paused;
  banner.textContent = queue.paused
    ? `The queue is paused (by ${queue.paused_by || "an operator"}): submissions get 503 and no job starts; running jobs finish.`
    : "";
}

function renderMachines(processes) {
  fillTable("machines", processes, (p) => {
    const state = p.silent ? "silent" : p.draining ? "draining" : "live";
    const drain = p.draining
      ? button("Undrain", () => act(`Undrain ${p.machine}`, "POST", `/admin/machines/${encodeURIComponent(p.machine)}/undrain`))
      : button("Drain", () => act(`Drain ${p.machine}`, "POST", `/admin/machines/${encodeURIComponent(p.machine)}/drain`));
    return [
      el("td", {}, p.machine, " ", el("span", { className: `state ${state}` }, state)),
      `${p.name}${p.this ? " (this one)" : ""}`,
      `${p.busy} / ${p.workers} busy`,
      `${duration(p.heartbeat_age_seconds)} ago`,
      p.jobs.length ? el("td", { className: "job-ids" }, ...p.jobs.map((id) => shortId(id))) : "–",
      el("td", {}, drain),
    ];
  }, "No service reports.");
}

$("pause").addEventListener("click", async (event) => {
  const node = event.currentTarget;
  const paused = node.dataset.paused === "true";
  node.disabled = true;
  try {
    const answer = await act(paused ? "Resume" : "Pause", "POST", `/admin/queue/${paused ? "resume" : "pause"}`);
    if (answer.ok && current) { current.queue = { ...current.queue, ...answer.data }; renderQueue(current); }
  } finally { node.disabled = false; }
});

// ---------------------------------------------------------------------------------------
// Access, then the stream (reconnecting with backoff).
let failures = 0;
let streamTrouble = false; // the stream said the database is unreachable

async function checkAccess() {
  const answer = await api.request("GET", "/admin/queue");
  if (answer.status === 401) return showKeyForm(api.key ? "That key is not valid." : "");
  if (answer.status === 403) return refuse();
  $("key-form").hidden = true;
  $("refused").hidden = true;
  connect();
}

function showKeyForm(message) {
  $("key-form").hidden = false;
  $("key-message").textContent = message;
  $("board").hidden = true;
  setConnection("locked", "Key needed");
}

function refuse() {
  $("board").hidden = true;
  $("key-form").hidden = false;
  $("refused").hidden = false;
  $("refused").textContent = "This key is not an operator's key: the console needs an admin key.";
  setConnection("locked", "Refused");
}

async function connect() {
  let socket;
  try {
    socket = new WebSocket(await api.socketUrl("/admin/stream"));
  } catch (error) {
    if (error.status === 401) return showKeyForm("That key is no longer valid.");
    return retry();
  }
  socket.addEventListener("open", () => { failures = 0; setConnection("live", "Live"); });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "console") {
      render(message);
      if (streamTrouble) { streamTrouble = false; notice(""); }
    }
    if (message.type === "error") { streamTrouble = true; notice(message.error.message, "error"); }
    if (message.type === "server_restarting") setConnection("restarting", "Server restarting…");
  });
  socket.addEventListener("close", () => retry());
}

function retry() {
  failures += 1;
  setConnection("reconnecting", "Reconnecting…");
  setTimeout(checkAccess, Math.min(RETRY_MAX_MS, 500 * 2 ** failures));
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.useKey(new FormData(event.currentTarget).get("key").trim());
  event.currentTarget.reset();
  checkAccess();
});

if (requiresKeys && !api.key) showKeyForm("");
else checkAccess();

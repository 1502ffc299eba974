// The job page: submit through the API and follow every unfinished job live over one
// WebSocket, which reconnects by itself and resumes where it left off (`since`).
// No framework and no build step: this file is served as it is.
"use strict";

// ---------------------------------------------------------------------------------------
// The server. Every HTTP request and the socket are made here, and only here: this is
// where the API key goes (a Bearer header; for the socket, whose handshake a browser
// cannot give headers, a one-minute token from POST /api/v1/tokens).
const KEY_STORAGE = "generation-service-api-key";

const api = {
  base: "/api/v1",
  key: localStorage.getItem(KEY_STORAGE) || "",
  onUnauthorized: () => {},

  useKey(key) {
    this.key = key;
    localStorage.setItem(KEY_STORAGE, key);
  },
  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  },
  async request(method, path, body) {
    const options = { method, headers: this.headers({ Accept: "application/json" }) };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, options);
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) this.onUnauthorized(data.error);
    return { ok: response.ok, status: response.status, headers: response.headers, data };
  },
  submit(body) { return this.request("POST", "/jobs", body); },
  recent(limit) { return this.request("GET", `/jobs?limit=${limit}`); },
  cancel(id) { return this.request("POST", `/jobs/${encodeURIComponent(id)}/cancel`); },
  resultUrl(job) { return job.result.url; },
  async download(job) {
    // With a key the result needs the header too, so fetch it rather than follow a link.
    const response = await fetch(this.resultUrl(job), { headers: this.headers() });
    if (!response.ok) throw new Error(`download failed: ${response.status}`);
    const link = el("a", { href: URL.createObjectURL(await response.blob()) });
    link.download = `${job.id}.zip`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  },
  async eventsSocket() {
    let query = "";
    if (this.key) {
      const token = await this.request("POST", "/tokens");
      if (!token.ok) throw Object.assign(new Error("no socket token"), { status: token.status });
      query = `?token=${encodeURIComponent(token.data.token)}`;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return new WebSocket(`${scheme}//${location.host}${this.base}/events${query}`);
  },
};

// ---------------------------------------------------------------------------------------
// The live connection: one socket for every job on the page. It remembers the last `seq`
// seen of each job it follows and, after any disconnect, subscribes again with `since`,
// so the server replays what was missed (or sends a fresh snapshot).
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const RETRY_MAX_MS = 15000;

class LiveConnection {
  constructor(onMessage, onState) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.lastSeq = new Map(); // job id -> last seq applied (null: none yet)
    this.socket = null;
    this.failures = 0;
    this.timer = null;
    window.addEventListener("online", () => this.reconnectNow());
  }

  follow(id) {
    if (this.lastSeq.has(id)) return;
    this.lastSeq.set(id, null);
    this.subscribe(id);
  }

  forget(id) { this.lastSeq.delete(id); }

  /** Whether a message about `id` with `seq` is new; snapshots always are. */
  accept(id, seq, isSnapshot) {
    if (!this.lastSeq.has(id)) return false;
    const last = this.lastSeq.get(id);
    if (!isSnapshot && last !== null && seq <= last) return false;
    this.lastSeq.set(id, seq);
    return true;
  }

  async connect() {
    clearTimeout(this.timer);
    this.onState("connecting");
    let socket;
    try {
      socket = await api.eventsSocket();
    } catch (error) {
      if (error.status === 401) return this.onState("locked"); // until a key is given
      return this.retryAfter(this.delayFor(1006));
    }
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
      this.onState("live");
      for (const id of this.lastSeq.keys()) this.subscribe(id);
    };
    socket.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.retryAfter(this.delayFor(event.code));
    };
  }

  subscribe(id) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    const since = this.lastSeq.get(id);
    const message = { type: "subscribe", job_id: id };
    if (since) message.since = since;
    this.socket.send(JSON.stringify(message));
  }

  delayFor(code) {
    if (code === 1001) return 500 + Math.random() * 1500; // server restarting: soon
    this.failures += 1;
    const base = code === 1013 ? 5000 : 1000 * 2 ** (this.failures - 1);
    return Math.min(RETRY_MAX_MS, base) * (0.7 + Math.random() * 0.6);
  }

  retryAfter(delay) {
    this.onState("reconnecting", Math.ceil(delay / 1000));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (!this.socket) this.connect();
  }
}

// ---------------------------------------------------------------------------------------
// The page.
const jobs = new Map(); // id -> job, as the API shapes it, kept current by events
const views = new Map(); // id -> JobView
const list = document.getElementById("jobs");
const emptyNote = document.getElementById("empty");
const form = document.getElementById("submit-form");
const formMessage = document.getElementById("form-message");
const submitButton = document.getElementById("submit-button");
const connection = document.getElementById("connection");
const keyForm = document.getElementById("key-form");
const keyMessage = document.getElementById("key-message");
const live = new LiveConnection(handleMessage, showConnection);

const EVENT_EFFECTS = {
  queued(job, m) {
    job.status = "queued";
    if (m.position !== undefined) job.position = m.position;
    if (m.eta_seconds !== undefined) job.eta_seconds = m.eta_seconds;
  },
  started(job) {
    job.status = "running";
    job.position = null;
    job.progress = { percent: 0, stage: "starting", message: "" };
  },
  progress(job, m) {
    job.status = "running";
    job.progress = { percent: m.percent, stage: m.stage, message: m.message };
  },
  succeeded(job, m) {
    job.status = "succeeded";
    job.result = m.result;
    job.progress = { ...job.progress, percent: 100 };
  },
  failed(job, m) {
    job.status = "failed";
    job.error = m.error;
  },
  cancelled(job) { job.status = "cancelled"; },
};

function handleMessage(message) {
  if (message.type === "server_restarting") return showConnection("restarting");
  if (message.type === "error") return handleSocketError(message);
  const id = message.job_id;
  const isSnapshot = message.type === "snapshot";
  if (!jobs.has(id) || !live.accept(id, message.seq, isSnapshot)) return;
  if (isSnapshot) {
    jobs.set(id, message.job);
  } else if (EVENT_EFFECTS[message.type]) {
    EVENT_EFFECTS[message.type](jobs.get(id), message);
  }
  show(jobs.get(id));
}

function handleSocketError(message) {
  const job = message.job_id && jobs.get(message.job_id);
  if (job && message.error.code === "not_found") {
    live.forget(job.id);
    job.status = "gone";
    show(job);
  }
}

function show(job) {
  jobs.set(job.id, job);
  let view = views.get(job.id);
  if (!view) {
    view = new JobView(job.id);
    views.set(job.id, view);
    list.prepend(view.root);
    emptyNote.hidden = true;
  }
  view.update(job);
  if (TERMINAL.has(job.status) || job.status === "gone") live.forget(job.id);
  else live.follow(job.id);
}

function showConnection(state, seconds) {
  const labels = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: `Offline · retrying in ${seconds} s`,
    restarting: "Server restarting…",
    locked: "Waiting for a valid key",
  };
  connection.dataset.state = state;
  connection.textContent = labels[state];
}

// One card per job. Its elements are built once and updated in place, so a button is
// never replaced under a pointer by a progress update.
class JobView {
  constructor(id) {
    this.root = el("li", { className: "job card", id: `job-${id}` });
    this.prompt = el("p", { className: "prompt" });
    this.badge = el("span", { className: "badge" });
    this.meta = el("p", { className: "meta" });
    this.fill = el("span", { className: "fill" });
    this.bar = el("div", { className: "bar" }, [this.fill]);
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.detail = el("p", { className: "detail" });
    this.cancel = el("button", { type: "button", className: "secondary", textContent: "Cancel" });
    this.cancel.addEventListener("click", () => cancelJob(id));
    this.download = el("a", { className: "button download", textContent: "Download ZIP" });
    this.download.setAttribute("download", "");
    this.download.addEventListener("click", (event) => {
      if (!api.key) return; // without keys, the plain link downloads
      event.preventDefault();
      api.download(jobs.get(id)).catch(() => showConnection("reconnecting", 1));
    });
    const head = el("div", { className: "job-head" }, [this.prompt, this.badge]);
    const actions = el("div", { className: "actions" }, [this.cancel, this.download]);
    const foot = el("div", { className: "job-foot" }, [this.detail, actions]);
    this.root.append(head, this.meta, this.bar, foot);
  }

  update(job) {
    const percent = Math.round(job.progress?.percent ?? 0);
    this.root.dataset.status = job.status;
    this.prompt.textContent = job.params?.prompt || job.generator;
    this.badge.textContent = job.status === "gone" ? "unavailable" : job.status;
    this.meta.textContent = describeParams(job);
    this.fill.style.width = `${job.status === "succeeded" ? 100 : percent}%`;
    this.bar.setAttribute("aria-valuenow", String(percent));
    this.bar.setAttribute("aria-label", `${percent} percent`);
    this.detail.textContent = describeState(job);
    this.detail.classList.toggle("error", job.status === "failed");
    const active = job.status === "queued" || job.status === "running";
    this.cancel.hidden = !active || job.cancel_requested;
    this.download.hidden = job.status !== "succeeded";
    if (job.status === "succeeded") this.download.href = api.resultUrl(job);
  }
}

function describeParams(job) {
  const p = job.params || {};
  const parts = [];
  if (p.count) parts.push(`${p.count} image${p.count === 1 ? "" : "s"}`);
  if (p.width && p.height) parts.push(`${p.width}×${p.height}`);
  if (p.seed !== undefined && p.seed !== null) parts.push(`seed ${p.seed}`);
  parts.push(`${job.priority} priority`);
  return parts.join(" · ");
}

function describeState(job) {
  switch (job.status) {
    case "queued": {
      const ahead = job.position ?? 0;
      const place = ahead === 0 ? "Next in line" : `${ahead} job${ahead === 1 ? "" : "s"} ahead`;
      return job.eta_seconds == null ? place : `${place} · done in ${duration(job.eta_seconds)}`;
    }
    case "running": {
      if (job.cancel_requested) return "Cancelling…";
      const what = job.progress.message || job.progress.stage || "Starting";
      return `${capitalize(what)} · ${Math.floor(job.progress.percent)} %`;
    }
    case "succeeded":
      return `${job.result.files.length} files · ${size(job.result.bytes)}`;
    case "failed":
      return `Failed: ${job.error || "unknown error"}`;
    case "cancelled":
      return "Cancelled";
    default:
      return "This job is no longer available.";
  }
}

// ---------------------------------------------------------------------------------------
// Actions.
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFormErrors();
  const body = submission(new FormData(form));
  if (!body.params.prompt) return showFormError("Describe what to generate first.", ["prompt"]);
  submitButton.disabled = true;
  try {
    const response = await api.submit(body);
    if (response.ok) show(response.data);
    else showFormError(...explainRejection(response));
  } catch {
    showFormError("Could not reach the server. Check your connection and try again.");
  } finally {
    submitButton.disabled = false;
  }
});

function submission(data) {
  const [width, height] = data.get("size").split("x").map(Number);
  const params = { prompt: data.get("prompt").trim(), count: Number(data.get("count")), width, height };
  if (data.get("seed") !== "") params.seed = Number(data.get("seed"));
  return { generator: "images", params, priority: data.get("priority") };
}

function explainRejection({ status, headers, data }) {
  const error = data.error || { code: "error", message: `The server answered ${status}.` };
  const retry = headers.get("Retry-After");
  if (error.code === "queue_full") {
    return [`The queue is full right now. Try again in about ${duration(Number(retry) || 10)}.`];
  }
  if (error.code === "unavailable") return ["The service is restarting. Try again in a few seconds."];
  const fields = Object.entries(error.fields || {});
  if (fields.length) {
    const names = fields.map(([name]) => name.replace(/^params\./, ""));
    return [fields.map(([name, text]) => `${name.replace(/^params\./, "")}: ${text}`).join("; "), names];
  }
  return [error.message];
}

function showFormError(text, fieldNames = []) {
  formMessage.textContent = text;
  for (const name of fieldNames) {
    const input = form.elements[name === "width" || name === "height" ? "size" : name];
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

function clearFormErrors() {
  formMessage.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

async function cancelJob(id) {
  try {
    const response = await api.cancel(id);
    if (response.ok) show(Object.assign(jobs.get(id) || {}, response.data));
  } catch {
    showConnection("reconnecting", 1);
  }
}

async function loadRecent() {
  try {
    const response = await api.recent(20);
    if (!response.ok) return;
    for (const job of response.data.jobs.reverse()) show(job);
  } catch {
    emptyNote.textContent = "Could not load your jobs; they will appear once the server answers.";
  }
}

// ---------------------------------------------------------------------------------------
// Small helpers.
function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

function size(bytes) {
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function capitalize(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

// ---------------------------------------------------------------------------------------
// The API key, where the server asks for one.
function askForKey(message) {
  keyForm.hidden = false;
  keyMessage.textContent = message || "";
  keyForm.elements.key.focus();
}

api.onUnauthorized = (error) =>
  askForKey(api.key ? `That key was refused: ${error?.message || "unauthorized"}` : "");

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyForm.elements.key.value.trim();
  if (!key) return askForKey("Paste your API key first.");
  api.useKey(key);
  keyForm.hidden = true;
  start();
});

function start() {
  loadRecent().finally(() => live.reconnectNow());
}

if (document.body.dataset.requiresKeys === "true" && !api.key) askForKey();
else start();

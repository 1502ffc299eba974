// The job page: submit through the API and follow every unfinished job live over one
// WebSocket, which reconnects by itself and resumes where it left off (`since`).
// No framework and no build step: this file is served as it is.
"use strict";

// ---------------------------------------------------------------------------------------
// The server: `api` (api.js, loaded first) with the calls this page makes.
Object.assign(api, {
  submit(body) { return this.request("POST", "/jobs", body); },
  me() { return this.request("GET", "/me"); },
  recent(limit, cursor) {
    return this.request("GET", `/jobs?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  },
  files(id) { return this.request("GET", `/jobs/${encodeURIComponent(id)}/files`); },
  cancel(id) { return this.request("POST", `/jobs/${encodeURIComponent(id)}/cancel`); },
  // Result and file urls are signed (they open without the key), so plain links work.
  resultUrl(job) { return job.result.url; },
  async eventsSocket() { return new WebSocket(await this.socketUrl("/events")); },
});

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
const moreButton = document.getElementById("more");
const statusRegion = document.getElementById("announcer");
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
  output(job, m) {
    addFile(job, { name: m.name, url: m.url, bytes: m.bytes, content_type: m.content_type });
    job.preview = null; // that was the work the preview showed: wait for the next one
  },
  preview(job, m) { job.preview = m.url; },
  succeeded(job, m) {
    job.status = "succeeded";
    job.result = m.result;
    job.preview = null;
    job.progress = { ...job.progress, percent: 100 };
  },
  failed(job, m) {
    job.status = "failed";
    job.error = m.error;
    job.preview = null;
  },
  cancelled(job) {
    job.status = "cancelled";
    job.preview = null;
  },
};

function addFile(job, file) {
  job.files = job.files || [];
  if (!job.files.some((known) => known.name === file.name)) job.files.push(file);
}

/** The files a job has so far, for one seen first by a snapshot or the list. */
async function loadFiles(job) {
  if (job.status === "queued" || job.filesLoaded) return;
  job.filesLoaded = true;
  const response = await api.files(job.id).catch(() => null);
  if (!response?.ok) return;
  for (const file of response.data.files) addFile(job, file);
  show(job);
}

function handleMessage(message) {
  if (message.type === "server_restarting") return showConnection("restarting");
  if (message.type === "error") return handleSocketError(message);
  const id = message.job_id;
  const isSnapshot = message.type === "snapshot";
  if (!jobs.has(id) || !live.accept(id, message.seq, isSnapshot)) return;
  if (isSnapshot) {
    const known = jobs.get(id);
    jobs.set(id, Object.assign(message.job, { files: known.files, filesLoaded: false }));
    loadFiles(message.job);
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

function show(job, { older = false } = {}) {
  const known = jobs.get(job.id);
  if (known && known !== job) Object.assign(job, { files: job.files || known.files, filesLoaded: known.filesLoaded });
  jobs.set(job.id, job);
  let view = views.get(job.id);
  if (!view) {
    view = new JobView(job.id);
    views.set(job.id, view);
    if (older) list.append(view.root);
    else list.prepend(view.root);
    emptyNote.hidden = true;
  }
  const before = view.status;
  view.update(job);
  if (before && before !== job.status) announce(job);
  if (TERMINAL.has(job.status) || job.status === "gone") live.forget(job.id);
  else live.follow(job.id);
}

// One polite live region says when a job changes state (not every progress step).
function announce(job) {
  const what = job.params?.prompt || job.generator;
  statusRegion.textContent = `"${what}": ${job.status === "gone" ? "no longer available" : job.status}`;
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

    const head = el("div", { className: "job-head" }, [this.prompt, this.badge]);
    const actions = el("div", { className: "actions" }, [this.cancel, this.download]);
    const foot = el("div", { className: "job-foot" }, [this.detail, actions]);
    // Thumbnails appear one by one as files land; the live preview fills the next tile.
    this.gallery = el("ul", { className: "gallery" });
    this.gallery.setAttribute("aria-label", "Images");
    this.tiles = new Map(); // file name -> its tile
    this.previewImage = el("img", { alt: "Preview of the image being rendered" });
    this.previewTile = el("li", { className: "tile preview" }, [this.previewImage]);
    this.root.append(head, this.meta, this.bar, this.gallery, foot);
  }

  showFiles(job) {
    const files = job.files || [];
    files.forEach((file, index) => {
      if (this.tiles.has(file.name)) return;
      const isImage = (file.content_type || "").startsWith("image/");
      const label = `${file.name} (image ${index + 1} of ${job.params?.count ?? files.length})`;
      const thumb = isImage
        ? el("img", { src: file.url, alt: `${job.params?.prompt || job.generator}: ${label}`, loading: "lazy" })
        : el("span", { className: "file-name", textContent: file.name });
      const link = el("a", { href: file.url, target: "_blank", rel: "noopener", title: `Open ${file.name}` }, [thumb]);
      const tile = el("li", { className: "tile" }, [link]);
      this.tiles.set(file.name, tile);
      this.gallery.insertBefore(tile, this.previewTile.parentNode ? this.previewTile : null);
    });
    const previewing = job.status === "running" && Boolean(job.preview);
    if (previewing && this.previewImage.getAttribute("src") !== job.preview) this.previewImage.src = job.preview;
    if (previewing && !this.previewTile.parentNode) this.gallery.append(this.previewTile);
    if (!previewing) this.previewTile.remove();
    this.gallery.hidden = this.gallery.children.length === 0;
  }

  update(job) {
    const percent = job.status === "succeeded" ? 100 : Math.round(job.progress?.percent ?? 0);
    this.status = job.status;
    this.root.dataset.status = job.status;
    this.prompt.textContent = job.params?.prompt || job.generator;
    this.badge.textContent = job.status === "gone" ? "unavailable" : job.status;
    this.meta.textContent = describeParams(job);
    this.fill.style.width = `${percent}%`;
    this.bar.setAttribute("aria-valuenow", String(percent));
    this.bar.setAttribute("aria-label", `${percent} percent`);
    this.detail.textContent = describeState(job);
    this.detail.classList.toggle("error", job.status === "failed");
    const active = job.status === "queued" || job.status === "running";
    this.cancel.hidden = !active || job.cancel_requested;
    this.download.hidden = job.status !== "succeeded";
    if (job.status === "succeeded") this.download.href = api.resultUrl(job);
    this.showFiles(job);
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

// The owner's jobs, newest first, a page at a time ("Show older jobs").
const PAGE = 10;
let nextCursor = null;

async function loadRecent(cursor = null) {
  try {
    const response = await api.recent(PAGE, cursor);
    if (!response.ok) return;
    const page = response.data.jobs;
    if (cursor) for (const job of page) show(job, { older: true });
    else for (const job of [...page].reverse()) show(job);
    for (const job of page) loadFiles(jobs.get(job.id));
    nextCursor = response.data.next_cursor;
    moreButton.hidden = !nextCursor;
  } catch {
    emptyNote.textContent = "Could not load your jobs; they will appear once the server answers.";
  }
}

moreButton.addEventListener("click", () => loadRecent(nextCursor));

// Priorities the caller may not ask for are shown, but disabled, with the reason.
async function loadPriorities() {
  const response = await api.me().catch(() => null);
  if (!response?.ok) return;
  const { priorities, default_priority: fallback, tier } = response.data;
  const select = form.elements.priority;
  for (const option of select.options) {
    option.disabled = !priorities.includes(option.value);
    option.textContent = capitalize(option.value) + (option.disabled ? ` (not for a ${tier} key)` : "");
  }
  select.value = fallback;
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
  loadPriorities();
  loadRecent().finally(() => live.reconnectNow());
}

if (document.body.dataset.requiresKeys === "true" && !api.key) askForKey();
else start();

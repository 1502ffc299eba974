// The job page: submit through the API and follow each job until it finishes.
"use strict";

const API = "/api/v1/jobs";
const jobsList = document.getElementById("jobs");
const form = document.getElementById("submit-form");
const formMessage = document.getElementById("form-message");
const followed = new Map();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  formMessage.textContent = "";
  const data = new FormData(form);
  const params = { prompt: data.get("prompt") };
  for (const name of ["count", "width", "height", "seed"]) {
    if (data.get(name) !== "") params[name] = Number(data.get(name));
  }
  const response = await fetch(API, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ generator: "images", params, priority: data.get("priority") }),
  });
  const body = await response.json();
  if (!response.ok) {
    formMessage.textContent = describeError(response, body.error);
    return;
  }
  render(body);
  follow(body.id);
});

function describeError(response, error) {
  if (error.code === "queue_full") {
    return `The queue is full. Try again in ${response.headers.get("Retry-After")} s.`;
  }
  const fields = Object.entries(error.fields || {}).map(([k, v]) => `${k}: ${v}`);
  return [error.message, ...fields].join(" — ");
}

function follow(id) {
  if (followed.has(id)) return;
  const timer = setInterval(async () => {
    const response = await fetch(`${API}/${id}`);
    if (!response.ok) return;
    const job = await response.json();
    render(job);
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      clearInterval(timer);
      followed.delete(id);
    }
  }, 500);
  followed.set(id, timer);
}

function render(job) {
  let item = document.getElementById(`job-${job.id}`);
  if (!item) {
    item = document.createElement("li");
    item.id = `job-${job.id}`;
    item.className = "job";
    jobsList.prepend(item);
  }
  item.dataset.status = job.status;
  item.replaceChildren(...jobView(job));
}

function jobView(job) {
  const header = el("header", {}, [
    el("span", { className: "prompt", textContent: job.params.prompt || job.generator }),
    el("span", { className: "status", textContent: job.status }),
  ]);
  const parts = [header, el("progress", { max: 100, value: job.progress.percent })];
  parts.push(el("div", { className: "detail", textContent: detailText(job) }));
  if (job.error) parts.push(el("div", { className: "detail error", textContent: job.error }));
  const actions = el("div", { className: "actions" }, []);
  if (job.status === "queued" || job.status === "running") {
    const cancel = el("button", { className: "secondary", textContent: "Cancel", type: "button" });
    cancel.addEventListener("click", () => fetch(`${API}/${job.id}/cancel`, { method: "POST" }));
    actions.append(cancel);
  }
  if (job.result) {
    actions.append(el("a", { href: job.result.url, textContent: "Download ZIP", className: "download" }));
  }
  parts.push(actions);
  return parts;
}

function detailText(job) {
  if (job.status === "queued") {
    return `Position ${job.position ?? "?"} in queue · about ${Math.round(job.eta_seconds ?? 0)} s`;
  }
  if (job.status === "running") {
    return `${job.progress.message || job.progress.stage || "starting"} · ${Math.round(job.progress.percent)} %`;
  }
  if (job.status === "succeeded") return `${job.result.files.length} files · ${job.result.bytes} bytes`;
  return job.status;
}

function el(tag, props, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function loadRecent() {
  const response = await fetch(`${API}?limit=20`);
  if (!response.ok) return;
  const { jobs } = await response.json();
  for (const job of jobs.reverse()) {
    render(job);
    if (job.status === "queued" || job.status === "running") follow(job.id);
  }
}

loadRecent();

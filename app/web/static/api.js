// The server, as every page reaches it. Every HTTP request and socket URL is made here:
// this is where the API key goes (a Bearer header; for a socket, whose handshake a browser
// cannot give headers, a one-minute token from POST /api/v1/tokens).
// The key lives as long as the tab (sessionStorage): a shared computer keeps no key, and
// the job page and the console share it. Loaded before app.js and console.js, which add
// their own calls to `api`.
"use strict";

const KEY_STORAGE = "generation-service-api-key";

const api = {
  base: "/api/v1",
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  onUnauthorized: () => {},

  useKey(key) {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
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
  // The URL of the socket at `path`, with a fresh token when the page has a key.
  async socketUrl(path) {
    let query = "";
    if (this.key) {
      const token = await this.request("POST", "/tokens");
      if (!token.ok) throw Object.assign(new Error("no socket token"), { status: token.status });
      query = `?token=${encodeURIComponent(token.data.token)}`;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.base}${path}${query}`;
  },
};

// The lwm2m server console: a client of the server's HTTP API. No
// framework: views are functions that build DOM from the API's JSON, and
// the event stream (/api/events) tells them when to fetch again.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
let csrf = "";
let events = null;
let current = null; // the view on screen: {name, onEvent(e)}

// h builds an element; text is always set as text, never as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && k !== "list") el[k] = v;
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// fill replaces el's children, leaving out the null of a condition.
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter(k => k !== undefined && k !== null && k !== false));
}

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// api calls the server's API with the session cookie and, for anything
// but GET, the session's CSRF token. A 401 means the session ended.
async function api(method, path, body, opts = {}) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  let payload;
  if (body instanceof Blob) {
    headers["Content-Type"] = "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin", signal: opts.signal });
  if (opts.raw) return resp;
  if (resp.status === 401 && !path.startsWith("/api/session")) {
    showSignIn("Your session has ended: sign in again.");
    throw new APIError(401, "not signed in");
  }
  const text = await resp.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!resp.ok) throw new APIError(resp.status, (data && data.error) || resp.statusText);
  return data;
}

// ---- sign-in ----

function showSignIn(msg) {
  csrf = "";
  if (events) { events.close(); events = null; }
  current = null;
  $("#app").replaceChildren();
  $("#app").hidden = true;
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#live").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = msg || "";
  $("#token").value = "";
  $("#token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#token").value.trim();
  try {
    const r = await api("POST", "/api/session", { token });
    csrf = r.csrf;
    $("#token").value = "";
    start();
  } catch (e) {
    $("#signin-error").textContent = e.status === 401 ? "That is not this server's API token." : e.message;
    $("#token").value = "";
    $("#token").focus();
  }
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch { /* signed out either way */ }
  location.hash = "";
  showSignIn("Signed out.");
}

function start() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#live").hidden = false;
  listen();
  route();
}

// listen opens the event stream; EventSource reconnects by itself after
// a dropped stream, and onerror after a refused one.
function listen() {
  if (events) events.close();
  events = new EventSource("/api/events");
  const live = $("#live");
  events.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  events.onerror = () => {
    live.className = "live off"; live.textContent = "reconnecting";
    // A stream refused for want of a session: find out, and sign in.
    api("GET", "/api/session", undefined, { raw: true }).then(r => {
      if (r.status === 401) { showSignIn("Your session has ended: sign in again."); return; }
      // EventSource retries a dropped stream by itself but gives up on
      // a refused one (a 503 when the server has too many streams open):
      // open it again a little later, and refetch what was missed.
      if (events && events.readyState === EventSource.CLOSED) {
        setTimeout(() => { if (csrf) { listen(); if (current && current.onEvent) current.onEvent({ kind: "resync" }); } }, 5000);
      }
    });
  };
  events.onmessage = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch { return; }
    if (current && current.onEvent) current.onEvent(e);
  };
}

// ---- routing ----

function route() {
  if (!csrf) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = parts[0] || "devices";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "device" && a.dataset.view === "devices") || (name === "campaign" && a.dataset.view === "campaigns"));
  }
  if (current && current.stop) current.stop();
  const view = { devices: devicesView, device: deviceView, packages: packagesView, campaigns: campaignsView, campaign: campaignView }[name] || devicesView;
  const root = $("#app");
  root.replaceChildren();
  current = view(root, parts.slice(1).join("/"));
}

// debounce coalesces a burst of events into one refetch.
function debounce(fn, ms = 150) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}

// ---- formatting ----

function ago(t) {
  if (!t) return "";
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return new Date(t).toLocaleString();
}
function duration(sec) {
  if (sec % 86400 === 0) return sec / 86400 + " d";
  if (sec % 3600 === 0) return sec / 3600 + " h";
  if (sec % 60 === 0) return sec / 60 + " min";
  return sec + " s";
}
function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}
function time(t) { return t ? new Date(t).toLocaleString() : ""; }
function transport(d) {
  return (d.secure ? "CoAP/DTLS" : "CoAP/UDP") + (d.binding && d.binding !== "U" ? " (" + d.binding + ")" : "");
}
const stateNames = ["Idle", "Downloading", "Downloaded", "Updating"]; // /5/0/3
function stateBadge(st) {
  if (!st || !st.state_name) return h("span", { class: "badge fw-state" }, "unknown");
  const busy = st.state === 1 || st.state === 2 || st.state === 3;
  return h("span", { class: "badge fw-state" + (busy ? " busy" : "") }, st.state_name);
}
function resultBadge(name, result) {
  if (!name) return h("span", { class: "badge fw-result" }, "unknown");
  const cls = result === 1 ? " ok" : result > 1 ? " bad" : "";
  return h("span", { class: "badge fw-result" + cls }, name);
}
// phaseNames are the server's update phases (server.Progress) in words.
const phaseNames = {
  deliver: "delivering the package", uri: "Package URI written, the device downloads",
  state: "waiting for the device", execute: "Update executed, waiting for the outcome",
  registered: "the device registered again", done: "done",
  check: "checking the device", // a campaign checks its target, or an update cut short by a restart
};
function errorBox(e) { return h("p", { class: "error", role: "alert" }, e.message || String(e)); }

// ---- devices ----

function devicesView(root) {
  const search = h("input", { type: "search", id: "device-search", placeholder: "Search endpoint, version, address", "aria-label": "search" });
  const filter = h("select", { id: "device-filter", "aria-label": "filter" },
    h("option", { value: "" }, "All devices"),
    h("option", { value: "busy" }, "Updating now"),
    h("option", { value: "failed" }, "Last update failed"),
    h("option", { value: "ok" }, "Last update succeeded"),
    h("option", { value: "secure" }, "Over DTLS"));
  const count = h("span", { class: "count" });
  const body = h("tbody");
  const err = h("div");
  root.append(h("h1", {}, "Devices"), h("div", { class: "toolbar" }, search, filter, count), err,
    h("table", { id: "devices" },
      h("thead", {}, h("tr", {}, ["Endpoint", "Firmware", "State", "Result", "Address", "Transport", "Last seen", "Lifetime"].map(t => h("th", {}, t)))),
      body));
  let all = [];
  const match = (d) => {
    const q = search.value.trim().toLowerCase();
    const st = d.status || {};
    if (q && ![d.endpoint, st.firmware_version, d.addr, d.psk_identity].some(v => v && v.toLowerCase().includes(q))) return false;
    switch (filter.value) {
      case "busy": return st.state === 1 || st.state === 2 || st.state === 3 || !!st.phase;
      case "failed": return st.result > 1;
      case "ok": return st.result === 1;
      case "secure": return d.secure;
    }
    return true;
  };
  const render = () => {
    const shown = all.filter(match);
    count.textContent = shown.length === all.length ? all.length + " registered" : shown.length + " of " + all.length + " registered";
    body.replaceChildren(...shown.map(d => {
      const st = d.status || {};
      return h("tr", { "data-endpoint": d.endpoint },
        h("td", {}, h("a", { href: "#/device/" + encodeURIComponent(d.endpoint), class: "mono" }, d.endpoint)),
        h("td", { class: "fw-version mono" }, st.firmware_version || ""),
        h("td", {}, stateBadge(st), st.phase === "deliver" && st.total ? h("span", { class: "muted" }, " " + Math.floor(100 * st.sent / st.total) + " %") : null),
        h("td", {}, resultBadge(st.result_name, st.result)),
        h("td", { class: "mono" }, d.addr),
        h("td", {}, transport(d)),
        h("td", { title: time(d.updated) }, ago(d.updated)),
        h("td", { class: "num" }, duration(d.lifetime)));
    }));
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, all.length ? "No device matches." : "No device is registered.")));
  };
  const load = async () => {
    try { all = await api("GET", "/api/status"); err.replaceChildren(); render(); }
    catch (e) { if (e.status !== 401) err.replaceChildren(errorBox(e)); }
  };
  // A few changed devices are fetched one by one; many, or lost
  // events, fetch the whole list again.
  let changed = new Set(), everything = false;
  const refetch = debounce(async () => {
    const eps = [...changed];
    const full = everything || eps.length > 20;
    changed = new Set(); everything = false;
    if (full) return load();
    for (const ep of eps) {
      let d;
      try { d = await api("GET", `/api/devices/${encodeURIComponent(ep)}/status`); }
      catch (e) { if (e.status === 404) d = { endpoint: ep, is_registered: false }; else return load(); }
      all = all.filter(x => x.endpoint !== ep);
      if (d.is_registered) { delete d.history; all.push(d); }
    }
    all.sort((a, b) => a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0);
    render();
  });
  search.addEventListener("input", render);
  filter.addEventListener("change", render);
  const tick = setInterval(render, 15000); // "last seen" ages; no fetch
  load();
  return {
    onEvent: (e) => {
      if (e.kind === "device" && e.endpoint) changed.add(e.endpoint);
      else if (e.kind === "resync") everything = true;
      else return;
      refetch();
    },
    stop: () => clearInterval(tick),
  };
}

// parseLinks lists the object instances of a registration's CoRE links.
function parseLinks(links) {
  const objs = new Map();
  for (const part of (links || "").split(",")) {
    const m = /<\/?([0-9]+)(?:\/([0-9]+))?>/.exec(part);
    if (!m) continue;
    const id = Number(m[1]);
    if (!objs.has(id)) objs.set(id, []);
    if (m[2] !== undefined) objs.get(id).push(Number(m[2]));
  }
  return [...objs.entries()].sort((a, b) => a[0] - b[0]);
}

const objectNames = { 0: "Security", 1: "Server", 2: "Access Control", 3: "Device", 4: "Connectivity Monitoring", 5: "Firmware Update", 6: "Location", 7: "Connectivity Statistics" };

function deviceView(root, ep) {
  const q = encodeURIComponent(ep);
  const title = h("h1", {}, "Device ", h("span", { class: "mono" }, ep));
  const info = h("dl", { class: "kv", id: "device-info" });
  const fw = h("div", { id: "device-fw" });
  const objects = h("div", { class: "objects", id: "device-objects" });
  const hist = h("tbody");
  const err = h("div");

  // Operations on any path: read, write, execute, observe.
  const path = h("input", { class: "path mono", id: "op-path", placeholder: "/3/0/0", "aria-label": "path" });
  const value = h("input", { id: "op-value", placeholder: "value or arguments", "aria-label": "value" });
  const out = h("pre", { class: "log", id: "op-out" }, "Pick an object instance to read, or give a path.");
  let observing = null;
  const show = (line) => { out.textContent = line + "\n" + (out.textContent.startsWith("Pick") ? "" : out.textContent); };
  const records = (c) => c.records ? c.records.map(r => r.path + " = " + r.value + "  (" + r.type + ")").join("\n") : "format " + c.format + ", " + (c.decode_error || "payload " + c.payload);
  const op = async (what, p = path.value.trim()) => {
    if (!p) { show("Give a path first."); return; }
    path.value = p;
    try {
      if (what === "read") show("read " + p + "\n" + records(await api("GET", `/api/devices/${q}/read?path=${encodeURIComponent(p)}&timeout=30s`)));
      if (what === "write") { await api("POST", `/api/devices/${q}/write?timeout=30s`, { path: p, value: value.value }); show("wrote " + p + " = " + value.value); }
      if (what === "execute") { await api("POST", `/api/devices/${q}/execute?timeout=30s`, { path: p, args: value.value }); show("executed " + p); }
    } catch (e) { show(what + " " + p + ": " + e.message); }
  };
  const observe = async () => {
    const p = path.value.trim();
    if (!p) { show("Give a path first."); return; }
    if (observing) observing.abort();
    observing = new AbortController();
    obsBtn.disabled = true; stopBtn.disabled = false;
    show("observing " + p);
    try {
      const resp = await api("GET", `/api/devices/${q}/observe?path=${encodeURIComponent(p)}`, undefined, { raw: true, signal: observing.signal });
      if (!resp.ok) { const e = await resp.json().catch(() => ({})); throw new Error(e.error || resp.statusText); }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value: chunk, done } = await reader.read();
        if (done) break;
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1);
          if (line) show(new Date().toLocaleTimeString() + " " + records(JSON.parse(line)));
        }
      }
      show("observation of " + p + " ended");
    } catch (e) { if (e.name !== "AbortError") show("observe " + p + ": " + e.message); }
    obsBtn.disabled = false; stopBtn.disabled = true;
  };
  const obsBtn = h("button", { type: "button", class: "secondary", onclick: observe }, "Observe");
  const stopBtn = h("button", { type: "button", class: "secondary", disabled: true, onclick: () => { if (observing) observing.abort(); show("stopped"); } }, "Stop");

  root.append(h("p", {}, h("a", { href: "#/devices" }, "← Devices")), title, err,
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Registration"), info),
      h("div", { class: "card" }, h("h2", {}, "Firmware update (/5)"), fw)),
    h("div", { class: "card" }, h("h2", {}, "Objects and resources"), objects,
      h("div", { class: "ops" }, path, value,
        h("button", { type: "button", onclick: () => op("read") }, "Read"),
        h("button", { type: "button", class: "secondary", onclick: () => op("write") }, "Write"),
        h("button", { type: "button", class: "secondary", onclick: () => op("execute") }, "Execute"),
        obsBtn, stopBtn),
      out),
    h("h2", {}, "History"),
    h("table", { id: "device-history" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event"), h("th", {}, "Detail"))), hist));

  let lastLinks = null;
  const load = async () => {
    let d;
    try { d = await api("GET", `/api/devices/${q}/status`); err.replaceChildren(); }
    catch (e) { if (e.status !== 401) err.replaceChildren(errorBox(e)); return; }
    const st = d.status || {};
    info.replaceChildren(
      h("dt", {}, "Registered"), h("dd", { id: "device-registered" }, d.is_registered ? "yes, since " + time(d.registered) : "no"),
      ...(d.is_registered ? [
        h("dt", {}, "Address"), h("dd", { class: "mono" }, d.addr),
        h("dt", {}, "Transport"), h("dd", {}, transport(d) + (d.psk_identity ? ", PSK identity " + d.psk_identity : "")),
        h("dt", {}, "LwM2M"), h("dd", {}, d.version),
        h("dt", {}, "Last seen"), h("dd", { title: time(d.updated) }, ago(d.updated)),
        h("dt", {}, "Lifetime"), h("dd", {}, duration(d.lifetime) + ", expires " + time(d.expires)),
      ] : []));
    const pct = st.total ? Math.floor(100 * st.sent / st.total) : null;
    fill(fw, h("dl", { class: "kv" },
      h("dt", {}, "Firmware version"), h("dd", { class: "fw-version mono" }, st.firmware_version || "unknown"),
      h("dt", {}, "State"), h("dd", {}, stateBadge(st)),
      h("dt", {}, "Update Result"), h("dd", {}, resultBadge(st.result_name, st.result)),
      st.phase ? [h("dt", {}, "Update running"), h("dd", { class: "fw-phase" }, phaseNames[st.phase] || st.phase)] : null),
      st.phase === "deliver" || st.state === 1 ? h("div", {},
        h("progress", { id: "fw-progress", max: st.total || 1, value: st.sent || 0 }),
        h("div", { class: "muted" }, st.total ? bytes(st.sent) + " of " + bytes(st.total) + " (" + pct + " %)" : "downloading")) : null);
    if (d.links !== lastLinks) {
      lastLinks = d.links;
      objects.replaceChildren(...parseLinks(d.links).filter(([id]) => id !== 0).map(([id, insts]) =>
        h("div", {}, h("strong", {}, "/" + id + " " + (objectNames[id] || "")), " ",
          (insts.length ? insts : [null]).map(i => {
            const p = i === null ? "/" + id : "/" + id + "/" + i;
            return h("button", { type: "button", class: "secondary", onclick: () => op("read", p) }, "Read " + p);
          }))));
    }
    hist.replaceChildren(...(d.history || []).slice().reverse().map(e =>
      h("tr", {}, h("td", {}, time(e.time)), h("td", {}, e.event), h("td", {}, e.detail || ""))));
  };
  const refetch = debounce(load, 100);
  load();
  return {
    onEvent: (e) => { if ((e.kind === "device" && e.endpoint === ep) || e.kind === "resync") refetch(); },
    stop: () => { if (observing) observing.abort(); },
  };
}

// ---- packages (routes of the campaign engine) ----

function unavailable(e) {
  return e.status === 404 ? h("p", { class: "muted" }, "This server has no packages or campaigns (" + e.message + ").") : errorBox(e);
}

// Signature statuses of a package (server/campaign): only "valid" was
// checked against the server's trusted key (-package-key).
const signatureTitles = {
  valid: "signed by the server's trusted key", invalid: "the signature, hash or length is wrong",
  unsigned: "no signature", unverified: "signed, but the server has no key to check it (-package-key)",
};
function signatureClass(s) { return s === "valid" ? " ok" : s === "invalid" ? " bad" : s === "unverified" ? " busy" : ""; }

function packagesView(root) {
  const file = h("input", { type: "file", id: "pkg-file", required: true });
  const name = h("input", { id: "pkg-name", placeholder: "name (default: the file's)" });
  const msg = h("p", { id: "pkg-msg" });
  const body = h("tbody");
  const err = h("div");
  const upload = async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) return;
    msg.className = "muted"; msg.textContent = "Uploading " + f.name + " (" + bytes(f.size) + ")…";
    try {
      const p = await api("POST", "/api/packages?name=" + encodeURIComponent(name.value.trim() || f.name), f);
      msg.className = ""; msg.textContent = "Stored " + p.name + " " + (p.version || "") + ", SHA-256 " + p.sha256 + ", signature " + p.signature + ".";
      file.value = ""; name.value = "";
      load();
    } catch (e) { msg.className = "error"; msg.textContent = "Upload failed: " + e.message; }
  };
  root.append(h("h1", {}, "Packages"),
    h("form", { class: "card ops", id: "pkg-upload", onsubmit: upload }, file, name, h("button", { type: "submit" }, "Upload"), msg),
    err,
    h("table", { id: "packages" }, h("thead", {}, h("tr", {}, ["Name", "Version", "Size", "SHA-256", "Signature", "Uploaded"].map(t => h("th", {}, t)))), body));
  const load = async () => {
    let list;
    try { list = await api("GET", "/api/packages"); err.replaceChildren(); }
    catch (e) { if (e.status !== 401) err.replaceChildren(unavailable(e)); return; }
    body.replaceChildren(...(list || []).map(p => h("tr", { "data-id": p.id },
      h("td", {}, p.name), h("td", {}, p.version || (p.format === "raw" ? h("span", { class: "muted" }, "raw image") : "")), h("td", { class: "num" }, bytes(p.size)),
      h("td", { class: "mono", title: p.sha256 }, (p.sha256 || "").slice(0, 16) + "…"),
      h("td", {}, h("span", { class: "badge" + signatureClass(p.signature), title: signatureTitles[p.signature] || "" }, p.signature)),
      h("td", {}, time(p.created)))));
    if (!list || !list.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No package uploaded yet.")));
  };
  load();
  return { onEvent: (e) => { if (e.kind === "package" || e.kind === "resync") load(); } };
}

// ---- campaigns (Contract B routes) ----

function countsLine(c) {
  const n = c.counts || {};
  return h("span", { class: "counts" },
    h("span", { class: "c-succeeded" }, "succeeded " + (n.succeeded || 0)), h("span", { class: "c-failed" }, "failed " + (n.failed || 0)),
    h("span", { class: "c-running" }, "running " + (n.running || 0)), h("span", { class: "c-pending" }, "pending " + (n.pending || 0)),
    n.skipped ? h("span", { class: "c-skipped" }, "skipped " + n.skipped) : null,
    n.expired ? h("span", { class: "c-expired" }, "expired " + n.expired) : null);
}
// A device's status in its campaign (server/campaign Device.Status).
function deviceStatusBadge(s) {
  const cls = s === "succeeded" ? " ok" : s === "failed" || s === "expired" ? " bad" : s === "running" ? " busy" : "";
  return h("span", { class: "badge c-status" + cls }, s || "unknown");
}
// localInput is t as a datetime-local input's value, in local time.
function localInput(t) {
  const p = (n) => String(n).padStart(2, "0");
  return t.getFullYear() + "-" + p(t.getMonth() + 1) + "-" + p(t.getDate()) + "T" + p(t.getHours()) + ":" + p(t.getMinutes());
}
function targetText(t) {
  if (!t) return "";
  const parts = ["endpoints " + (t.endpoints || "*")];
  if (t.firmware_version) parts.push("firmware version " + t.firmware_version);
  if (t.resource) parts.push(t.resource.path + " = " + t.resource.equals);
  return parts.join(", ");
}
function rolloutText(r) {
  if (!r) return "";
  const parts = [];
  if (r.canary) parts.push("canary " + r.canary);
  parts.push(r.wave_size ? "waves of " + r.wave_size : r.wave_percent ? "waves of " + r.wave_percent + " %" : "one wave");
  if (r.concurrency) parts.push("at most " + r.concurrency + " at once");
  if (r.failure_threshold_percent != null) parts.push("pause above " + r.failure_threshold_percent + " % failed");
  return parts.join(", ");
}
function campaignState(s) {
  return h("span", { class: "badge c-state" + (s === "done" ? " ok" : s === "aborted" ? " bad" : s === "running" ? " busy" : "") }, s);
}

function campaignsView(root) {
  const body = h("tbody");
  const err = h("div");
  const msg = h("p", { class: "error", id: "camp-msg" });
  const pkg = h("select", { id: "camp-package", required: true });
  const f = {
    name: h("input", { id: "camp-name", required: true }),
    endpoints: h("input", { id: "camp-endpoints", value: "*", class: "mono" }),
    fwv: h("input", { id: "camp-fwversion", placeholder: "any" }),
    method: h("select", { id: "camp-method" }, ["pull-coap", "pull-coaps", "pull-http", "pull-https", "push"].map(m => h("option", { value: m }, m))),
    canary: h("input", { id: "camp-canary", type: "number", min: 0, value: 1 }),
    wave: h("input", { id: "camp-wave", type: "number", min: 0, value: 10 }),
    wavePct: h("input", { id: "camp-wave-percent", type: "number", min: 0, max: 100, value: 0 }),
    conc: h("input", { id: "camp-concurrency", type: "number", min: 1, value: 4 }),
    fail: h("input", { id: "camp-failure", type: "number", min: 0, max: 100, value: 5 }),
    // The engine wants a deadline: 24 h from now, as the CLI's default.
    deadline: h("input", { id: "camp-deadline", type: "datetime-local", required: true, value: localInput(new Date(Date.now() + 864e5)) }),
  };
  const create = async (ev) => {
    ev.preventDefault();
    const body = {
      name: f.name.value.trim(), package: pkg.value,
      target: { endpoints: f.endpoints.value.trim() || "*", firmware_version: f.fwv.value.trim() },
      method: f.method.value,
      rollout: { canary: +f.canary.value, wave_size: +f.wave.value, wave_percent: +f.wavePct.value, concurrency: +f.conc.value, failure_threshold_percent: +f.fail.value },
    };
    body.deadline = new Date(f.deadline.value).toISOString();
    try {
      const c = await api("POST", "/api/campaigns", body);
      location.hash = "#/campaign/" + encodeURIComponent(c.id);
    } catch (e) { msg.textContent = "Could not create the campaign: " + e.message; }
  };
  const row = (label, el) => [h("label", { for: el.id }, label), el];
  root.append(h("h1", {}, "Campaigns"), err,
    h("table", { id: "campaigns" }, h("thead", {}, h("tr", {}, ["Name", "Package", "Method", "State", "Progress", "Created"].map(t => h("th", {}, t)))), body),
    h("h2", {}, "New campaign"),
    h("form", { class: "card grid", id: "camp-form", onsubmit: create },
      row("Name", f.name), row("Package", pkg), row("Endpoints (glob)", f.endpoints), row("Only firmware version", f.fwv),
      row("Method", f.method), row("Canary devices", f.canary), row("Wave size", f.wave), row("or wave %", f.wavePct),
      row("Concurrency", f.conc), row("Pause above failures %", f.fail), row("Deadline", f.deadline),
      h("div", { class: "full" }, h("button", { type: "submit" }, "Start campaign"), msg)));
  const load = async () => {
    let list;
    try { list = await api("GET", "/api/campaigns"); err.replaceChildren(); }
    catch (e) { if (e.status !== 401) err.replaceChildren(unavailable(e)); return; }
    body.replaceChildren(...(list || []).map(c => h("tr", { "data-id": c.id },
      h("td", {}, h("a", { href: "#/campaign/" + encodeURIComponent(c.id) }, c.name)), h("td", {}, pkgNames.get(c.package) || c.package), h("td", {}, c.method),
      h("td", {}, campaignState(c.state)), h("td", {}, countsLine(c)), h("td", {}, time(c.created)))));
    if (!list || !list.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No campaign yet.")));
  };
  const pkgNames = new Map();
  const loadPackages = async () => {
    try {
      const list = await api("GET", "/api/packages");
      for (const p of list || []) pkgNames.set(p.id, p.name + (p.version ? " " + p.version : ""));
      pkg.replaceChildren(...(list || []).map(p => h("option", { value: p.id }, p.name + " " + (p.version || "") + " (" + bytes(p.size) + ")")));
    } catch { /* the list above says why */ }
  };
  loadPackages().finally(load);
  const refetch = debounce(load);
  return { onEvent: (e) => { if (e.kind === "campaign" || e.kind === "resync") refetch(); if (e.kind === "package") loadPackages(); } };
}

function campaignView(root, id) {
  const q = encodeURIComponent(id);
  const head = h("div", { class: "card", id: "campaign" });
  const waves = h("div", { id: "campaign-waves" });
  const devs = h("tbody");
  const err = h("div");
  const act = (what) => async () => {
    try { render(await api("POST", `/api/campaigns/${q}/${what}`)); } catch (e) { err.replaceChildren(errorBox(e)); }
  };
  root.append(h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")), err, head,
    h("h2", {}, "Waves"), waves,
    h("h2", {}, "Devices"),
    h("table", { id: "campaign-devices" }, h("thead", {}, h("tr", {}, ["Endpoint", "Wave", "Status", "Phase", "State", "Result", "Delivered", "Error", "Updated"].map(t => h("th", {}, t)))), devs));
  const render = (c) => {
    head.replaceChildren(h("h1", {}, "Campaign ", c.name, " ", campaignState(c.state)),
      h("dl", { class: "kv" },
        h("dt", {}, "Package"), h("dd", { id: "campaign-package" }, pkgNames.get(c.package) || c.package), h("dt", {}, "Method"), h("dd", {}, c.method),
        h("dt", {}, "Target"), h("dd", { class: "mono" }, targetText(c.target)), h("dt", {}, "Rollout"), h("dd", {}, rolloutText(c.rollout)),
        h("dt", {}, "Created"), h("dd", {}, time(c.created)), h("dt", {}, "Deadline"), h("dd", {}, c.deadline ? time(c.deadline) : "none"),
        c.finished ? [h("dt", {}, "Finished"), h("dd", {}, time(c.finished))] : null,
        c.pause_reason ? [h("dt", {}, "Paused because"), h("dd", { class: "error", id: "pause-reason" }, c.pause_reason)] : null,
        h("dt", {}, "Devices"), h("dd", {}, countsLine(c))),
      h("div", { class: "ops" },
        h("button", { type: "button", id: "camp-pause", disabled: c.state !== "running", onclick: act("pause") }, "Pause"),
        h("button", { type: "button", id: "camp-resume", class: "secondary", disabled: c.state !== "paused", onclick: act("resume") }, "Resume"),
        h("button", { type: "button", id: "camp-abort", class: "danger", disabled: c.state === "done" || c.state === "aborted", onclick: act("abort") }, "Abort")));
    waves.replaceChildren(...(c.waves || []).map(w => h("div", { class: "card", "data-wave": w.index },
      h("strong", {}, w.canary ? "Canary" : "Wave " + w.index), " ", h("span", { class: "badge" }, w.state),
      h("span", { class: "muted" }, " " + (w.done + w.failed) + " of " + w.devices + " finished, " + w.failed + " failed"),
      h("progress", { max: w.devices || 1, value: w.done + w.failed }))));
    devs.replaceChildren(...(c.devices || []).map(d => h("tr", { "data-endpoint": d.endpoint },
      h("td", {}, h("a", { href: "#/device/" + encodeURIComponent(d.endpoint), class: "mono" }, d.endpoint)),
      h("td", { class: "num" }, d.wave), h("td", {}, deviceStatusBadge(d.status)), h("td", {}, phaseNames[d.phase] || d.phase || ""),
      h("td", { class: "fw-state" }, typeof d.state === "number" ? (stateNames[d.state] ?? d.state) : d.state || ""),
      h("td", {}, d.result_name ? resultBadge(d.result_name, d.result) : ""), h("td", { class: "num delivered" }, d.total ? h("progress", { max: d.total, value: d.bytes || 0 }) : "", " ", bytes(d.bytes) + (d.total ? " of " + bytes(d.total) : "")),
      h("td", { class: "error" }, d.error || ""), h("td", {}, ago(d.updated)))));
  };
  const load = async () => {
    try { render(await api("GET", `/api/campaigns/${q}`)); err.replaceChildren(); }
    catch (e) { if (e.status !== 401) err.replaceChildren(unavailable(e)); }
  };
  // Packages by ID, to show the campaign's by name.
  const pkgNames = new Map();
  api("GET", "/api/packages").then(list => {
    for (const p of list || []) pkgNames.set(p.id, p.name + (p.version ? " " + p.version : ""));
  }).catch(() => {}).finally(load);
  const refetch = debounce(load);
  return { onEvent: (e) => { if ((e.kind === "campaign" && e.id === id) || e.kind === "resync") refetch(); } };
}

// ---- boot ----

document.addEventListener("DOMContentLoaded", async () => {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  try {
    const r = await api("GET", "/api/session");
    csrf = r.csrf;
    start();
  } catch {
    showSignIn();
  }
});

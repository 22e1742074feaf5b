// quiesce dashboard: plain JavaScript, no build step, no external assets.
//
// Theory of operation. The page is one shell (index.html) and views chosen by the URL hash
// (#/pools, #/servers, #/monitors, #/events, #/flags here; #/services, #/pool/NAME and
// #/drain/POOL/SERVER in traffic.js, which registers them through window.quiesceDashboard).
// Each view has mount() which builds its fixed parts once (headings, filters, toolbars) and
// refresh() which refetches its data and redraws only the data parts. Live updates come from
// Server-Sent Events (/api/v1/events/stream): every event refetches the affected views
// (debounced), and a 3 s poll keeps connection counts live when nothing is happening or the
// stream is down. A view with tick() (the charts: the Servers view's sparklines and
// traffic.js's views) is also ticked once a second to read the live series; a tick starts only
// when the last one has ended, so a slow answer never piles requests up. Redraws keep the
// keyboard focus and the values of form controls by element id, so a poll never steals what an
// operator is doing. The charts themselves are charts.js (SVG, no library).
//
// Every state change goes through the REST API with the session cookie; requests other than
// GET carry X-CSRF-Token (the readable quiesce_csrf cookie). Read-only users get no action
// controls at all (they are not rendered, not merely hidden).
"use strict";

(function () {
  const Q = window.QuiesceCharts;
  const API = "/api/v1";
  const POLL_MS = 3000;
  const TICK_MS = 1000; // the live series (GET /api/v1/series…): one row a second
  const SPARK_SECONDS = 60;
  const MAX_EVENTS = 500;
  const EVENT_KINDS = [
    "oper_change", "admin_change", "admin_command", "admin_refused", "election", "pool_up",
    "pool_down", "flag_change", "monitor_change", "connections_closed", "login_failed",
    "startup", "shutdown", "server_added", "server_updated", "server_removed",
    "config_reload", "config_change", "protocol_error", "node_isolated", "node_rejoined",
    "node_joined", "node_left", "write_conflict", "store_replaced",
    "local_reconciled",
  ];
  const CAUSES = ["health", "passive", "api", "cli", "dashboard", "runtime-socket", "config", "expiry", "deadline", "startup"];
  const MONITOR_TYPES = ["http", "https", "tcp", "udp", "tcp_half_open", "icmp", "postgresql", "mysql", "grpc"];
  const SUBOBJECT = { http: "http_monitor", https: "https_monitor", tcp: "tcp_monitor", udp: "udp_monitor", postgresql: "postgresql_monitor", mysql: "mysql_monitor", grpc: "grpc_monitor" };
  const SITE_FLAG = "maintenance_mode";

  const state = {
    me: null,
    pools: [],
    servers: [],
    monitors: [],
    types: null,
    flags: {},
    selected: new Set(),
    openSettings: new Set(),
    view: null,
    viewName: "",
    sseOpen: false,
    spark: {}, // "pool/server" -> {t: [...], requests: [...], errors: [...], p99_ms: [...], connections: [...]}
  };

  // ---------------------------------------------------------------- small helpers

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") el.className = v;
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else if (k === "checked" || k === "selected") { el[k] = v; el.setAttribute(k, ""); }
        else if (k === "value") { el.value = v; el.setAttribute("value", String(v)); }
        else if (k === "indeterminate") { el.indeterminate = v; el.setAttribute("data-indeterminate", ""); }
        else if (v === true) el.setAttribute(k, "");
        else el.setAttribute(k, String(v));
      }
    }
    add(el, kids);
    return el;
  }

  // A data cell: on narrow screens tables become cards whose cells show data-label on the
  // left and this one wrapper on the right.
  function cell(attrs, ...kids) {
    const flat = kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false);
    const empty = flat.length === 0 || (flat.length === 1 && (flat[0] === "—" || flat[0] === ""));
    if (empty) attrs = { ...attrs, class: ((attrs && attrs.class) || "") + " empty" };
    return h("td", attrs, h("div", { class: "cell" }, kids));
  }

  function setKids(el, ...kids) {
    el.replaceChildren();
    add(el, kids);
  }

  function add(el, kids) {
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      if (Array.isArray(kid)) add(el, kid);
      else el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
  }

  const isAdmin = () => Boolean(state.me && state.me.role === "admin");
  const keyOf = (s) => s.pool + "/" + s.name;
  const idSafe = (text) => String(text).replace(/[^A-Za-z0-9_-]/g, (c) => "_" + c.charCodeAt(0).toString(16));
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many || one + "s");

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [k, ...rest] = part.trim().split("=");
      if (k === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  function fmtTime(epoch) {
    if (epoch === null || epoch === undefined) return "—";
    const d = new Date(epoch * 1000);
    const time = Q.clock(epoch);
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return d.toLocaleDateString() + " " + time;
  }

  function fmtSpan(seconds) {
    const s = Math.max(0, Math.round(Math.abs(seconds)));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function relative(epoch) {
    const delta = epoch - Date.now() / 1000;
    return delta >= 0 ? "in " + fmtSpan(delta) : fmtSpan(delta) + " ago";
  }

  function fmtSeconds(value) {
    if (value === null || value === undefined) return "—";
    if (value < 0) return "no timeout";
    if (value < 1) return Math.round(value * 1000) + " ms";
    return (Math.round(value * 1000) / 1000) + " s";
  }

  // ---------------------------------------------------------------- the REST API

  class ApiError extends Error {
    constructor(status, detail, body) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.body = body;
    }
  }

  function detailText(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d))).join("; ");
    }
    if (body && typeof body.error === "string") return body.error;
    return "HTTP " + status;
  }

  async function api(method, path, body) {
    return (await apiResponse(method, path, body)).data;
  }

  // The answer with its headers (a page of servers: X-Total-Count).
  async function apiResponse(method, path, body) {
    const headers = { Accept: "application/json", "X-Requested-With": "quiesce-dashboard" };
    if (method !== "GET" && method !== "HEAD") {
      headers["X-CSRF-Token"] = cookie("quiesce_csrf") || (state.me && state.me.csrf) || sessionStorage.getItem("quiesce_csrf") || "";
    }
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, "the balancer did not answer (" + e.message + ")", null);
    }
    if (resp.status === 401) {
      toLogin();
      throw new ApiError(401, "not logged in", null);
    }
    let data = null;
    const text = await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { detail: text }; }
    }
    if (!resp.ok) throw new ApiError(resp.status, detailText(data, resp.status), data);
    return { data, headers: resp.headers };
  }

  function toLogin() {
    const next = location.pathname + location.hash;
    location.href = "/login?next=" + encodeURIComponent(next);
  }

  const enc = encodeURIComponent;
  const serverPath = (s) => "/servers/" + enc(s.pool) + "/" + enc(s.name);

  async function loadPools() { state.pools = (await api("GET", "/pools")) || []; return state.pools; }
  // One page of servers (issue 21: never the whole list, which is megabytes at 10,000
  // servers): `pool` ("" for every pool, config order), `size` from `offset`; the total from
  // X-Total-Count.
  async function loadServerPage(pool, offset, size) {
    const q = new URLSearchParams();
    if (pool) q.set("pool", pool);
    q.set("limit", String(size));
    q.set("offset", String(offset));
    const { data, headers } = await apiResponse("GET", "/servers?" + q);
    const rows = data || [];
    const total = Number(headers.get("X-Total-Count"));
    return { rows, total: Number.isFinite(total) && headers.has("X-Total-Count") ? total : offset + rows.length };
  }
  async function loadMonitors() { state.monitors = (await api("GET", "/healthmonitors")) || []; return state.monitors; }
  async function loadFlags() {
    const data = await api("GET", "/flags");
    // Accept {name: value} or [{name, value}].
    const flags = {};
    if (Array.isArray(data)) for (const f of data) flags[f.name] = f.value;
    else if (data && typeof data === "object") {
      const src = data.flags && typeof data.flags === "object" ? data.flags : data;
      for (const [k, v] of Object.entries(src)) flags[k] = v && typeof v === "object" && "value" in v ? v.value : v;
    }
    state.flags = flags;
    updateSiteBadge();
    return flags;
  }

  // ---------------------------------------------------------------- redraw without losing focus

  function preserving(root, draw) {
    const values = new Map();
    for (const el of root.querySelectorAll("input[id], select[id], textarea[id]")) {
      values.set(el.id, el.type === "checkbox" || el.type === "radio" ? { checked: el.checked } : { value: el.value });
    }
    const active = document.activeElement;
    const focusId = active && root.contains(active) ? active.id : "";
    draw();
    for (const [id, v] of values) {
      const el = document.getElementById(id);
      if (!el || !root.contains(el)) continue;
      if ("checked" in v && el.dataset.keep === "1") el.checked = v.checked;
      if ("value" in v && el.dataset.keep === "1") el.value = v.value;
    }
    if (focusId) {
      const el = document.getElementById(focusId);
      if (el && root.contains(el)) el.focus({ preventScroll: true });
    }
  }

  // Put a freshly built table in place by patching the one already shown: rows are matched
  // by data-key and a cell is replaced only when its markup changed. A poll that changes
  // nothing touches nothing, so nothing moves under the pointer or loses focus.
  function patchTable(container, fresh) {
    const old = container.querySelector("table");
    if (!old || old.id !== fresh.id || old.tHead === null || fresh.tHead === null
        || old.rows.length === 0 || !old.tBodies[0] || !fresh.tBodies[0]) {
      container.replaceChildren(fresh);
      return;
    }
    if (old.tHead.outerHTML !== fresh.tHead.outerHTML) old.replaceChild(fresh.tHead, old.tHead);
    const body = old.tBodies[0];
    const byKey = new Map();
    for (const tr of [...body.rows]) byKey.set(tr.dataset.key || "", tr);
    const wanted = [];
    for (const tr of [...fresh.tBodies[0].rows]) {
      const key = tr.dataset.key;
      const prev = key !== undefined ? byKey.get(key) : undefined;
      if (!prev || prev.cells.length !== tr.cells.length) { wanted.push(tr); continue; }
      byKey.delete(key);
      if (prev.className !== tr.className) prev.className = tr.className;
      const cells = [...tr.cells];
      cells.forEach((td, i) => {
        const was = prev.cells[i];
        if (was.outerHTML !== td.outerHTML) prev.replaceChild(td, was);
      });
      wanted.push(prev);
    }
    for (const tr of byKey.values()) tr.remove();
    wanted.forEach((tr, i) => {
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
    });
  }

  // ---------------------------------------------------------------- status badges

  const STATUS_STYLE = {
    up: ["st-up", "▲"],
    down: ["st-down", "▼"],
    "down for maintenance": ["st-maintenance", "◆"],
    ejected: ["st-down", "⊘"], // "ejected (passive)": passive outlier detection
    draining: ["st-draining", "◐"],
    drained: ["st-drained", "○"],
    disabled: ["st-disabled", "■"],
    unknown: ["st-unknown", "?"],
    removing: ["st-removing", "✕"],
  };

  function badge(status) {
    const base = String(status).split(" (")[0];
    const [cls, sym] = STATUS_STYLE[base] || ["st-unknown", "?"];
    return h("span", { class: "badge " + cls, "data-status": base },
      h("span", { class: "sym", "aria-hidden": "true" }, sym), status);
  }

  function summaryBadge(status, count) {
    const el = badge(status);
    el.lastChild.textContent = count + " " + status;
    return el;
  }

  // ---------------------------------------------------------------- messages

  function messages(box, items) {
    box.replaceChildren();
    for (const item of items) {
      box.append(h("p", { class: item.ok ? "ok-msg" : "err-msg", role: item.ok ? "status" : "alert" }, item.text));
    }
  }

  // ---------------------------------------------------------------- dialogs

  function openDialog(id, targetsText, prepare) {
    const dlg = document.getElementById(id);
    const form = dlg.querySelector("form");
    form.reset();
    for (const el of dlg.querySelectorAll("[data-error-for]")) el.hidden = true;
    const targets = dlg.querySelector(".dlg-targets");
    if (targets) targets.textContent = targetsText;
    if (prepare) prepare(dlg);
    dlg.returnValue = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => {
        resolve(dlg.returnValue === "ok" ? new FormData(form) : null);
      }, { once: true });
      dlg.showModal();
    });
  }

  function confirmDialog(title, text, okLabel) {
    return openDialog("dlg-confirm", "", (dlg) => {
      dlg.querySelector("h2").textContent = title;
      dlg.querySelector("#dlg-confirm-text").textContent = text;
      dlg.querySelector("button[type=submit]").textContent = okLabel || "Confirm";
    }).then((fd) => fd !== null);
  }

  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-close]");
    if (btn) btn.closest("dialog").close("cancel");
  });

  // ---------------------------------------------------------------- header, live indicator

  function setLive(on, text) {
    state.sseOpen = on;
    const el = document.getElementById("live");
    el.className = "live " + (on ? "live-on" : "live-off");
    el.replaceChildren(h("span", { "aria-hidden": "true" }, on ? "●" : "○"), " " + text);
  }

  function updateSiteBadge() {
    const on = siteMaintenanceOn();
    document.getElementById("site-maint").hidden = !on;
  }

  // This node's link to etcd (GET /cluster): a banner while it is stale or down.
  async function loadCluster() {
    const c = await api("GET", "/cluster");
    const box = document.getElementById("cluster-banner");
    const cut = c.link === "stale" || c.link === "down";
    box.hidden = !cut;
    if (cut) {
      box.textContent = "This node (" + c.node + ") has not heard from etcd for " +
        Number(c.lag_seconds).toFixed(1) + " s (" + c.link + (c.error ? ": " + c.error : "") +
        "): what you see may be out of date, and changes are refused unless made on this node only (--local).";
    }
    // the nodes' health checks disagree: "web/b2: down on node B (up on A)"
    const differ = c.disagreements || [];
    const health = document.getElementById("cluster-health");
    health.hidden = differ.length === 0;
    health.textContent = differ.length === 0 ? "" : "Health differs between nodes: " + differ.map((d) => {
      const parts = Object.entries(d.verdicts).filter(([, v]) => v !== "up").map(([n, v]) => v + " on node " + n);
      const up = Object.entries(d.verdicts).filter(([, v]) => v === "up").map(([n]) => n);
      return d.server + ": " + parts.join(", ") + (up.length ? " (up on " + up.join(", ") + ")" : "");
    }).join("; ");
  }

  function siteMaintenanceOn() {
    const v = state.flags[SITE_FLAG];
    return v === true || v === "true" || v === "on";
  }

  // ---------------------------------------------------------------- the pools view

  const poolsView = {
    title: "Pools",
    mount(main) {
      state.openSettings.clear();
      this.msgs = h("div", { class: "messages", "aria-live": "polite" });
      this.body = h("div", { class: "table-wrap" });
      main.append(
        h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Pools"),
          h("span", { class: "muted", id: "pools-count" })),
        this.msgs, this.body);
    },
    async refresh() {
      await Promise.all([loadPools(), state.monitors.length ? null : loadMonitors()]);
      preserving(this.body, () => this.draw());
    },
    draw() {
      document.getElementById("pools-count").textContent = plural(state.pools.length, "pool");
      const rows = [];
      for (const p of state.pools) {
        const open = state.openSettings.has(p.name);
        const pid = idSafe(p.name);
        const pct = p.total ? Math.round((100 * p.eligible) / p.total) : 0;
        const bar = h("span", { class: "eligible-bar", "aria-hidden": "true" });
        const fill = h("span");
        fill.style.width = pct + "%";
        bar.append(fill);
        rows.push(h("tr", { "data-pool": p.name, "data-key": "pool:" + p.name },
          cell({ "data-label": "Pool" },
            h("a", { href: "#/servers?pool=" + enc(p.name), class: "pool-link" }, h("strong", null, p.name)),
            h("div", { class: "small" }, h("a", { href: "#/pool/" + enc(p.name), class: "traffic-link",
              "aria-label": "Traffic of pool " + p.name }, "Traffic chart"))),
          cell({ "data-label": "Eligible", class: "nowrap" },
            h("span", { class: "eligible" }, p.eligible + "/" + p.total), bar,
            p.available === false ? h("div", null, badge("down"), h("span", { class: "small" }, " no server available")) : null),
          cell({ "data-label": "Mode" },
            p.mode === "active_standby" ? "active-standby" : "balanced",
            p.mode === "active_standby" ? h("div", { class: "small muted" }, "primary: " + (p.primary || "none")) : null,
            h("div", { class: "small muted" }, p.algorithm)),
          cell({ "data-label": "Health", class: "health" }, poolSummary(p.summary)),
          cell({ "data-label": "Sessions", class: "num" }, p.sessions),
          cell({ "data-label": "Health monitors" },
            p.healthmonitors && p.healthmonitors.length ? p.healthmonitors.map((m) => h("span", { class: "tag" }, m)) : h("span", { class: "muted" }, "none")),
          cell({ "data-label": "Settings" },
            h("button", { type: "button", class: "btn btn-small", id: "settings-" + pid,
              "aria-expanded": open ? "true" : "false", "aria-controls": "settings-row-" + pid,
              onclick: () => { this.toggle(p.name); } }, open ? "Hide settings" : "Settings"))));
        if (open) rows.push(this.settingsRow(p, pid));
      }
      patchTable(this.body, h("table", { class: "cards", id: "pools-table" },
        h("caption", { class: "sr-only" }, "Pools with their eligible and total servers, mode and health"),
        h("thead", null, h("tr", null,
          h("th", { scope: "col" }, "Pool"), h("th", { scope: "col" }, "Eligible / total"),
          h("th", { scope: "col" }, "Mode"), h("th", { scope: "col" }, "Health"),
          h("th", { scope: "col", class: "num" }, "Sessions"), h("th", { scope: "col" }, "Health monitors"),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Settings")))),
        h("tbody", null, rows)));
    },
    toggle(name) {
      if (state.openSettings.has(name)) state.openSettings.delete(name);
      else state.openSettings.add(name);
      preserving(this.body, () => this.draw());
    },
    settingsRow(p, pid) {
      const attached = p.healthmonitors || [];
      const free = state.monitors.map((m) => m.name).filter((n) => !attached.includes(n));
      const msg = h("div", { class: "messages", id: "settings-msg-" + pid, "aria-live": "polite" });
      const list = h("ul", { class: "monitor-list" }, attached.length
        ? attached.map((m) => h("li", null, h("span", { class: "tag" }, m), " ",
          isAdmin() ? h("button", { type: "button", class: "btn btn-small", id: "detach-" + pid + "-" + idSafe(m),
            "aria-label": "Remove monitor " + m + " from pool " + p.name,
            onclick: () => this.setMonitors(p, attached.filter((x) => x !== m), msg) }, "Remove") : null))
        : h("li", { class: "muted" }, "No active monitor: servers are treated as up."));
      const controls = [];
      if (isAdmin()) {
        const sel = h("select", { id: "add-monitor-" + pid, "data-keep": "1" },
          h("option", { value: "" }, free.length ? "— choose a monitor —" : "— no other monitor —"),
          free.map((n) => h("option", { value: n }, n)));
        controls.push(h("div", { class: "filters" },
          h("label", null, "Add active monitor ", sel),
          h("button", { type: "button", class: "btn btn-primary", id: "add-monitor-btn-" + pid,
            onclick: () => {
              if (!sel.value) { messages(msg, [{ ok: false, text: "Choose a monitor to add." }]); return; }
              this.setMonitors(p, [...attached, sel.value], msg);
            } }, "Add")));
      }
      return h("tr", { class: "detail-row", id: "settings-row-" + pid, "data-key": "settings:" + p.name },
        h("td", { colspan: "7", class: "wide" },
          h("h2", null, "Settings: " + p.name),
          h("dl", { class: "kv" },
            h("dt", null, "Algorithm"), h("dd", null, p.algorithm),
            h("dt", null, "Minimum servers up"), h("dd", null, p.min_servers_up),
            h("dt", null, "Graceful disable timeout"), h("dd", null, fmtSeconds(p.graceful_disable_timeout))),
          h("h3", null, "Active health monitors"), list, controls, msg));
    },
    async setMonitors(p, names, msg) {
      try {
        await api("PUT", "/pools/" + enc(p.name) + "/healthmonitors", { healthmonitors: names });
        await this.refresh();
        const box = document.getElementById("settings-msg-" + idSafe(p.name));
        if (box) messages(box, [{ ok: true, text: "Pool " + p.name + " monitors: " + (names.join(", ") || "none") }]);
      } catch (e) {
        if (e.status !== 401) messages(msg, [{ ok: false, text: e.detail }]);
      }
    },
  };

  function poolSummary(summary) {
    const order = ["up", "down", "down for maintenance", "draining", "drained", "disabled", "removing", "unknown"];
    const keys = Object.keys(summary || {}).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    if (!keys.length) return h("span", { class: "muted" }, "no servers");
    return h("span", { class: "summary" }, keys.map((k) => summaryBadge(k, summary[k])));
  }

  // ---------------------------------------------------------------- the servers view

  // One page of servers at a time (issue 21): the view holds only the rows it shows, fetched
  // as GET /servers?pool=&limit=&offset= on every refresh (route, event, poll); the pool
  // filter, the page and its size are in the URL (#/servers?pool=web&page=2&size=200).
  const PAGE_SIZES = [50, 100, 200, 500];
  const PAGE_SIZE = 100;
  const serversView = {
    title: "Servers",
    mount(main, params) {
      this.pool = params.get("pool") || "";
      const size = Number(params.get("size"));
      this.size = PAGE_SIZES.includes(size) ? size : PAGE_SIZE;
      const page = Number(params.get("page"));
      this.offset = Number.isInteger(page) && page > 1 ? (page - 1) * this.size : 0;
      this.total = 0;
      this.seq = 0;
      state.servers = [];
      this.msgs = h("div", { class: "messages", id: "server-messages" });
      this.poolSel = h("select", { id: "server-pool-filter" }, h("option", { value: "" }, "All pools"));
      this.poolSel.addEventListener("change", () => this.go(this.poolSel.value, 0, this.size));
      this.sizeSel = h("select", { id: "server-page-size" },
        PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === this.size }, String(n))));
      this.sizeSel.addEventListener("change", () => {
        const n = Number(this.sizeSel.value);
        this.go(this.pool, Math.floor(this.offset / n) * n, n);
      });
      this.prevBtn = h("button", { type: "button", class: "btn btn-small", id: "servers-prev",
        onclick: () => this.go(this.pool, Math.max(0, this.offset - this.size), this.size) }, "‹ Previous");
      this.nextBtn = h("button", { type: "button", class: "btn btn-small", id: "servers-next",
        onclick: () => this.go(this.pool, this.offset + this.size, this.size) }, "Next ›");
      this.range = h("span", { id: "servers-range", "aria-live": "polite" });
      this.pager = h("nav", { class: "pager", "aria-label": "Pages of servers" },
        this.prevBtn, this.range, this.nextBtn, h("label", { class: "small" }, "Per page ", this.sizeSel));
      this.body = h("div", { class: "table-wrap" });
      const head = h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Servers"),
        h("label", { class: "filters" }, "Pool ", this.poolSel));
      main.append(head);
      if (isAdmin()) {
        this.addBtn = h("button", { type: "button", class: "btn btn-primary", id: "add-server-toggle",
          "aria-expanded": "false", "aria-controls": "add-server-panel", onclick: () => this.toggleAdd() }, "Add server");
        head.append(this.addBtn);
        main.append(this.buildAddForm());
        this.count = h("span", { class: "count", id: "selected-count", "aria-live": "polite" }, "0 selected");
        const act = (id, label, kind, cls) => h("button", { type: "button", class: "btn " + (cls || ""), id,
          onclick: () => this.action(kind) }, label);
        this.buttons = [
          act("act-disable", "Disable", "disable", "btn-danger"),
          act("act-graceful", "Gracefully", "graceful"),
          act("act-maintenance", "Maintenance", "maintenance"),
          act("act-enable", "Enable", "enable", "btn-primary"),
        ];
        main.append(h("div", { class: "toolbar", role: "toolbar", "aria-label": "Actions on selected servers" },
          this.count, this.buttons));
      }
      main.append(this.msgs, this.pager, this.body);
    },
    // Another pool, page or page size: the URL says it, the selection (which only ever holds
    // servers shown) is dropped, and that page is fetched.
    go(pool, offset, size) {
      this.pool = pool;
      this.offset = offset;
      this.size = size;
      state.selected.clear();
      const q = new URLSearchParams();
      if (pool) q.set("pool", pool);
      if (offset >= size) q.set("page", String(Math.floor(offset / size) + 1));
      if (size !== PAGE_SIZE) q.set("size", String(size));
      history.replaceState(null, "", "#/servers" + (q.toString() ? "?" + q : ""));
      this.prevBtn.disabled = this.nextBtn.disabled = true;
      refreshView("page").then(() => tickView());
    },
    async refresh() {
      const seq = ++this.seq;
      await loadPools();
      if (this.pool && !state.pools.some((p) => p.name === this.pool)) this.pool = "";
      let page = await loadServerPage(this.pool, this.offset, this.size);
      if (page.rows.length === 0 && this.offset > 0 && page.total > 0) {
        // past the end (servers were removed, or an old link): the last page
        this.offset = Math.floor((page.total - 1) / this.size) * this.size;
        page = await loadServerPage(this.pool, this.offset, this.size);
      }
      if (seq !== this.seq) return; // a newer refresh (another page) has begun
      state.servers = page.rows;
      this.total = page.total;
      const known = new Set(state.servers.map(keyOf));
      for (const k of [...state.selected]) if (!known.has(k)) state.selected.delete(k);
      this.drawPoolOptions();
      this.drawPager();
      preserving(this.body, () => this.draw());
    },
    drawPager() {
      const n = state.servers.length;
      this.range.textContent = n
        ? "Servers " + (this.offset + 1).toLocaleString() + "–" + (this.offset + n).toLocaleString()
          + " of " + this.total.toLocaleString()
        : plural(this.total, "server");
      this.prevBtn.disabled = this.offset === 0;
      this.nextBtn.disabled = this.offset + n >= this.total;
      this.pager.hidden = this.total <= PAGE_SIZES[0] && this.offset === 0;
      this.sizeSel.value = String(this.size);
    },
    drawPoolOptions() {
      const names = state.pools.map((p) => p.name);
      if (this.addPool) {
        const have = [...this.addPool.options].map((o) => o.value);
        if (names.join("\n") !== have.join("\n")) {
          const keep = this.addPool.value;
          this.addPool.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
          if (names.includes(keep)) this.addPool.value = keep;
        }
      }
      const current = [...this.poolSel.options].slice(1).map((o) => o.value);
      if (names.join("\n") !== current.join("\n")) {
        this.poolSel.replaceChildren(h("option", { value: "" }, "All pools"), ...names.map((n) => h("option", { value: n }, n)));
      }
      this.poolSel.value = names.includes(this.pool) ? this.pool : "";
    },
    visible() {
      return state.servers;
    },
    draw() {
      const rows = this.visible();
      const admin = isAdmin();
      const selectedVisible = rows.filter((s) => state.selected.has(keyOf(s))).length;
      const head = [];
      if (admin) {
        head.push(h("th", { scope: "col", class: "sel" }, h("input", {
          type: "checkbox", id: "select-all", "aria-label": "Select all servers",
          checked: rows.length > 0 && selectedVisible === rows.length,
          indeterminate: selectedVisible > 0 && selectedVisible < rows.length,
          onchange: (ev) => {
            for (const s of rows) {
              if (ev.target.checked) state.selected.add(keyOf(s));
              else state.selected.delete(keyOf(s));
            }
            preserving(this.body, () => this.draw());
          },
        })));
      }
      head.push(
        h("th", { scope: "col" }, "Server"), h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Admin · Oper"), h("th", { scope: "col", class: "num" }, "Conns"),
        h("th", { scope: "col" }, "Traffic (60 s)"),
        h("th", { scope: "col" }, "Last check"), h("th", { scope: "col" }, "Admin state"));
      if (admin) head.push(h("th", { scope: "col" }, "Server actions"));
      const body = rows.map((s) => this.row(s, admin));
      const table = h("table", { class: "cards", id: "servers-table" },
        h("caption", { class: "sr-only" }, "Servers with their displayed status, both state axes and connections"),
        h("thead", null, h("tr", null, head)),
        h("tbody", null, body.length ? body : h("tr", null, h("td", { colspan: String(head.length), class: "muted" }, "No servers."))));
      patchTable(this.body, table);
      if (admin) {
        const n = [...state.selected].length;
        this.count.textContent = n + " selected";
        for (const b of this.buttons) b.disabled = n === 0;
      }
    },
    row(s, admin) {
      const key = keyOf(s);
      const sel = state.selected.has(key);
      const cells = [];
      if (admin) {
        cells.push(h("td", { class: "sel" }, h("input", {
          type: "checkbox", id: "sel-" + idSafe(key), "aria-label": "Select " + key, checked: sel,
          onchange: (ev) => {
            if (ev.target.checked) state.selected.add(key); else state.selected.delete(key);
            preserving(this.body, () => this.draw());
          },
        })));
      }
      cells.push(
        cell({ "data-label": "Server" },
          h("div", null, h("strong", { class: "server-name" }, s.name),
            s.backup ? h("span", { class: "tag" }, "backup") : null,
            s.primary ? h("span", { class: "tag" }, "primary") : null),
          h("div", { class: "small muted" }, s.pool + " · ", h("span", { class: "mono" }, s.address),
            " · weight " + s.weight)),
        cell({ "data-label": "Status", class: "status" }, badge(s.status),
          h("div", { class: "small muted" }, s.eligible ? "eligible" : "not eligible"),
          s.admin === "drain" || /^(draining|drained|removing)/.test(s.status)
            ? h("div", { class: "small" }, h("a", { href: "#/drain/" + enc(s.pool) + "/" + enc(s.name), class: "drain-link",
              "aria-label": "Drain chart of " + key }, "Drain chart")) : null),
        cell({ "data-label": "Admin · Oper", class: "axes" },
          h("div", { class: "nowrap" }, h("span", { class: "muted small" }, "admin "), h("span", { class: "admin-axis" }, s.admin)),
          h("div", { class: "nowrap" }, h("span", { class: "muted small" }, "oper "), h("span", { class: "oper-axis" }, s.oper))),
        cell({ "data-label": "Connections", class: "num conns" }, String(s.connections),
          s.requests_in_flight ? h("div", { class: "small muted" }, s.requests_in_flight + " in flight") : null,
          // a postgresql or mysql service's sessions by state (docs/database.md); "tls": a
          // mysql session the relay cannot follow, drained at connection level
          s.sessions ? h("div", { class: "small muted sessions" }, s.sessions.idle + " idle · "
            + s.sessions.transaction + " in transaction · " + s.sessions.query + " running"
            + (s.sessions.tls ? " · " + s.sessions.tls + " TLS (connection-level drain)" : "")) : null),
        cell({ "data-label": "Traffic (60 s)", class: "traffic" }, sparks(key, s)),
        cell({ "data-label": "Last check", class: "check" }, lastChecks(s)),
        cell({ "data-label": "Admin state", class: "adminstate" }, adminState(s)));
      if (admin) {
        // The handlers look the server up by key when clicked: patchTable keeps an unchanged
        // cell (and its listeners) across polls, so they must not hold on to this poll's `s`.
        const kid = idSafe(key);
        cells.push(cell({ "data-label": "Server actions", class: "row-actions" },
          h("button", { type: "button", class: "btn btn-small", id: "srv-edit-" + kid, "aria-label": "Edit " + key,
            onclick: () => this.edit(key) }, "Edit"),
          h("button", { type: "button", class: "btn btn-small", id: "srv-remove-" + kid, "aria-label": "Remove " + key,
            onclick: () => this.remove(key) }, "Remove")));
      }
      return h("tr", { "data-server": key, "data-key": key, class: sel ? "selected" : "" }, cells);
    },
    selectedServers() {
      return state.servers.filter((s) => state.selected.has(keyOf(s)));
    },
    // Once a second: the last minute of the shown servers (one request a pool on the page, for
    // the page's slice of that pool), then each row's sparklines replaced in place (the rest of
    // the table is left alone).
    async tick() {
      const slices = this.poolSlices();
      await Promise.all(slices.map(async ([pool, from, count]) => {
        let data;
        try {
          data = await api("GET", "/series/servers?pool=" + enc(pool) + "&seconds=" + SPARK_SECONDS
            + "&offset=" + from + "&limit=" + count);
        } catch (e) {
          if (e.status === 404) return; // before the first tick
          throw e;
        }
        for (const [name, cols] of Object.entries(data.servers || {})) state.spark[pool + "/" + name] = { t: data.t, ...cols };
      }));
      const byKey = new Map(state.servers.map((s) => [keyOf(s), s]));
      for (const tr of this.body.querySelectorAll("#servers-table tr[data-server]")) {
        const box = tr.querySelector("td.traffic .cell");
        if (box) box.replaceChildren(...sparks(tr.dataset.server, byKey.get(tr.dataset.server)));
      }
    },
    // [pool, offset in the pool, count] of each pool on the page. Filtered, the page is the
    // pool's; across pools (config order, as GET /servers pages them) a pool's first row is
    // at the page's offset less the servers of the pools before it (GET /pools' totals).
    poolSlices() {
      const count = new Map();
      for (const s of state.servers) count.set(s.pool, (count.get(s.pool) || 0) + 1);
      if (this.pool) return count.has(this.pool) ? [[this.pool, this.offset, count.get(this.pool)]] : [];
      const start = new Map();
      let before = 0;
      for (const p of state.pools) { start.set(p.name, before); before += p.total || 0; }
      return [...count].map(([pool, n]) => [pool, Math.max(0, this.offset - (start.get(pool) || 0)), n]);
    },
    // ------------------------------------------------ add, edit, remove (issue 14, item 2)
    buildAddForm() {
      const errSlot = (name) => h("p", { class: "field-error", id: "add-err-" + name, "data-error-for": name, hidden: true });
      const field = (name, label, hint, input) => {
        input.id = "add-" + name;
        input.name = name;
        input.setAttribute("aria-describedby", "add-err-" + name);
        return h("div", { class: "field" },
          h("label", { for: input.id }, label, hint ? h("span", { class: "small muted" }, " " + hint) : null),
          input, errSlot(name));
      };
      this.addPool = h("select", null);
      const form = h("form", { class: "panel server-form", id: "add-server", novalidate: true, "aria-labelledby": "add-server-title" },
        h("h2", { id: "add-server-title" }, "Add a server to a pool"),
        h("div", { class: "grid" },
          field("pool", "Pool", null, this.addPool),
          field("name", "Name", "(letters, digits, . _ : -)", h("input", { type: "text", autocomplete: "off", spellcheck: "false" })),
          field("address", "Address", "(host:port)", h("input", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "10.0.0.5:8080" })),
          field("weight", "Weight", "(0–256)", h("input", { type: "text", inputmode: "numeric", autocomplete: "off", value: "1" })),
          h("div", { class: "field field-check" },
            h("label", { class: "check" }, h("input", { type: "checkbox", id: "add-backup", name: "backup", "aria-describedby": "add-err-backup" }),
              "Backup server", h("span", { class: "small muted" }, "(used when no other server is eligible)")),
            errSlot("backup"))),
        h("p", { class: "small muted" }, "The server joins the pool enabled. When the pool has health monitors it takes traffic once its checks pass."),
        h("div", { class: "form-errors", id: "add-server-errors" }),
        h("div", { class: "form-buttons" },
          h("button", { type: "submit", class: "btn btn-primary", id: "add-server-submit" }, "Add to pool"),
          h("button", { type: "button", class: "btn", id: "add-server-cancel", onclick: () => this.toggleAdd(false) }, "Cancel")));
      form.addEventListener("submit", (ev) => { ev.preventDefault(); this.addServer(form); });
      form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { ev.preventDefault(); this.toggleAdd(false); } });
      this.addForm = form;
      this.addPanel = h("div", { id: "add-server-panel", hidden: true }, form);
      return this.addPanel;
    },
    toggleAdd(open) {
      const show = open === undefined ? this.addPanel.hidden : open;
      this.addPanel.hidden = !show;
      this.addBtn.setAttribute("aria-expanded", String(show));
      if (show) {
        if (this.pool && [...this.addPool.options].some((o) => o.value === this.pool)) this.addPool.value = this.pool;
        clearProblems(this.addForm, document.getElementById("add-server-errors"));
        document.getElementById("add-name").focus();
      } else {
        this.addBtn.focus();
      }
    },
    async addServer(form) {
      const errors = document.getElementById("add-server-errors");
      clearProblems(form, errors);
      const val = (name) => String(form.elements.namedItem(name).value).trim();
      const pool = this.addPool.value;
      const body = { name: val("name"), address: val("address"), backup: form.elements.namedItem("backup").checked };
      const weight = val("weight");
      if (weight !== "") body.weight = /^-?\d+$/.test(weight) ? Number(weight) : weight;
      if (!pool) {
        showProblems(form, errors, [{ field: "pool", msg: "Choose a pool." }], "add-", "No pool to add to");
        return;
      }
      let view;
      try {
        view = await api("POST", "/pools/" + enc(pool) + "/servers", body);
      } catch (e) {
        if (e.status === 401) return;
        showProblems(form, errors, apiProblems(e), "add-", "The balancer did not add " + (body.name || "the server") + " (" + e.status + ")");
        return;
      }
      const key = view ? keyOf(view) : pool + "/" + body.name;
      messages(this.msgs, [{ ok: true, text: "Added " + key + " (" + body.address + ", weight " + (view ? view.weight : body.weight)
        + (body.backup ? ", backup" : "") + ")." }]);
      form.reset();
      this.addPool.value = pool;
      this.toggleAdd(false);
      await this.refresh();
    },
    edit(key) {
      const s = state.servers.find((x) => keyOf(x) === key);
      if (!s) return;
      const dlg = document.getElementById("dlg-server-edit");
      const form = dlg.querySelector("form");
      const errors = dlg.querySelector(".dlg-error");
      form.reset();
      clearProblems(form, errors);
      dlg.querySelector(".dlg-targets").textContent = key;
      const address = form.elements.namedItem("address");
      const weight = form.elements.namedItem("weight");
      const backup = form.elements.namedItem("backup");
      address.value = s.address;
      weight.value = String(s.weight);
      backup.checked = Boolean(s.backup);
      form.onsubmit = async (ev) => {
        ev.preventDefault();
        clearProblems(form, errors);
        const body = {};
        const a = address.value.trim();
        const w = weight.value.trim();
        if (a !== s.address) body.address = a;
        if (w !== String(s.weight)) body.weight = /^-?\d+$/.test(w) ? Number(w) : w;
        if (backup.checked !== Boolean(s.backup)) body.backup = backup.checked;
        if (!Object.keys(body).length) {
          dlg.close("cancel");
          messages(this.msgs, [{ ok: true, text: key + ": nothing to change." }]);
          return;
        }
        const reason = String(form.elements.namedItem("reason").value).trim();
        if (reason) body.reason = reason;
        let res;
        try {
          res = await api("PATCH", serverPath(s), body);
        } catch (e) {
          if (e.status === 401) return;
          showProblems(form, errors, apiProblems(e), "edit-", "The balancer did not change " + key + " (" + e.status + ")");
          return;
        }
        dlg.close("ok");
        const changed = Object.entries((res && res.changed) || {}).map(([k, [from, to]]) => k + " " + from + " → " + to);
        messages(this.msgs, [{ ok: true, text: key + ": " + (changed.length ? changed.join(", ") : "nothing changed") + "." }]);
        await this.refresh();
      };
      dlg.showModal();
    },
    remove(key) {
      const s = state.servers.find((x) => keyOf(x) === key);
      if (!s) return;
      const dlg = document.getElementById("dlg-server-remove");
      const form = dlg.querySelector("form");
      const errors = dlg.querySelector(".dlg-error");
      form.reset();
      clearProblems(form, errors);
      dlg.querySelector(".dlg-targets").textContent = key;
      document.getElementById("dlg-server-remove-state").textContent = "Now " + s.status + ", "
        + plural(s.connections || 0, "live connection") + ".";
      const pool = state.pools.find((p) => p.name === s.pool);
      const t = pool ? pool.graceful_disable_timeout : null;
      dlg.querySelector(".pool-timeout").textContent = t === null || t === undefined || t < 0 ? "none: it waits" : fmtSeconds(t);
      const removableNow = !s.connections && (s.admin === "maintenance" || s.admin === "drain");
      document.getElementById(removableNow ? "remove-now" : "remove-drain").checked = true;
      form.onsubmit = async (ev) => {
        ev.preventDefault();
        clearProblems(form, errors);
        const drain = form.elements.namedItem("how").value === "drain";
        const q = new URLSearchParams();
        if (drain) q.set("drain", "true");
        const reason = String(form.elements.namedItem("reason").value).trim();
        if (reason) q.set("reason", reason);
        if (form.elements.namedItem("force_guard").checked) q.set("force_guard", "true");
        let res;
        try {
          res = await api("DELETE", serverPath(s) + (q.toString() ? "?" + q : ""));
        } catch (e) {
          if (e.status === 401) return;
          const now = state.servers.find((x) => keyOf(x) === key) || s;
          errors.replaceChildren(h("p", { class: "err-msg" }, removalRefusal(now, e)));
          return;
        }
        dlg.close("ok");
        let text;
        if (res && res.removed) text = key + " removed.";
        else text = key + ": being removed once its connections end (shown “removing (N)”). Enable it to cancel.";
        messages(this.msgs, [{ ok: true, text }]);
        await this.refresh();
      };
      dlg.showModal();
    },
    async action(kind) {
      const targets = this.selectedServers();
      if (!targets.length) return;
      const names = targets.map(keyOf).join(", ");
      const conns = targets.reduce((n, s) => n + (s.connections || 0), 0);
      let verb = kind;
      let body;
      if (kind === "enable") {
        body = { reason: "" };
      } else if (kind === "disable") {
        const fd = await openDialog("dlg-disable", names, (dlg) => {
          dlg.querySelector(".dlg-warning").textContent = "Disabling immediately closes every connection to "
            + (targets.length === 1 ? "this server" : "these servers") + " now (" + plural(conns, "live connection") + ").";
        });
        if (!fd) return;
        body = { graceful: false, reason: fd.get("reason") || "", force_guard: fd.has("force_guard") };
      } else if (kind === "graceful") {
        const fd = await openDialog("dlg-graceful", names);
        if (!fd) return;
        body = { graceful: true, reason: fd.get("reason") || "", force_guard: fd.has("force_guard") };
        if (fd.get("mode") === "timeout") {
          const minutes = Number(fd.get("minutes"));
          if (!Number.isFinite(minutes) || minutes < 0) {
            messages(this.msgs, [{ ok: false, text: "Enter a number of minutes (0 or more)." }]);
            return;
          }
          const ok = await confirmDialog("Close remaining connections?",
            "Connections still open after " + minutes + " minute" + (minutes === 1 ? "" : "s")
            + " will be closed (" + plural(conns, "live connection") + " now on " + names + ").",
            "Disable gracefully");
          if (!ok) return;
          body.timeout = Math.round(minutes * 60 * 1000) / 1000;
        } else {
          body.timeout = -1;
        }
        verb = "disable";
      } else if (kind === "maintenance") {
        const fd = await openDialog("dlg-maint", names);
        if (!fd) return;
        body = { reason: fd.get("reason") || "", force: fd.has("force"), force_guard: fd.has("force_guard") };
        const dur = String(fd.get("for") || "").trim();
        const until = String(fd.get("until") || "").trim();
        if (dur) body.for = dur;
        if (until) {
          const t = new Date(until);
          if (Number.isNaN(t.getTime())) {
            messages(this.msgs, [{ ok: false, text: "The expiry date is not a date." }]);
            return;
          }
          body.until = t.toISOString();
        }
        const ok = await confirmDialog("Put in maintenance?",
          body.force
            ? "All " + plural(conns, "live connection") + " on " + names + " will be closed now."
            : "Idle keep-alive connections on " + names + " are closed now and busy ones at their next request boundary"
              + " (a database session: at its transaction boundary; " + plural(conns, "live connection") + ").",
          "Set maintenance");
        if (!ok) return;
      }
      const results = [];
      for (const s of targets) {
        try {
          const res = await api("POST", serverPath(s) + "/" + verb, body);
          let text = (res && res.message) || verb + " accepted";
          if (!text.includes(keyOf(s))) text = keyOf(s) + ": " + text;
          results.push({ ok: true, text: text + (res && res.closed ? " (" + plural(res.closed, "connection") + " closed)" : "") });
        } catch (e) {
          if (e.status === 401) return;
          results.push({ ok: false, text: keyOf(s) + ": " + e.detail });
        }
      }
      messages(this.msgs, results);
      await this.refresh();
    },
  };

  // The four sparklines of a server (req/s, errors, p99, connections), each with its last
  // value as text beside it; "no data yet" before the first series tick (and for a server past
  // the first 200 of its pool: GET /series/servers answers a page).
  const SPARKS = [["requests", "req/s", "", "c0"], ["errors", "errors", "", "c3"], ["p99_ms", "p99", " ms", "c2"], ["connections", "conns", "", "c1"]];
  function sparks(key, s) {
    const d = state.spark[key];
    if (!d || !d.t || !d.t.length) return [h("span", { class: "muted small" }, "no data yet")];
    // the server's last admin change as a mark (the event that started its drain, say)
    const marks = s && s.since ? [{ t: s.since, text: "admin " + s.admin + " since " + fmtTime(s.since) + (s.actor ? " by " + s.actor : "") }] : [];
    return SPARKS.map(([field, label, unit, cls]) => {
      const values = d[field] || [];
      const known = values.filter((v) => v !== null && v !== undefined);
      const last = known.length ? known[known.length - 1] : null;
      return h("div", { class: "spark-row", "data-field": field },
        h("span", { class: "spark-label small muted", "aria-hidden": "true" }, label),
        Q.sparkline(values, d.t, { label: key + " " + label, unit, cls, width: 64, height: 20, marks, points: false }),
        h("span", { class: "spark-value small", "aria-hidden": "true" }, Q.num(last) + (last === null ? "" : unit)));
    });
  }

  // Each monitor's last check in words, then its recent checks (the server keeps ten) as a
  // strip of results and a sparkline of their latency.
  function lastChecks(s) {
    const latest = new Map();
    const recent = new Map();
    for (const c of s.last_checks || []) {
      const prev = latest.get(c.monitor);
      if (!prev || c.at >= prev.at) latest.set(c.monitor, c);
      if (!recent.has(c.monitor)) recent.set(c.monitor, []);
      recent.get(c.monitor).push(c);
    }
    const monitors = Object.keys(s.monitors || {});
    if (!monitors.length && !latest.size) return h("span", { class: "muted" }, "unmonitored");
    const out = [];
    for (const m of monitors.length ? monitors : [...latest.keys()]) {
      const c = latest.get(m);
      if (!c) { out.push(h("div", { class: "small" }, h("span", { class: "muted" }, m + ": "), "no check yet")); continue; }
      out.push(h("div", { class: "small last-check", "data-monitor": m },
        h("span", { class: "muted" }, m + ": "),
        h("strong", null, c.verdict), " ",
        h("span", { class: "mono reason-code" }, c.reason),
        c.status_code ? " · " + c.status_code : "",
        " · " + (c.latency_ms !== null && c.latency_ms !== undefined ? Math.round(c.latency_ms * 10) / 10 + " ms" : "—"),
        h("span", { class: "muted" }, " · " + fmtTime(c.at))));
      const checks = recent.get(m).sort((a, b) => a.at - b.at);
      const what = s.pool + "/" + s.name + " " + m;
      out.push(h("div", { class: "check-strip", "data-monitor": m },
        Q.strip(checks.map((x) => ({ kind: x.verdict, text: fmtTime(x.at) + " " + x.verdict + " " + x.reason
          + (x.status_code ? " " + x.status_code : "") + " · " + Q.num(x.latency_ms) + " ms" })), what + " checks"),
        Q.sparkline(checks.map((x) => x.latency_ms), checks.map((x) => x.at),
          { label: what + " check latency", unit: " ms", cls: "c4", width: 60, height: 14 })));
    }
    return out;
  }

  function adminState(s) {
    if (s.admin === "enabled" && !s.reason && !s.expires) {
      return s.actor ? h("span", { class: "muted" }, "enabled by " + s.actor) : "—";
    }
    const items = [];
    if (s.reason) items.push(h("dt", null, "Reason"), h("dd", { class: "admin-reason" }, s.reason));
    if (s.actor) items.push(h("dt", null, "Actor"), h("dd", null, s.actor + (s.cause ? " (" + s.cause + ")" : "")));
    if (s.since) items.push(h("dt", null, "Since"), h("dd", null, fmtTime(s.since)));
    if (s.deadline) items.push(h("dt", null, "Deadline"), h("dd", null, fmtTime(s.deadline) + " (" + relative(s.deadline) + ")"));
    if (s.expires) items.push(h("dt", null, "Expires"), h("dd", null, fmtTime(s.expires) + " (" + relative(s.expires) + ")"));
    return h("dl", { class: "kv" }, items);
  }

  // ------------------------------------------------ the API's problems in dashboard words

  // [{field, msg}] from an ApiError: a 422's problems ("address: 'x' is not an address (want
  // host:port)") or its detail joined with "; "; a 409 on a name ("name: pool 'web' already
  // has a server named 'web1'"). Anything else is one problem without a field.
  function apiProblems(e) {
    const b = e.body || {};
    const list = Array.isArray(b.problems) ? b.problems.map(String)
      : e.status === 422 ? String(e.detail || "").split("; ") : [String(e.detail || "")];
    return list.map((text) => {
      const m = /^([A-Za-z_]+): (.*)$/s.exec(text);
      return m ? { field: m[1], msg: plainWords(m[1], m[2]) } : { field: "", msg: text };
    });
  }

  const FIELD_WORDS = { name: "Name", address: "Address", weight: "Weight", backup: "Backup", pool: "Pool", priority: "Priority" };

  function plainWords(field, msg) {
    let m;
    if ((m = /^(.*) is not an address \(want (host:port|\[v6addr\]:port)\)$/.exec(msg))) {
      return m[1] === "''" ? "Enter an address as host:port, e.g. 10.0.0.5:8080."
        : m[1] + " is not an address: write it as host:port, e.g. 10.0.0.5:8080.";
    }
    if ((m = /^(.*): port (.*) is not a number$/.exec(msg))) return "The port in " + m[1] + " is not a number.";
    if ((m = /^port (\d+) is out of range$/.exec(msg))) return "Port " + m[1] + " is out of range (the highest is 65535).";
    if ((m = /^Input should be less than or equal to (\S+)$/.exec(msg))) return "Must be " + m[1] + " or less.";
    if ((m = /^Input should be greater than or equal to (\S+)$/.exec(msg))) return "Must be " + m[1] + " or more.";
    if (/^Input should be a valid integer/.test(msg)) return "Must be a whole number.";
    if (/^Input should be a valid boolean/.test(msg)) return "Must be yes or no.";
    if (/^String should match pattern/.test(msg)) return "Use only letters, digits and . _ : - (no spaces).";
    if (/^String should have at least 1 character/.test(msg) || msg === "Field required") {
      return field === "address" ? "Enter an address as host:port, e.g. 10.0.0.5:8080." : "Required.";
    }
    if ((m = /^String should have at most (\d+) characters?$/.exec(msg))) return "At most " + m[1] + " characters.";
    return msg.charAt(0).toUpperCase() + msg.slice(1);
  }

  function clearProblems(form, box) {
    if (box) box.replaceChildren();
    for (const el of form.querySelectorAll("[data-error-for]")) { el.hidden = true; el.textContent = ""; }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  // Each problem next to its field (the input gets aria-invalid and already points at the slot
  // with aria-describedby) and all of them in an alert under the form.
  function showProblems(form, box, problems, idPrefix, title) {
    let first = null;
    const items = [];
    for (const p of problems) {
      const slot = p.field ? form.querySelector('[data-error-for="' + CSS.escape(p.field) + '"]') : null;
      if (slot) {
        slot.textContent = (slot.textContent ? slot.textContent + " " : "") + p.msg;
        slot.hidden = false;
        const input = document.getElementById(idPrefix + p.field);
        if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
      }
      items.push(h("li", null, p.field ? (FIELD_WORDS[p.field] || p.field) + ": " : null, p.msg));
    }
    box.replaceChildren(h("div", { class: "err-msg", role: "alert" }, h("strong", null, title + ":"), h("ul", null, items)));
    if (first) first.focus();
  }

  // DELETE's 409 in plain words (docs/admin.md: only a server in maintenance, or drained with
  // no connection left, is removed now; the drain may be refused by min_servers_up).
  function removalRefusal(s, e) {
    const key = keyOf(s);
    const detail = String(e.detail || "");
    if (/Only servers in maintenance mode can be deleted/.test(detail)) {
      return key + " is " + s.status + ", so it cannot be removed now: only a server in maintenance, or drained with no "
        + "connection left, can. Choose “Drain, then remove”, or put it in maintenance first.";
    }
    if (/still has connections/.test(detail)) {
      return key + " still has open connections (" + (s.connections || 0) + " now). Wait until they end, or choose “Drain, then remove”.";
    }
    if (/min_servers_up/.test(detail)) {  // the guard (the CLI adds its own flag hint)
      return detail.replace(/\s*\(override with --force-guard, API force_guard\)/, "")
        + ". Tick “Override the pool's minimum-servers guard” to drain it anyway.";
    }
    if (e.status === 404) return key + " is gone already (removed meanwhile).";
    return detail;
  }

  // ---------------------------------------------------------------- health monitors

  const monitorsView = {
    title: "Health monitors",
    mount(main) {
      this.msgs = h("div", { class: "messages" });
      this.body = h("div", { class: "table-wrap" });
      main.append(h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Health monitors"),
        isAdmin() ? h("a", { class: "btn btn-primary", href: "#/monitors/new", id: "create-monitor", role: "button" }, "Create") : null),
      this.msgs, this.body);
    },
    async refresh() {
      await Promise.all([loadMonitors(), loadPools()]);
      preserving(this.body, () => this.draw());
    },
    draw() {
      const usedBy = (name) => state.pools.filter((p) => (p.healthmonitors || []).includes(name)).map((p) => p.name);
      const rows = state.monitors.map((m) => {
        const sub = m[SUBOBJECT[m.type]] || {};
        const codes = sub.maintenance_code || [];
        const mstr = sub.maintenance_response;
        const pools = usedBy(m.name);
        return h("tr", { "data-monitor": m.name, "data-key": m.name },
          cell({ "data-label": "Name" }, h("a", { href: "#/monitors/" + enc(m.name) }, h("strong", null, m.name)),
            m.description ? h("div", { class: "small muted" }, m.description) : null),
          cell({ "data-label": "Type" }, m.type),
          cell({ "data-label": "Send interval", class: "num" }, fmtSeconds(m.send_interval)),
          cell({ "data-label": "Receive timeout", class: "num" }, fmtSeconds(m.receive_timeout)),
          cell({ "data-label": "Up / down after" }, m.successful_checks + " / " + m.failed_checks + " checks"),
          cell({ "data-label": "Server maintenance mode" },
            codes.length || mstr
              ? [codes.length ? h("div", null, "codes ", codes.map((c) => h("span", { class: "tag" }, c))) : null,
                mstr ? h("div", null, "string ", h("span", { class: "mono" }, JSON.stringify(mstr))) : null]
              : h("span", { class: "muted" }, "off")),
          cell({ "data-label": "Pools" }, pools.length ? pools.map((p) => h("span", { class: "tag" }, p)) : h("span", { class: "muted" }, "none")),
          cell({ "data-label": "Edit" },
            h("a", { class: "btn btn-small", role: "button", href: "#/monitors/" + enc(m.name), id: "edit-" + idSafe(m.name),
              "aria-label": (isAdmin() ? "Edit " : "View ") + m.name }, isAdmin() ? "Edit" : "View")));
      });
      patchTable(this.body, h("table", { class: "cards", id: "monitors-table" },
        h("caption", { class: "sr-only" }, "Health monitor templates"),
        h("thead", null, h("tr", null, ["Name", "Type", "Send interval", "Receive timeout", "Up / down after",
          "Server maintenance mode", "Pools"].map((t) => h("th", { scope: "col" }, t)),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Edit")))),
        h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: "8", class: "muted" }, "No health monitors.")))));
    },
  };

  const editorView = {
    title: "Health monitor",
    mount(main, params, name) {
      this.name = name;
      this.isNew = name === null;
      this.main = main;
      this.loaded = false;
      main.append(h("p", { class: "muted" }, "Loading…"));
    },
    async refresh() {
      if (this.loaded) return; // never overwrite what is being typed; reload on entry only
      if (!state.pools.length) await loadPools().catch(() => {});
      if (!state.types) state.types = await api("GET", "/healthmonitor-types").catch(() => []);
      let m = { type: "http", send_interval: 10, receive_timeout: 4, successful_checks: 2, failed_checks: 2, monitor_port: 0, description: "" };
      if (!this.isNew) {
        try {
          m = await api("GET", "/healthmonitors/" + enc(this.name));
        } catch (e) {
          this.main.replaceChildren(h("h1", null, "Health monitor"), h("p", { class: "err-msg", role: "alert" }, e.detail),
            h("a", { href: "#/monitors" }, "Back to health monitors"));
          this.loaded = true;
          return;
        }
      }
      this.loaded = true;
      this.monitor = m;
      this.draw(m);
    },
    draw(m) {
      const ro = !isAdmin();
      const sub = m[SUBOBJECT[m.type]] || {};
      const field = (name, label, value, opts = {}) => {
        const id = "hm-" + name;
        const input = opts.textarea
          ? h("textarea", { id, name, rows: "2", readonly: ro, spellcheck: "false" })
          : h("input", { id, name, type: opts.type || "text", autocomplete: "off", readonly: ro,
            inputmode: opts.inputmode || null, "aria-describedby": "err-" + name });
        if (opts.type === "checkbox") { input.checked = Boolean(value); input.disabled = ro; }
        else input.value = value === null || value === undefined ? "" : String(value);
        if (opts.textarea) input.setAttribute("aria-describedby", "err-" + name);
        const err = h("span", { class: "field-error", id: "err-" + name, "data-error-for": name, hidden: true });
        if (opts.type === "checkbox") return h("div", { class: "field" }, h("label", { class: "check" }, input, label), err);
        return h("div", { class: "field" }, h("label", null, label, opts.hint ? h("span", { class: "small muted" }, " " + opts.hint) : null, input), err);
      };
      const typeSel = h("select", { id: "hm-type", name: "type", disabled: ro || !this.isNew ? true : null },
        MONITOR_TYPES.map((t) => h("option", { value: t, selected: t === m.type }, t)));
      const codes = sub.maintenance_code || [];
      const codeInputs = [0, 1, 2, 3].map((i) => h("input", {
        type: "text", inputmode: "numeric", id: "hm-maintenance_code-" + i, name: "maintenance_code",
        "aria-label": "Maintenance code " + (i + 1), value: codes[i] === undefined ? "" : String(codes[i]), readonly: ro,
      }));
      this.errors = h("div", { class: "form-errors", id: "hm-errors" });
      this.msgs = h("div", { class: "messages", id: "hm-messages" });
      const httpSection = h("fieldset", { class: "sec-http", "data-types": "http https" },
        h("legend", null, "HTTP"),
        field("http_request", "Client request data", sub.http_request ?? "GET / HTTP/1.0", { hint: "(first line: METHOD /path HTTP/1.x)" }),
        field("exact_http_request", "Send the request exactly as written", sub.exact_http_request, { type: "checkbox" }),
        field("http_response_code", "Response codes", (sub.http_response_code || ["2xx"]).join(", "), { hint: "(2xx-style classes, any, or exact codes; comma-separated)" }),
        field("http_response", "Server response data", sub.http_response, { hint: "(must appear in the first 2 KB)" }));
      const httpsSection = h("fieldset", { class: "sec-https", "data-types": "https" },
        h("legend", null, "HTTPS"),
        field("sni", "SNI server name", sub.sni),
        field("verify", "Verify the server's certificate", sub.verify === undefined ? true : sub.verify, { type: "checkbox" }),
        field("ca", "CA bundle file", sub.ca));
      const tcpSection = h("fieldset", { class: "sec-tcp", "data-types": "tcp" },
        h("legend", null, "TCP"),
        field("tcp_request", "Client request data", sub.tcp_request),
        field("tcp_response", "Server response data", sub.tcp_response));
      const udpSection = h("fieldset", { class: "sec-udp", "data-types": "udp" },
        h("legend", null, "UDP"),
        field("udp_request", "Client request data", sub.udp_request),
        field("udp_response", "Server response data", sub.udp_response));
      const maintSection = h("fieldset", { class: "sec-maint", id: "maintenance-mode", "data-types": "http https tcp udp" },
        h("legend", null, "Server maintenance mode"),
        h("div", { class: "field", "data-types": "http https" },
          h("div", { id: "codes-label" }, "Maintenance server response codes ", h("span", { class: "small muted" }, "(up to four, 101–599)")),
          h("div", { class: "codes", role: "group", "aria-labelledby": "codes-label" }, codeInputs),
          h("span", { class: "field-error", id: "err-maintenance_code", "data-error-for": "maintenance_code", hidden: true })),
        field("maintenance_response", "Maintenance server response data", sub.maintenance_response, { hint: "(found in the first 2 KB: down for maintenance)" }));
      const nameField = this.isNew
        ? field("name", "Name", "", {})
        : h("div", { class: "field" }, h("span", { class: "muted" }, "Name "), h("strong", null, m.name));
      const form = h("form", { class: "editor panel", id: "monitor-form", novalidate: true },
        h("div", { class: "grid" },
          nameField,
          h("div", { class: "field" }, h("label", null, "Type", typeSel)),
          h("p", { class: "small muted full" },
            h("span", { id: "hm-type-desc", "aria-live": "polite" }),
            this.isNew ? null : " The type of a saved monitor does not change; create another one."),
          field("send_interval", "Send interval", m.send_interval, { hint: "(seconds, or 500ms / 10s / 1m)" }),
          field("receive_timeout", "Receive timeout", m.receive_timeout, { hint: "(below the send interval)" }),
          field("successful_checks", "Successful checks", m.successful_checks, { inputmode: "numeric" }),
          field("failed_checks", "Failed checks", m.failed_checks, { inputmode: "numeric" }),
          field("monitor_port", "Health monitor port", m.monitor_port, { inputmode: "numeric", hint: "(0 = the server's port)" })),
        field("description", "Description", m.description),
        httpSection, httpsSection, tcpSection, udpSection, maintSection,
        this.errors,
        ro ? null : h("div", { class: "form-buttons" },
          h("button", { type: "submit", class: "btn btn-primary", id: "hm-save" }, "Save"),
          h("a", { href: "#/monitors", class: "btn", role: "button" }, "Cancel"),
          this.isNew ? null : h("button", { type: "button", class: "btn btn-danger", id: "hm-delete", onclick: () => this.remove() }, "Delete")),
        this.msgs);
      const showSections = () => {
        const t = typeSel.value;
        const info = (state.types || []).find((x) => x.type === t);
        form.querySelector("#hm-type-desc").textContent = info && info.description ? info.description : "";
        for (const el of form.querySelectorAll("[data-types]")) {
          const on = el.dataset.types.split(" ").includes(t);
          el.hidden = !on;
          for (const input of el.querySelectorAll("input, textarea, select")) input.disabled = !on || (ro && input.type === "checkbox");
        }
      };
      typeSel.addEventListener("change", showSections);
      form.addEventListener("submit", (ev) => { ev.preventDefault(); if (!ro) this.save(form, typeSel.value); });
      const pools = state.pools.filter((p) => (p.healthmonitors || []).includes(m.name)).map((p) => p.name);
      setKids(this.main,
        h("div", { class: "view-head" },
          h("h1", { tabindex: "-1" }, this.isNew ? "Create health monitor" : (ro ? "Health monitor: " : "Edit health monitor: ") + m.name),
          h("a", { href: "#/monitors" }, "All health monitors")),
        this.isNew ? null : h("p", { class: "muted" }, "Used by pools: " + (pools.join(", ") || "none") + ". Attach it from a pool's Settings in Pools."),
        form);
      showSections();
    },
    body(form, type) {
      const val = (name) => {
        const el = form.elements.namedItem(name);
        return el ? el.value : "";
      };
      const num = (text) => {
        const t = String(text).trim();
        if (t === "") return null;
        return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
      };
      const opt = (text) => (String(text).trim() === "" ? null : String(text));
      const out = {
        type,
        send_interval: num(val("send_interval")),
        receive_timeout: num(val("receive_timeout")),
        successful_checks: num(val("successful_checks")),
        failed_checks: num(val("failed_checks")),
        monitor_port: num(val("monitor_port")),
        description: val("description"),
      };
      const subName = SUBOBJECT[type];
      if (subName) {
        // Start from what the API gave us so fields the form does not show (client_cert…) survive.
        const old = this.monitor && this.monitor.type === type ? this.monitor[subName] || {} : {};
        const sub = { ...old };
        if (type === "http" || type === "https") {
          sub.http_request = val("http_request");
          sub.exact_http_request = form.elements.namedItem("exact_http_request").checked;
          sub.http_response_code = val("http_response_code").split(",").map((c) => c.trim()).filter(Boolean).map((c) => (/^\d+$/.test(c) ? Number(c) : c));
          sub.http_response = opt(val("http_response"));
          sub.maintenance_code = [0, 1, 2, 3].map((i) => document.getElementById("hm-maintenance_code-" + i).value.trim())
            .filter(Boolean).map((c) => (/^\d+$/.test(c) ? Number(c) : c));
        }
        if (type === "https") {
          sub.sni = opt(val("sni"));
          sub.verify = form.elements.namedItem("verify").checked;
          sub.ca = opt(val("ca"));
        }
        if (type === "tcp") {
          sub.tcp_request = opt(val("tcp_request"));
          sub.tcp_response = opt(val("tcp_response"));
        }
        if (type === "udp") {
          sub.udp_request = val("udp_request");
          sub.udp_response = opt(val("udp_response"));
        }
        // the maintenance string is a field of these types only (postgresql, grpc: their own)
        if (["http", "https", "tcp", "udp"].includes(type)) sub.maintenance_response = opt(val("maintenance_response"));
        out[subName] = sub;
      }
      return out;
    },
    clearErrors(form) {
      this.errors.replaceChildren();
      this.msgs.replaceChildren();
      for (const el of form.querySelectorAll("[data-error-for]")) { el.hidden = true; el.textContent = ""; }
      for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    },
    showErrors(form, e) {
      // The API's 422 answers: {"detail": "..."} or a list of {loc|path, msg|message}.
      const items = [];
      const b = e.body || {};
      const list = Array.isArray(b.problems) ? b.problems : Array.isArray(b.errors) ? b.errors : Array.isArray(b.detail) ? b.detail : null;
      if (list) {
        for (const it of list) {
          if (typeof it === "string") {
            // "healthmonitors.web.http_monitor.maintenance_code: at most 4 …"
            const cut = it.indexOf(": ");
            const path = cut > 0 ? it.slice(0, cut) : "";
            items.push({ parts: path.split(".").filter(Boolean), msg: cut > 0 ? it.slice(cut + 2) : it });
            continue;
          }
          const path = it.path !== undefined ? it.path : it.loc;
          const parts = Array.isArray(path) ? path.map(String) : String(path || "").split(/[.\/]/);
          const msg = it.message || it.msg || JSON.stringify(it);
          items.push({ parts: parts.filter((p) => p !== "body" && p !== ""), msg });
        }
      } else {
        items.push({ parts: [], msg: e.detail });
      }
      const summary = [];
      for (const it of items) {
        const pathText = it.parts.join(".");
        const fieldName = [...it.parts].reverse().find((p) => form.querySelector('[data-error-for="' + CSS.escape(p) + '"]'));
        if (fieldName) {
          const slot = form.querySelector('[data-error-for="' + CSS.escape(fieldName) + '"]');
          slot.textContent = (slot.textContent ? slot.textContent + "; " : "") + it.msg;
          slot.hidden = false;
          const input = document.getElementById("hm-" + fieldName) || document.getElementById("hm-" + fieldName + "-0");
          if (input) input.setAttribute("aria-invalid", "true");
        }
        summary.push(h("li", null, pathText ? h("span", { class: "mono" }, pathText + ": ") : null, it.msg));
      }
      this.errors.replaceChildren(h("div", { class: "err-msg", role: "alert" },
        h("strong", null, "The balancer refused this monitor (" + e.status + "):"), h("ul", null, summary)));
    },
    async save(form, type) {
      this.clearErrors(form);
      const body = this.body(form, type);
      let name = this.name;
      try {
        if (this.isNew) {
          name = form.elements.namedItem("name").value.trim();
          await api("POST", "/healthmonitors", { name, ...body });
        } else {
          await api("PUT", "/healthmonitors/" + enc(name), body);
        }
      } catch (e) {
        if (e.status === 401) return;
        this.showErrors(form, e);
        return;
      }
      await loadMonitors();
      if (this.isNew) {
        location.hash = "#/monitors/" + enc(name);
        return;
      }
      this.monitor = state.monitors.find((m) => m.name === name) || this.monitor;
      messages(this.msgs, [{ ok: true, text: "Saved health monitor " + name + ": the next check uses it." }]);
    },
    async remove() {
      const ok = await confirmDialog("Delete health monitor?", "Delete " + this.name + "? A monitor attached to a pool cannot be deleted.", "Delete");
      if (!ok) return;
      try {
        await api("DELETE", "/healthmonitors/" + enc(this.name));
        location.hash = "#/monitors";
      } catch (e) {
        if (e.status !== 401) messages(this.msgs, [{ ok: false, text: e.detail }]);
      }
    },
  };

  // ---------------------------------------------------------------- events

  const eventsView = {
    title: "Events",
    mount(main) {
      this.rows = [];
      this.paused = false;
      this.buffer = [];
      this.lastId = 0;
      const poolSel = h("select", { id: "ev-pool", name: "pool" }, h("option", { value: "" }, "All pools"));
      const kindSel = h("select", { id: "ev-kind", name: "kind" }, h("option", { value: "" }, "All kinds"), EVENT_KINDS.map((k) => h("option", { value: k }, k)));
      const causeSel = h("select", { id: "ev-cause", name: "cause" }, h("option", { value: "" }, "All causes"), CAUSES.map((k) => h("option", { value: k }, k)));
      const server = h("input", { type: "text", id: "ev-server", name: "server", autocomplete: "off", class: "short" });
      this.filters = { poolSel, kindSel, causeSel, server };
      const form = h("form", { class: "filters", role: "search", "aria-label": "Filter events" },
        h("label", null, "Pool ", poolSel), h("label", null, "Server ", server),
        h("label", null, "Kind ", kindSel), h("label", null, "Cause ", causeSel),
        h("button", { type: "submit", class: "btn" }, "Apply"));
      form.addEventListener("submit", (ev) => { ev.preventDefault(); this.reload(); });
      for (const el of [poolSel, kindSel, causeSel]) el.addEventListener("change", () => this.reload());
      this.pauseBtn = h("button", { type: "button", class: "btn", id: "ev-pause", "aria-pressed": "false",
        onclick: () => this.togglePause() }, "Pause");
      this.status = h("span", { class: "muted", id: "ev-status", "aria-live": "polite" });
      this.tbody = h("tbody", { id: "events-body" });
      main.append(
        h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Events"), this.pauseBtn, this.status),
        h("div", { class: "panel" }, form),
        h("div", { class: "table-wrap" }, h("table", { class: "cards", id: "events-table" },
          h("caption", { class: "sr-only" }, "Events, newest first"),
          h("thead", null, h("tr", null, ["Time", "Kind", "Pool / server", "Change", "Cause", "Actor", "Reason", "Detail", "Eligible", "Sessions"]
            .map((t) => h("th", { scope: "col" }, t)))),
          this.tbody)));
      loadPools().then(() => {
        poolSel.append(...state.pools.map((p) => h("option", { value: p.name }, p.name)));
      }).catch(() => {});
      this.reload();
    },
    async refresh() {
      // Without the live stream, poll for what is new.
      if (state.sseOpen || this.paused) return;
      const data = await api("GET", "/events?" + this.query(this.lastId));
      for (const ev of data || []) this.onEvent(ev);
    },
    query(afterId) {
      const q = new URLSearchParams();
      const f = this.filters;
      if (f.poolSel.value) q.set("pool", f.poolSel.value);
      if (f.server.value.trim()) q.set("server", f.server.value.trim());
      if (f.kindSel.value) q.set("kind", f.kindSel.value);
      if (afterId) q.set("after_id", String(afterId));
      q.set("limit", "200");
      return q.toString();
    },
    matches(ev) {
      const f = this.filters;
      return (!f.poolSel.value || ev.pool === f.poolSel.value)
        && (!f.server.value.trim() || ev.server === f.server.value.trim())
        && (!f.kindSel.value || ev.kind === f.kindSel.value)
        && (!f.causeSel.value || ev.cause === f.causeSel.value);
    },
    async reload() {
      let data;
      try {
        data = (await api("GET", "/events?" + this.query(0))) || [];
      } catch (e) {
        if (e.status !== 401) this.status.textContent = "Could not load events: " + e.detail;
        return;
      }
      this.tbody.replaceChildren();
      this.rows = [];
      for (const ev of data) this.lastId = Math.max(this.lastId, ev.id || 0);
      const shown = data.filter((ev) => this.matches(ev)).reverse();
      this.tbody.append(...shown.map((ev) => this.row(ev, false)));
      this.rows = shown;
      this.status.textContent = plural(shown.length, "event") + " shown";
    },
    onEvent(ev) {
      if (ev.id && ev.id <= this.lastId && this.rows.some((r) => r.id === ev.id)) return;
      if (ev.id) this.lastId = Math.max(this.lastId, ev.id);
      if (!this.matches(ev)) return;
      if (this.paused) {
        this.buffer.push(ev);
        this.pauseBtn.textContent = "Resume (" + this.buffer.length + " new)";
        return;
      }
      this.rows.unshift(ev);
      this.tbody.prepend(this.row(ev, true));
      while (this.tbody.rows.length > MAX_EVENTS) this.tbody.deleteRow(-1);
      this.status.textContent = plural(Math.min(this.rows.length, MAX_EVENTS), "event") + " shown";
    },
    togglePause() {
      this.paused = !this.paused;
      this.pauseBtn.setAttribute("aria-pressed", String(this.paused));
      this.pauseBtn.textContent = this.paused ? "Resume" : "Pause";
      if (!this.paused) {
        const pending = this.buffer;
        this.buffer = [];
        for (const ev of pending) this.onEvent(ev);
      }
    },
    row(ev, fresh) {
      const change = ev.from || ev.to
        ? [h("span", null, ev.from || "—"), h("span", { class: "ev-arrow", "aria-label": "to" }, " → "), h("span", null, ev.to || "—")]
        : "—";
      return h("tr", { class: fresh ? "ev-new" : "", "data-kind": ev.kind, "data-id": ev.id,
        "data-server": ev.pool && ev.server ? ev.pool + "/" + ev.server : null },
        cell({ "data-label": "Time", class: "nowrap" }, fmtTime(ev.time)),
        cell({ "data-label": "Kind", class: "ev-kind" }, ev.kind),
        cell({ "data-label": "Pool / server" }, [ev.pool, ev.server].filter(Boolean).join(" / ") || "—"),
        cell({ "data-label": "Change", class: "ev-change" }, change),
        cell({ "data-label": "Cause" }, ev.cause || "—"),
        cell({ "data-label": "Actor" }, ev.actor || "—"),
        cell({ "data-label": "Reason" }, ev.reason || "—"),
        cell({ "data-label": "Detail", class: "small" }, eventDetail(ev.detail)),
        cell({ "data-label": "Eligible", class: "num" }, ev.eligible ?? "—"),
        cell({ "data-label": "Sessions", class: "num" }, ev.sessions ?? "—"));
    },
  };

  const TIME_KEYS = new Set(["deadline", "expires", "since", "until"]);

  function eventDetail(detail) {
    if (!detail || typeof detail !== "object") return "—";
    const parts = [];
    const order = ["monitor", "reason", "status_code", "latency_ms", "error", "closed", "force", "flag"];
    const skip = new Set(["at"]);
    const keys = Object.keys(detail).sort((a, b) => {
      const ia = order.indexOf(a); const ib = order.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    });
    for (const k of keys) {
      const v = detail[k];
      if (v === null || v === undefined || v === "" || skip.has(k)) continue;
      let text = typeof v === "object" ? JSON.stringify(v) : String(v);
      if (TIME_KEYS.has(k) && typeof v === "number") text = fmtTime(v);
      parts.push(h("span", { class: "tag" }, k === "latency_ms" ? text + " ms" : k + ": " + text));
    }
    return parts.length ? parts : "—";
  }

  // ---------------------------------------------------------------- flags

  const flagsView = {
    title: "Flags",
    mount(main) {
      this.msgs = h("div", { class: "messages", id: "flag-messages" });
      this.site = h("div", { class: "panel", id: "site-panel" });
      this.body = h("div", { class: "table-wrap" });
      main.append(h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Flags")), this.msgs, this.site, this.body);
      if (isAdmin()) {
        const name = h("input", { type: "text", id: "new-flag-name", autocomplete: "off", required: true, "data-keep": "1" });
        const value = h("input", { type: "text", id: "new-flag-value", autocomplete: "off", value: "true", "data-keep": "1" });
        const form = h("form", { class: "filters panel", id: "add-flag", "aria-label": "Set a flag" },
          h("label", null, "Flag name ", name),
          h("label", null, "Value ", h("span", { class: "small muted" }, "(true, false or text)"), value),
          h("button", { type: "submit", class: "btn btn-primary" }, "Set flag"));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          if (!name.value.trim()) { messages(this.msgs, [{ ok: false, text: "Enter a flag name." }]); return; }
          await this.put(name.value.trim(), parseFlagValue(value.value));
          name.value = "";
        });
        main.append(h("h2", null, "Set a flag"), form);
      }
    },
    async refresh() {
      await loadFlags();
      preserving(this.site, () => this.drawSite());
      preserving(this.body, () => this.draw());
    },
    drawSite() {
      const on = siteMaintenanceOn();
      const label = "Site-wide maintenance";
      const stateText = h("span", { class: "badge " + (on ? "st-maintenance" : "st-up") },
        h("span", { class: "sym", "aria-hidden": "true" }, on ? "◆" : "▲"), on ? "ON: maintenance page served" : "OFF: serving normally");
      const children = [h("h2", null, label), h("p", { class: "muted" },
        "Flag ", h("code", null, SITE_FLAG), ": rules that test it serve the maintenance page for the whole site.")];
      if (isAdmin()) {
        children.push(h("button", { type: "button", role: "switch", class: "switch site-switch", id: "site-maintenance",
          "aria-checked": String(on), "aria-label": label,
          onclick: () => this.toggleSite(on) },
        h("span", { class: "track", "aria-hidden": "true" }), h("span", { class: "state" }, on ? "On" : "Off")), " ", stateText);
      } else {
        children.push(stateText);
      }
      this.site.replaceChildren(...children);
    },
    async toggleSite(on) {
      if (!on) {
        const ok = await confirmDialog("Turn on site-wide maintenance?",
          "Requests matched by maintenance rules will get the maintenance page instead of a server.", "Turn on");
        if (!ok) return;
      }
      await this.put(SITE_FLAG, !on);
    },
    draw() {
      const names = Object.keys(state.flags).sort();
      const admin = isAdmin();
      const rows = names.map((n) => {
        const v = state.flags[n];
        const isBool = typeof v === "boolean" || v === "true" || v === "false";
        const on = v === true || v === "true";
        const fid = idSafe(n);
        let control;
        if (!admin) control = h("span", { class: "mono" }, String(v));
        else if (isBool) {
          control = h("button", { type: "button", role: "switch", class: "switch", id: "flag-" + fid, "aria-checked": String(on),
            "aria-label": "Flag " + n, onclick: () => this.put(n, !on) },
          h("span", { class: "track", "aria-hidden": "true" }), h("span", { class: "state" }, on ? "true" : "false"));
        } else {
          const input = h("input", { type: "text", id: "flag-value-" + fid, value: String(v), "aria-label": "Value of flag " + n, "data-keep": "1" });
          control = h("span", { class: "filters" }, input,
            h("button", { type: "button", class: "btn btn-small", onclick: () => this.put(n, parseFlagValue(input.value)) }, "Save"));
        }
        return h("tr", { "data-flag": n, "data-key": n },
          cell({ "data-label": "Flag" }, h("strong", { class: "mono" }, n)),
          cell({ "data-label": "Value" }, control),
          admin ? cell({ "data-label": "Clear" }, h("button", { type: "button", class: "btn btn-small", id: "clear-" + fid,
            "aria-label": "Clear flag " + n, onclick: () => this.clear(n) }, "Clear")) : null);
      });
      patchTable(this.body, h("table", { class: "cards", id: "flags-table" },
        h("caption", { class: "sr-only" }, "Runtime flags"),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "Flag"), h("th", { scope: "col" }, "Value"),
          admin ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Clear")) : null)),
        h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: "3", class: "muted" }, "No flags set.")))));
    },
    async put(name, value) {
      try {
        await api("PUT", "/flags/" + enc(name), { value, reason: "" });
        messages(this.msgs, [{ ok: true, text: "Flag " + name + " = " + value }]);
      } catch (e) {
        if (e.status !== 401) messages(this.msgs, [{ ok: false, text: "Flag " + name + ": " + e.detail }]);
      }
      await this.refresh();
    },
    async clear(name) {
      try {
        await api("DELETE", "/flags/" + enc(name));
        messages(this.msgs, [{ ok: true, text: "Flag " + name + " cleared" }]);
      } catch (e) {
        if (e.status !== 401) messages(this.msgs, [{ ok: false, text: "Flag " + name + ": " + e.detail }]);
      }
      await this.refresh();
    },
  };

  function parseFlagValue(text) {
    const t = String(text).trim();
    if (t === "true" || t === "on") return true;
    if (t === "false" || t === "off") return false;
    return t;
  }

  // ---------------------------------------------------------------- routing and the live loop

  const VIEWS = { pools: poolsView, servers: serversView, monitors: monitorsView, events: eventsView, flags: flagsView };

  // What traffic.js (the chart views) uses of this file; it adds its views to VIEWS.
  window.quiesceDashboard = {
    h, cell, setKids, api, enc, badge, plural, idSafe, fmtTime, fmtSpan, relative, fmtSeconds,
    preserving, patchTable, state, isAdmin, views: VIEWS,
  };

  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    let name = parts[0] || "pools";
    if (!(name in VIEWS)) name = "pools";
    let view = VIEWS[name];
    let arg = parts.slice(1);
    if (name === "monitors" && parts[1]) {
      view = editorView;
      arg = parts[1] === "new" ? null : parts[1];
    }
    for (const a of document.querySelectorAll("nav a[data-view]")) {
      if (a.dataset.view === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const main = document.getElementById("main");
    main.replaceChildren();
    state.view = view;
    state.viewName = name;
    view.mount(main, params, arg);
    document.title = (typeof view.title === "function" ? view.title() : view.title) + " · quiesce";
    refreshView("route").then(() => {
      tickView();
      const heading = main.querySelector("h1");
      const typing = document.activeElement && document.activeElement.closest && document.activeElement.closest("main input, main select, main textarea");
      if (heading && !typing) heading.focus({ preventScroll: true });
    });
  }

  // One refresh at a time: a refresh asked for while one runs (a poll, a burst of events, a
  // click on the next page) is done once, after it, so a slow answer never piles requests up.
  let refreshing = null;
  let refreshAgain = false;
  function refreshView(reason) {
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = (async () => {
      try {
        do {
          refreshAgain = false;
          await refreshOnce(reason);
        } while (refreshAgain);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function refreshOnce(reason) {
    const view = state.view;
    if (!view) return;
    try {
      await view.refresh(reason);
    } catch (e) {
      if (e.status === 401) return;
      const main = document.getElementById("main");
      let box = document.getElementById("load-error");
      if (!box) {
        box = h("p", { id: "load-error", class: "err-msg", role: "alert" });
        main.prepend(box);
      }
      box.textContent = "Could not refresh: " + e.detail;
      return;
    }
    const box = document.getElementById("load-error");
    if (box) box.remove();
  }

  let pending = null;
  // The charts' 1 s tick: one at a time (a tick that takes longer than a second delays the
  // next one instead of piling up requests), only while the page is visible.
  let ticking = false;
  async function tickView() {
    const view = state.view;
    if (ticking || document.hidden || !view || typeof view.tick !== "function") return;
    ticking = true;
    try {
      await view.tick();
    } catch (e) {
      if (e.status !== 401 && state.view === view) {
        let box = document.getElementById("load-error");
        if (!box) {
          box = h("p", { id: "load-error", class: "err-msg", role: "alert" });
          document.getElementById("main").prepend(box);
        }
        box.textContent = "Could not read the live series: " + e.detail;
      }
    } finally {
      ticking = false;
    }
  }

  function scheduleRefresh(ev) {
    if (state.view === eventsView) return; // events stream in directly
    if (state.view === editorView) return;
    if (state.viewName === "flags" && ev && ev.kind !== "flag_change") return;
    if (pending) return;
    pending = setTimeout(() => { pending = null; refreshView("event"); }, 150);
  }

  function startStream() {
    if (typeof EventSource === "undefined") { setLive(false, "polling"); return; }
    const es = new EventSource(API + "/events/stream");
    es.onopen = () => setLive(true, "live");
    const onMessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (!ev || typeof ev !== "object" || !ev.kind) return;
      if (ev.kind === "flag_change") loadFlags().catch(() => {});
      if (ev.kind === "node_isolated" || ev.kind === "node_rejoined") loadCluster().catch(() => {});
      if (state.view === eventsView) eventsView.onEvent(ev);
      scheduleRefresh(ev);
    };
    // The API names each SSE event after its kind ("event: oper_change"); unnamed ones arrive
    // as "message".
    es.addEventListener("message", onMessage);
    for (const kind of EVENT_KINDS) es.addEventListener(kind, onMessage);
    es.onerror = () => {
      setLive(false, es.readyState === EventSource.CLOSED ? "offline · polling" : "reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        // The stream gave up (e.g. the session ended): check who we are, then retry.
        api("GET", "/whoami").then(() => setTimeout(startStream, POLL_MS)).catch(() => {});
      }
    };
  }

  async function main() {
    try {
      state.me = await api("GET", "/whoami");
    } catch (e) {
      if (e.status !== 401) {
        document.getElementById("main").replaceChildren(h("p", { class: "err-msg", role: "alert" }, "Cannot reach the balancer: " + e.detail));
      }
      return;
    }
    document.body.classList.add(isAdmin() ? "role-admin" : "role-read-only");
    document.getElementById("who").textContent = state.me.user + " (" + (isAdmin() ? "admin" : "read-only") + ")";
    document.getElementById("logout").addEventListener("click", async () => {
      try { await api("POST", "/logout"); } catch (e) { /* leaving anyway */ }
      sessionStorage.removeItem("quiesce_csrf");
      location.href = "/login";
    });
    loadFlags().catch(() => {});
    loadCluster().catch(() => {});
    window.addEventListener("hashchange", route);
    route();
    startStream();
    setInterval(() => {
      if (document.hidden) return;
      loadCluster().catch(() => {});
      if (state.view === poolsView || state.view === serversView || (state.view === eventsView && !state.sseOpen)) refreshView("poll");
      else if (state.view && state.view.poll) refreshView("poll");
    }, POLL_MS);
    setInterval(tickView, TICK_MS);
  }

  // After every deferred script (charts.js before this file, traffic.js after it) has run.
  document.addEventListener("DOMContentLoaded", main);
})();

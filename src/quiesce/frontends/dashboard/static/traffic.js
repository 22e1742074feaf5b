// quiesce dashboard: the traffic views, drawn with charts.js from the live series.
//
//   #/pool/NAME          a pool's requests a second, stacked by server (load moving between
//                        servers during a drain shows as one band thinning and the others
//                        growing), its connections by server, and a table of the same numbers
//   #/drain/POOL/SERVER  one server's connections falling to zero, with the drain's start,
//                        its deadline and the moment the rest were cut marked
//   #/services           each service: listener, TLS, pool, monitor URI and what it answers,
//                        maintenance-page responses, rules and how many requests each decided
//
// Each view reads its series in tick(), which app.js calls once a second (never two at once),
// and the events it marks in refresh() (on opening, on every event of the stream, and on the
// 3 s poll). Events are the Events view's: the markers carry their kind, server and cause.
"use strict";

(function () {
  const D = window.quiesceDashboard;
  const Q = window.QuiesceCharts;
  const { h, api, enc, badge, plural, fmtTime, relative } = D;

  const WINDOWS = [[60, "1 min"], [300, "5 min"], [900, "15 min"]];

  // Put `fresh` (a new build of `box`'s contents) in place, replacing only what changed, so a
  // redraw a second never moves a link under the pointer or takes the keyboard focus away.
  function patch(box, kids) {
    const fresh = kids.filter((k) => k !== null && k !== undefined);
    const old = [...box.childNodes];
    if (old.length !== fresh.length) { box.replaceChildren(...fresh); return; }
    fresh.forEach((n, i) => patchNode(old[i], n));
  }

  function patchNode(was, now) {
    if (was.nodeType !== now.nodeType || was.nodeName !== now.nodeName) { was.replaceWith(now); return; }
    if (was.nodeType !== 1) { if (was.nodeValue !== now.nodeValue) was.nodeValue = now.nodeValue; return; }
    if (was.outerHTML === now.outerHTML) return;
    const sameAttrs = was.attributes.length === now.attributes.length
      && [...now.attributes].every((a) => was.getAttribute(a.name) === a.value);
    if (!sameAttrs || was.childNodes.length !== now.childNodes.length) { was.replaceWith(now); return; }
    [...now.childNodes].forEach((n, i) => patchNode(was.childNodes[i], n));
  }

  function eventText(e) {
    const what = e.kind === "admin_change" || e.kind === "oper_change"
      ? (e.server || e.pool) + " " + (e.from || "?") + " → " + (e.to || "?")
      : e.kind.replace(/_/g, " ") + (e.server ? " " + e.server : "");
    return what + (e.cause ? " (" + e.cause + ")" : "");
  }

  // events of a pool (or one server) since `seconds` ago, as chart marks
  async function marks(pool, server, seconds) {
    const q = "/events?pool=" + enc(pool) + (server ? "&server=" + enc(server) : "")
      + "&since=" + seconds + "s&limit=200";
    const events = (await api("GET", q)) || [];
    return events.map((e) => ({ t: e.time, text: eventText(e), kind: e.cause === "deadline" ? "cut" : "event", event: e }));
  }

  function windowPicker(view, id) {
    const sel = h("select", { id, "data-keep": "1" }, WINDOWS.map(([s, label]) =>
      h("option", { value: String(s), selected: s === view.seconds }, label)));
    sel.addEventListener("change", () => { view.seconds = Number(sel.value); view.refresh(); view.tick(); });
    return h("label", { class: "filters" }, "Window ", sel);
  }

  function chartWidth(box) {
    return Math.max(280, Math.min(1200, (box.clientWidth || 800) - 4));
  }

  // The index of the first second with a row (connections is null in a second before the
  // process kept any): the charts start there rather than with minutes of nothing.
  function firstRow(columns) {
    const n = columns.length ? columns[0].length : 0;
    for (let i = 0; i < n; i++) if (columns.some((c) => c[i] !== null && c[i] !== undefined)) return i;
    return n;
  }

  // A table of a chart's numbers (the text alternative): one row a second, newest first,
  // at most `rows` of them.
  function numbersTable(id, caption, times, columns, rows) {
    const body = [];
    for (let i = times.length - 1; i >= 0 && body.length < rows; i--) {
      body.push(h("tr", null, h("th", { scope: "row" }, Q.clock(times[i])),
        columns.map((c) => h("td", { class: "num" }, Q.num(c.values[i]) + (c.values[i] === null || c.values[i] === undefined ? "" : c.unit || "")))));
    }
    return h("table", { class: "numbers", id },
      h("caption", null, caption),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Time"), columns.map((c) => h("th", { scope: "col", class: "num" }, c.name)))),
      h("tbody", null, body));
  }

  // ---------------------------------------------------------------- a pool's traffic

  const poolView = {
    title() { return "Pool " + this.pool; },
    poll: true,
    mount(main, params, args) {
      this.pool = args[0] || "";
      this.seconds = 300;
      this.marks = [];
      this.data = null;
      this.chart = h("div", { class: "chart-box", id: "pool-chart" });
      this.conns = h("div", { class: "chart-box", id: "pool-conns-chart" });
      this.table = h("div", { class: "table-wrap numbers-wrap" });
      this.summary = h("p", { class: "chart-summary", id: "pool-summary", "aria-live": "polite" });
      main.append(
        h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Pool " + this.pool + " · traffic"),
          h("a", { href: "#/servers?pool=" + enc(this.pool) }, "Servers of " + this.pool), windowPicker(this, "pool-window")),
        this.summary,
        h("section", { class: "panel", "aria-labelledby": "pool-req-title" },
          h("h2", { id: "pool-req-title" }, "Requests a second, stacked by server"), this.chart),
        h("section", { class: "panel", "aria-labelledby": "pool-conn-title" },
          h("h2", { id: "pool-conn-title" }, "Connections by server"), this.conns),
        h("section", { class: "panel", "aria-labelledby": "pool-num-title" },
          h("h2", { id: "pool-num-title" }, "The numbers"), this.table));
    },
    async refresh() {
      this.marks = await marks(this.pool, null, this.seconds);
      this.draw();
    },
    async tick() {
      this.data = await api("GET", "/series/servers?pool=" + enc(this.pool) + "&seconds=" + this.seconds
        + "&fields=requests,errors,connections");
      this.draw();
    },
    draw() {
      const raw = this.data;
      const names = raw && raw.servers ? Object.keys(raw.servers) : [];
      const from = firstRow(names.map((n) => raw.servers[n].connections));
      if (!raw || !raw.t || from >= raw.t.length) { this.summary.textContent = "Waiting for the first second of data…"; return; }
      const d = { t: raw.t.slice(from), servers: {} };
      for (const n of names) {
        d.servers[n] = {};
        for (const [f, v] of Object.entries(raw.servers[n])) d.servers[n][f] = v.slice(from);
      }
      const series = (field) => names.map((n) => ({ name: n, values: d.servers[n][field] }));
      const req = series("requests");
      const width = chartWidth(this.chart);
      patch(this.chart, [
        Q.timeChart({ times: d.t, series: req, stacked: true, unit: " req/s", label: "Requests a second of pool " + this.pool, width, marks: this.marks }),
        Q.legend(names)]);
      patch(this.conns, [
        Q.timeChart({ times: d.t, series: series("connections"), stacked: true, unit: "", label: "Connections of pool " + this.pool, width, height: 160, marks: this.marks }),
        Q.legend(names)]);
      // the last 10 s: each server's share of the pool's requests
      const recent = (vals) => vals.slice(-10).reduce((a, v) => a + (v || 0), 0);
      const total = req.reduce((a, s) => a + recent(s.values), 0);
      this.summary.textContent = "Last 10 s: " + plural(total, "request") + (total ? " — " : "")
        + (total ? req.map((s) => s.name + " " + Math.round((100 * recent(s.values)) / total) + " %").join(", ") : "");
      patch(this.table, [numbersTable("pool-numbers", "Requests a second by server, the last 30 s (newest first)",
        d.t, req.map((s) => ({ name: s.name + " req/s", values: s.values })), 30),
      this.marks.length ? h("ul", { class: "marks-list", "aria-label": "Events in this window" },
        this.marks.map((m) => h("li", null, Q.clock(m.t) + " — " + m.text))) : null]);
    },
  };

  // ---------------------------------------------------------------- a server's drain

  const drainView = {
    title() { return "Drain of " + this.key; },
    poll: true,
    mount(main, params, args) {
      this.pool = args[0] || "";
      this.name = args[1] || "";
      this.key = this.pool + "/" + this.name;
      this.deadline = null; // kept once seen: after the cut the server has none any more
      this.start = null; // when the drain began (its event)
      this.marks = [];
      this.server = null;
      this.points = null;
      this.status = h("div", { class: "drain-status", id: "drain-status", role: "status", "aria-live": "polite" });
      this.chart = h("div", { class: "chart-box", id: "drain-chart" });
      this.table = h("div", { class: "table-wrap numbers-wrap" });
      main.append(
        h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Drain of " + this.key),
          h("a", { href: "#/servers?pool=" + enc(this.pool) }, "Servers of " + this.pool),
          h("a", { href: "#/pool/" + enc(this.pool) }, "Traffic of " + this.pool)),
        this.status,
        h("section", { class: "panel", "aria-labelledby": "drain-chart-title" },
          h("h2", { id: "drain-chart-title" }, "Live connections"), this.chart),
        h("section", { class: "panel", "aria-labelledby": "drain-num-title" },
          h("h2", { id: "drain-num-title" }, "The numbers"), this.table));
    },
    // from 30 s before the drain began (or the admin state's start), at least a minute
    seconds() {
      const began = this.start || (this.server && this.server.since);
      const ago = began ? Date.now() / 1000 - began : 0;
      return Math.max(60, Math.min(900, Math.ceil(ago) + 30));
    },
    async refresh() {
      this.server = await api("GET", "/servers/" + enc(this.pool) + "/" + enc(this.name));
      if (this.server.admin === "drain") this.deadline = this.server.deadline;
      this.marks = await marks(this.pool, this.name, this.seconds());
      this.draw();
    },
    async tick() {
      const [server, series] = await Promise.all([
        api("GET", "/servers/" + enc(this.pool) + "/" + enc(this.name)),
        api("GET", "/series?kind=server&name=" + enc(this.key) + "&seconds=" + this.seconds()).catch((e) => {
          if (e.status === 404) return null; // before the first tick
          throw e;
        }),
      ]);
      this.server = server;
      if (server.admin === "drain") this.deadline = server.deadline; // kept after the cut
      if (series) this.points = series.points;
      this.draw();
    },
    draw() {
      const s = this.server;
      if (!s) return;
      const all = this.points || [];
      const pts = all.slice(firstRow([all.map((p) => p.connections)]));
      const times = pts.map((p) => p.t);
      const conns = pts.map((p) => p.connections);
      // the last drain's start (its event), and the cut of that drain only
      const starts = this.marks.filter((m) => m.event.kind === "admin_change" && m.event.to === "drain").map((m) => m.t);
      const start = (starts.length ? Math.max(...starts) : null) || (s.admin === "drain" ? s.since : null);
      if (start) this.start = start;
      const cut = this.marks.find((m) => m.kind === "cut" && (!start || m.t >= start));
      const deadline = this.deadline || (cut ? cut.t : null);
      // when the count first read 0 after the drain began
      let zeroAt = null;
      pts.forEach((p) => { if (zeroAt === null && start && p.t >= start && p.connections === 0) zeroAt = p.t; });
      if (zeroAt !== null && pts.some((p) => p.t > zeroAt && p.connections > 0)) zeroAt = null;
      const live = s.connections;
      const lines = [h("span", { class: "drain-badge" }, badge(s.status)), " "];
      lines.push(h("strong", { class: "drain-count", "data-connections": String(live) }, plural(live, "connection")), " now");
      if (deadline) lines.push(" · deadline " + fmtTime(deadline) + (deadline > Date.now() / 1000 ? " (" + relative(deadline) + ")" : ""));
      else if (s.admin === "drain") lines.push(" · no deadline: it waits for the last connection");
      if (cut) lines.push(" · cut at " + fmtTime(cut.t) + (cut.event.detail && cut.event.detail.closed !== undefined ? " (" + plural(cut.event.detail.closed, "connection") + " closed)" : ""));
      if (live === 0 && start) lines.push(h("span", { class: "drain-done" }, " · reached 0" + (zeroAt ? " at " + fmtTime(zeroAt) : "")));
      if (s.admin !== "drain" && !start) lines.push(" · not draining (" + s.admin + ")");
      patch(this.status, lines.map((x) => (typeof x === "string" ? document.createTextNode(x) : x)));
      const chartMarks = this.marks.filter((m) => m.kind !== "cut").map((m) => ({ ...m, short: m.event.to === "drain" ? "drain" : null }));
      if (deadline) chartMarks.push({ t: deadline, text: "deadline: what is left is closed", kind: "deadline", short: "deadline" });
      if (cut) chartMarks.push({ t: cut.t, text: "cut: " + cut.text, kind: "cut", short: "cut" });
      if (zeroAt) chartMarks.push({ t: zeroAt, text: "connections reached 0", kind: "zero", short: "0" });
      patch(this.chart, [times.length
        ? Q.timeChart({ times, series: [{ name: this.key, values: conns }], unit: "", label: "Live connections of " + this.key,
          width: chartWidth(this.chart), height: 200, marks: chartMarks,
          // the x axis runs a little past the deadline (ahead of now while draining), so the
          // marks at its end stay readable
          until: deadline ? Math.max(deadline, times[times.length - 1]) + Math.max(3, (times[times.length - 1] - times[0]) / 12) : null })
        : h("p", { class: "muted" }, "Waiting for the first second of data…")]);
      // text alternative: the seconds where the count changed, and the marks
      const changed = [];
      pts.forEach((p, i) => { if (i === 0 || p.connections !== pts[i - 1].connections) changed.push(i); });
      const keep = changed.slice(-30);
      patch(this.table, [numbersTable("drain-numbers", "Live connections of " + this.key + " where they changed (newest first)",
        keep.map((i) => times[i]), [{ name: "Connections", values: keep.map((i) => conns[i]) }], 30),
      chartMarks.length ? h("ul", { class: "marks-list", "aria-label": "Marks on the chart" },
        chartMarks.map((m) => h("li", null, Q.clock(m.t) + " — " + m.text))) : null]);
    },
  };

  // ---------------------------------------------------------------- services

  function conditionText(cond) {
    const one = ([k, v]) => {
      if (k === "flag" && v && typeof v === "object" && Object.keys(v).length === 1 && v.name) return "flag " + v.name;
      if (Array.isArray(v)) return k + " " + v.join(" or ");
      return k + " " + (v && typeof v === "object" ? JSON.stringify(v) : v);
    };
    return Object.entries(cond).map(one).join(" and ");
  }

  function actionText(then) {
    const [k, v] = Object.entries(then)[0] || ["?", ""];
    if (k === "maintenance_page") return "maintenance page" + (v === true ? "" : " " + v);
    if (k === "pool") return "to pool " + v;
    if (k === "respond") return "respond " + (v && v.status);
    if (k === "redirect") return "redirect " + (v && v.status) + " to " + (v && v.location);
    return k;
  }

  const servicesView = {
    title: "Services",
    mount(main) {
      this.body = h("div", { class: "services", id: "services" });
      this.prev = new Map(); // "service/rule" -> [time, hits]: the rate since the last tick
      this.series = {};
      main.append(h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Services"),
        h("span", { class: "muted", id: "services-count" })), this.body);
    },
    async refresh() { await this.tick(); },
    async tick() {
      const list = (await api("GET", "/services")) || [];
      await Promise.all(list.filter((x) => x.running).map(async (x) => {
        try {
          this.series[x.name] = await api("GET", "/series?kind=service&name=" + enc(x.name) + "&seconds=60");
        } catch (e) {
          if (e.status !== 404) throw e;
        }
      }));
      this.draw(list);
    },
    rate(key, hits) {
      const now = Date.now() / 1000;
      const before = this.prev.get(key);
      this.prev.set(key, [now, hits]);
      if (!before || now - before[0] < 0.2) return null;
      return Math.max(0, (hits - before[1]) / (now - before[0]));
    },
    draw(list) {
      document.getElementById("services-count").textContent = plural(list.length, "service");
      const panels = list.map((x) => {
        const sid = D.idSafe(x.name);
        const ser = this.series[x.name];
        const pts = ser ? ser.points : [];
        const times = pts.map((p) => p.t);
        const m = x.monitor_uri;
        const rules = x.rules.map((r) => {
          const rate = this.rate(x.name + "/" + r.name, r.hits);
          return h("tr", { "data-rule": r.name },
            h("td", { class: "num" }, String(r.index + 1)),
            h("th", { scope: "row" }, r.name),
            D.cell({ "data-label": "If" }, h("span", { class: "mono" }, conditionText(r.if))),
            D.cell({ "data-label": "Then" }, actionText(r.then)),
            D.cell({ "data-label": "Matched", class: "num hits" }, String(r.hits)),
            D.cell({ "data-label": "Now", class: "num" }, rate === null ? "—" : Q.num(rate) + "/s"));
        });
        rules.push(h("tr", { "data-rule": "default", class: "default-row" },
          h("td", null, ""), h("th", { scope: "row" }, "no rule matched"),
          D.cell({ "data-label": "If" }, "—"), D.cell({ "data-label": "Then" }, "to pool " + x.pool),
          D.cell({ "data-label": "Matched", class: "num hits" }, String(x.default_hits)),
          D.cell({ "data-label": "Now", class: "num" }, (() => { const r = this.rate(x.name + "/", x.default_hits); return r === null ? "—" : Q.num(r) + "/s"; })())));
        return h("section", { class: "panel service", id: "service-" + sid, "data-service": x.name, "aria-labelledby": "service-title-" + sid },
          h("h2", { id: "service-title-" + sid }, x.name, " ", h("span", { class: "tag" }, x.protocol),
            x.running ? null : h("span", { class: "tag" }, "not running")),
          h("dl", { class: "kv service-kv" },
            h("dt", null, "Listener"), h("dd", { class: "mono" }, x.listen + (x.port && !x.listen.endsWith(":" + x.port) ? " (port " + x.port + ")" : "")),
            h("dt", null, "TLS"), h("dd", { class: "tls" }, x.tls ? "on" : "off"),
            h("dt", null, "Pool"), h("dd", null, h("a", { href: "#/pool/" + enc(x.pool) }, x.pool), x.fallback_pool ? " (fallback " + x.fallback_pool + ")" : ""),
            h("dt", null, "Connections"), h("dd", null, x.connections + " live · " + x.connections_total + " accepted"),
            h("dt", null, "Requests"), h("dd", null, String(x.requests),
              times.length ? [" ", Q.sparkline(pts.map((p) => p.requests), times, { label: x.name + " requests a second", width: 100, height: 20 })] : null),
            h("dt", null, "Maintenance page"), h("dd", { class: "maint-pages" }, plural(x.maintenance_pages, "response")),
            h("dt", null, "Monitor URI"), h("dd", { class: "monitor-uri" }, m
              ? [h("span", { class: "mono" }, m.path), " ",
                h("span", { class: "badge " + (m.state === "ok" ? "st-up" : "st-down"), "data-state": m.state },
                  h("span", { class: "sym", "aria-hidden": "true" }, m.state === "ok" ? "▲" : "▼"), m.state === "ok" ? "200 ready" : "503 failing"),
                h("span", { class: "small muted" }, " answered 200 × " + m.answers_200 + ", 503 × " + m.answers_503)]
              : h("span", { class: "muted" }, "none"))),
          h("h3", null, "Rules (first match wins)"),
          h("table", { class: "cards rules", id: "rules-" + sid },
            h("caption", { class: "sr-only" }, "Rules of " + x.name + " and how many requests each matched"),
            h("thead", null, h("tr", null, h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "Rule"),
              h("th", { scope: "col" }, "If"), h("th", { scope: "col" }, "Then"),
              h("th", { scope: "col", class: "num" }, "Matched"), h("th", { scope: "col", class: "num" }, "Now"))),
            h("tbody", null, rules)));
      });
      patch(this.body, panels.length ? panels : [h("p", { class: "muted" }, "No services.")]);
    },
  };

  D.views.pool = poolView;
  D.views.drain = drainView;
  D.views.services = servicesView;
})();

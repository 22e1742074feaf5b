// quiesce dashboard charts: small SVG drawn here, no library, no build step.
//
// Four shapes: a strip of recent results (health checks); a sparkline (one series, a few dozen points, in a table cell), a time chart
// (lines or stacked areas over the last minutes, with event markers and vertical marks such
// as a drain's deadline) and the table that goes with every chart (the same numbers as text,
// for screen readers and for reading exact values). Every point carries a <title>, so the
// browser shows its number on hover; every chart has role="img" and an aria-label that says
// what it shows in words. Colours come from classes (app.css), never from inline styles (the
// page's Content-Security-Policy has no 'unsafe-inline').
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = 8; // .c0 … .c7 in app.css

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) el.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const title = (text) => svg("title", null, text);
  const r1 = (x) => Math.round(x * 10) / 10;

  // The time of day as toLocaleTimeString([], {hour12: false}) writes it, from one formatter
  // and remembered by second: toLocaleTimeString builds a formatter each call (a fraction of a
  // millisecond), and a page of 100 servers' sparklines asks 24,000 times a second for the
  // same 60 seconds (issue 21: that was seconds of script per redraw).
  const CLOCK = new Intl.DateTimeFormat([], { hour: "numeric", minute: "numeric", second: "numeric", hour12: false });
  const clocks = new Map();
  function clock(epoch) {
    let text = clocks.get(epoch);
    if (text === undefined) {
      if (clocks.size >= 4096) clocks.clear();
      text = CLOCK.format(new Date(epoch * 1000));
      clocks.set(epoch, text);
    }
    return text;
  }

  // A number as it reads in a chart: 1234 -> "1.2k", 0.5 -> "0.5"; null -> "—".
  function num(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "—";
    const a = Math.abs(v);
    if (a >= 1e9) return r1(v / 1e9) + "G";
    if (a >= 1e6) return r1(v / 1e6) + "M";
    if (a >= 1e4) return r1(v / 1e3) + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return String(Math.round(v * 100) / 100);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // One series in a cell: values (null: no data), times (epoch seconds, same length).
  // opts: label ("req/s"), unit (" ms"), cls (a colour class), width, height, points (false:
  // no value a point on hover), marks
  // ([{t, text}]: events, a dashed vertical line each, with its text on hover).
  function sparkline(values, times, opts) {
    const o = Object.assign({ width: 120, height: 26, label: "", unit: "", cls: "c0", marks: [] }, opts);
    const n = values.length;
    const known = values.filter((v) => v !== null && v !== undefined);
    const max = Math.max(0, ...known);
    const last = known.length ? known[known.length - 1] : null;
    const top = max > 0 ? max : 1;
    const w = o.width, hgt = o.height, pad = 2;
    const x = (i) => (n <= 1 ? w : pad + (i * (w - 2 * pad)) / (n - 1));
    const y = (v) => hgt - pad - ((v || 0) * (hgt - 2 * pad)) / top;
    let d = "";
    values.forEach((v, i) => { d += (i ? "L" : "M") + r1(x(i)) + " " + r1(y(v)); });
    const t0 = times[0], t1 = times[n - 1];
    const shown = o.marks.filter((m) => n > 1 && m.t >= t0 && m.t <= t1);
    const words = o.label + ": now " + num(last) + o.unit + ", peak " + num(max) + o.unit
      + " over the last " + n + " s" + shown.map((m) => "; " + m.text).join("");
    const marks = shown.map((m) => {
      const xx = r1(pad + ((m.t - t0) * (w - 2 * pad)) / (t1 - t0));
      return svg("g", { class: "mark" }, title(m.text), svg("line", { x1: xx, x2: xx, y1: 0, y2: hgt }));
    });
    // o.points false: no hover band a point (the Servers table: 100 rows x 4 sparklines x 60
    // points were 48,000 nodes redrawn a second); the chart's title still says now and peak
    const bands = o.points === false ? [] : values.map((v, i) => svg("rect", {
      class: "hit", x: r1(x(i) - w / n / 2), y: 0, width: r1(Math.max(1, w / n)), height: hgt,
    }, title(o.label + " " + (times[i] ? clock(times[i]) : "") + ": " + num(v) + (v === null ? "" : o.unit))));
    return svg("svg", {
      class: "spark " + o.cls, viewBox: "0 0 " + w + " " + hgt, width: w, height: hgt,
      role: "img", "aria-label": words, "data-last": last === null ? "" : last, "data-peak": max,
    }, title(words), marks, svg("path", { class: "line", d }), bands);
  }

  // A chart over time. spec: {times: [epoch s], series: [{name, values}], stacked, unit,
  // label (what the y axis counts), width, height, marks: [{t, text, kind}] (vertical lines:
  // kind "deadline", "cut", "event"), until (epoch s: draw the x axis up to there, e.g. a
  // deadline ahead of now)}.
  function timeChart(spec) {
    const s = Object.assign({ width: 800, height: 220, unit: "", stacked: false, marks: [] }, spec);
    const times = s.times;
    const n = times.length;
    if (!n) return svg("svg", { class: "chart", role: "img", "aria-label": s.label + ": no data yet", width: s.width, height: 40 });
    const t0 = times[0];
    const t1 = Math.max(times[n - 1], s.until || 0);
    const left = 44, right = 10, topPad = 16, bottom = 22;
    const w = Math.max(200, s.width), hgt = s.height;
    const iw = w - left - right, ih = hgt - topPad - bottom;
    const xt = (t) => left + (t1 === t0 ? iw : ((t - t0) * iw) / (t1 - t0));
    // stacked: each series sits on the sum of those before it
    const base = new Array(n).fill(0);
    const layers = s.series.map((ser) => {
      const lo = base.slice();
      const hi = ser.values.map((v, i) => (s.stacked ? lo[i] : 0) + (v || 0));
      if (s.stacked) hi.forEach((v, i) => { base[i] = v; });
      return { ser, lo, hi };
    });
    const peak = Math.max(0, ...layers.flatMap((l) => l.hi));
    const top = niceMax(peak);
    const y = (v) => topPad + ih - (v * ih) / top;
    const parts = [];
    // grid: 0, half, top
    for (const f of [0, 0.5, 1]) {
      const yy = r1(y(top * f));
      parts.push(svg("line", { class: "grid", x1: left, x2: w - right, y1: yy, y2: yy }));
      parts.push(svg("text", { class: "axis", x: left - 4, y: yy + 4, "text-anchor": "end" }, num(top * f)));
    }
    parts.push(svg("text", { class: "axis", x: left, y: hgt - 6 }, clock(t0)));
    parts.push(svg("text", { class: "axis", x: w - right, y: hgt - 6, "text-anchor": "end" }, clock(t1)));
    layers.forEach((l, k) => {
      const cls = "c" + (k % PALETTE);
      let d = "";
      times.forEach((t, i) => { d += (i ? "L" : "M") + r1(xt(t)) + " " + r1(y(l.hi[i])); });
      if (s.stacked) {
        let back = "";
        for (let i = n - 1; i >= 0; i--) back += "L" + r1(xt(times[i])) + " " + r1(y(l.lo[i]));
        parts.push(svg("path", { class: "area " + cls, d: d + back + "Z" }));
      }
      parts.push(svg("path", { class: "line " + cls, d }));
    });
    // marks: labels that would overlap go one row lower (three rows, then they share)
    const rows = [-Infinity, -Infinity, -Infinity];
    for (const m of [...s.marks].sort((a, b) => a.t - b.t)) {
      if (m.t < t0 || m.t > t1) continue;
      const xx = r1(xt(m.t));
      let label = null;
      if (m.short) {
        const atEnd = xx > w - right - 70;
        const row = Math.max(0, rows.findIndex((x) => x < xx - 64));
        rows[row] = xx;
        label = svg("text", { x: atEnd ? xx - 3 : xx + 3, y: topPad - 5 + row * 13, "text-anchor": atEnd ? "end" : "start" }, m.short);
      }
      parts.push(svg("g", { class: "mark mark-" + (m.kind || "event") },
        title(m.text + " (" + clock(m.t) + ")"),
        svg("line", { x1: xx, x2: xx, y1: topPad - 6, y2: topPad + ih }),
        svg("rect", { class: "hit", x: xx - 4, y: topPad - 8, width: 8, height: ih + 8 }),
        label));
    }
    // hover bands, one a second: the time and every series' value
    const step = n > 1 ? iw / (n - 1) : iw;
    times.forEach((t, i) => {
      const vals = s.series.map((ser) => ser.name + " " + num(ser.values[i]) + s.unit).join(", ");
      parts.push(svg("rect", { class: "hit", x: r1(xt(t) - step / 2), y: topPad, width: r1(Math.max(1, step)), height: ih },
        title(clock(t) + ": " + vals)));
    });
    const words = s.label + (s.stacked ? ", stacked by " : ", by ") + s.series.map((x) => x.name).join(", ")
      + ", from " + clock(t0) + " to " + clock(t1) + "; peak " + num(peak) + s.unit
      + (s.marks.length ? "; marks: " + s.marks.map((m) => m.text + " at " + clock(m.t)).join("; ") : "");
    return svg("svg", { class: "chart", viewBox: "0 0 " + w + " " + hgt, width: w, height: hgt, role: "img", "aria-label": words },
      title(words), parts);
  }

  // A strip of recent results (health checks), oldest first: items [{kind: "pass" | "fail" |
  // "maintenance", text}]. Not colour alone: a pass is a full block, a maintenance reply a
  // half one, a failure a cross.
  function strip(items, label) {
    const size = 9, gap = 2;
    const w = Math.max(1, items.length * (size + gap));
    const counts = {};
    for (const it of items) counts[it.kind] = (counts[it.kind] || 0) + 1;
    const words = label + ": the last " + items.length + " — "
      + Object.entries(counts).map(([k, n]) => n + " " + k).join(", ");
    return svg("svg", { class: "strip", viewBox: "0 0 " + w + " " + size, width: w, height: size, role: "img", "aria-label": words },
      title(words),
      items.map((it, i) => {
        const x = i * (size + gap);
        const shape = it.kind === "fail"
          ? svg("path", { class: "chk chk-fail", d: "M" + x + " 0L" + (x + size) + " " + size + "M" + (x + size) + " 0L" + x + " " + size })
          : svg("rect", { class: "chk chk-" + it.kind, x, y: it.kind === "pass" ? 0 : size / 2, width: size, height: it.kind === "pass" ? size : size / 2 });
        return svg("g", null, title(it.text), svg("rect", { class: "hit", x, y: 0, width: size, height: size }), shape);
      }));
  }

  // The legend of a chart: a swatch and a name for each series (text, not colour alone).
  function legend(names) {
    const ul = document.createElement("ul");
    ul.className = "legend";
    names.forEach((name, k) => {
      const li = document.createElement("li");
      li.append(svg("svg", { class: "swatch c" + (k % PALETTE), width: 12, height: 12, "aria-hidden": "true" },
        svg("rect", { class: "area", x: 0, y: 0, width: 12, height: 12 })), " " + name);
      ul.append(li);
    });
    return ul;
  }

  window.QuiesceCharts = { sparkline, timeChart, strip, legend, num, clock, PALETTE };
})();

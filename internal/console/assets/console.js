// The overview's live updates: each server-sent "snapshot" event refreshes
// the figures and tables and adds a point to the throughput plot.
"use strict";
(function () {
  var history = []; // [readings/s, rows/s], newest last
  var keep = 120;   // points: two minutes at one sample a second

  function text(id, v) { document.getElementById(id).textContent = v; }
  function count(v) { return String(Math.round(v)); }
  function rate(v) { return v === null || v === undefined ? "–" : v.toFixed(1); }
  // millis, owner and subState write the cells as the server's templates do.
  function millis(v) {
    if (v === null || v === undefined) { return "–"; }
    return v < 0.01 ? (v * 1000).toFixed(2) + " ms" : (v * 1000).toFixed(1) + " ms";
  }
  function owner(b) { return b === "" ? "none" : b === "?" ? "–" : b; }
  function subState(s) {
    if (!s.connected) { return s.last_error ? "disconnected: " + s.last_error : "disconnected"; }
    return "connected, MQTT " + s.protocol + (s.session_present ? ", session resumed" : "");
  }
  function rows(id, items, cells, empty, span) {
    span = span || 3;
    var body = document.getElementById(id);
    body.replaceChildren();
    if (items.length === 0) { items = [null]; }
    items.forEach(function (it) {
      var tr = document.createElement("tr");
      (it === null ? [[empty, "muted", span]] : cells(it)).forEach(function (c) {
        var td = document.createElement("td");
        td.textContent = c[0];
        if (c[1]) { td.className = c[1]; }
        if (c[2]) { td.colSpan = c[2]; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }
  function plot() {
    var max = 1;
    history.forEach(function (p) { max = Math.max(max, p[0], p[1]); });
    [0, 1].forEach(function (k) {
      var pts = history.map(function (p, i) {
        var x = 600 - (history.length - 1 - i) * 600 / (keep - 1); // the newest at the right edge
        return x.toFixed(1) + "," + (158 - p[k] / max * 150).toFixed(1);
      });
      document.getElementById(k === 0 ? "plot-readings" : "plot-rows").setAttribute("points", pts.join(" "));
    });
    text("plot-max", count(max));
  }

  function update(s) {
    text("readings-rate", rate(s.readings_per_second));
    text("rows-rate", rate(s.rows_per_second));
    text("readings-in", count(s.readings_in));
    text("http-in", count(s.http_in));
    text("mqtt-in", count(s.mqtt_in));
    text("rows-committed", count(s.rows_committed));
    text("mqtt-devices", s.mqtt_devices === null ? "–" : count(s.mqtt_devices));
    rows("health", s.health, function (h) { return [[h.name], [h.ok ? "ok" : h.error, h.ok ? "ok" : "bad"]]; }, "");
    rows("refusals", s.refusals, function (r) { return [[r.path], [r.reason], [count(r.count)]]; }, "none");
    rows("shards", s.shards, function (sh) {
      return [[sh.shard], [count(sh.backlog)], [sh.lag_seconds === null ? "–" : sh.lag_seconds.toFixed(1) + " s"], [owner(sh.bridge)]];
    }, "no producer or bridge here", 4);
    var flow = function (f) { return [[f.name], [count(f.total)], [rate(f.per_second)]]; };
    rows("paths", s.paths, flow, "");
    rows("tables", s.tables, flow, "none committed here");
    rows("latencies", s.latencies, function (l) {
      return [[l.name], [millis(l.p50_seconds)], [millis(l.p99_seconds)], [count(l.count)]];
    }, "none here", 4);
    rows("subscriptions", s.subscriptions, function (u) {
      return [[u.broker], [u.client_id], [subState(u), u.connected ? "ok" : "bad"], [String(u.in_flight)],
        [String(u.received)], [String(u.redeliveries)]];
    }, "no subscriber role here", 6);
    if (s.readings_per_second !== null) {
      history.push([s.readings_per_second, s.rows_per_second]);
      if (history.length > keep) { history.shift(); }
      plot();
    }
  }

  var es = new EventSource("/console/events");
  es.addEventListener("snapshot", function (e) {
    update(JSON.parse(e.data));
    text("status", "live, updated " + new Date().toLocaleTimeString());
  });
  es.onerror = function () { text("status", "disconnected: retrying…"); };
})();

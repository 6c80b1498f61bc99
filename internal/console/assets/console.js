// The overview's live updates: each server-sent "snapshot" event refreshes
// the figures and tables and adds a point to the throughput plot.
"use strict";
(function () {
  var history = []; // [readings/s, rows/s], newest last
  var keep = 120;   // points: two minutes at one sample a second

  function text(id, v) { document.getElementById(id).textContent = v; }
  function count(v) { return String(Math.round(v)); }
  function rate(v) { return v === null || v === undefined ? "–" : v.toFixed(1); }
  function rows(id, items, cells, empty) {
    var body = document.getElementById(id);
    body.replaceChildren();
    if (items.length === 0) { items = [null]; }
    items.forEach(function (it) {
      var tr = document.createElement("tr");
      (it === null ? [[empty, "muted", 3]] : cells(it)).forEach(function (c) {
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
      return [[sh.shard], [count(sh.backlog)], [sh.lag_seconds === null ? "–" : sh.lag_seconds.toFixed(1) + " s"]];
    }, "no producer or bridge here");
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

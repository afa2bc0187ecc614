// runner ui: small glue around htmx (live fragments) and Chart.js (the job timeline).
// No inline script anywhere (the Content-Security-Policy forbids it): everything is wired here.
"use strict";

window.__runnerUi = { loadedAt: Date.now(), updates: 0, charts: 0 };

document.addEventListener("DOMContentLoaded", function () {
  // Filters: a changed select reloads the overview with the new query.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });
  drawTimeline();
});

// Actions ask first (the forms are swapped in by htmx, so listen on the document).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.matches && form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Live state of the connection, shown in the header.
function setConn(ok, text) {
  var el = document.getElementById("conn");
  if (!el) { return; }
  el.textContent = text;
  el.classList.toggle("down", !ok);
}
document.addEventListener("htmx:afterRequest", function (event) {
  if (event.detail.successful) { setConn(true, "live"); }
  else if (event.detail.xhr && event.detail.xhr.status === 403) { setConn(false, "refused: reload with the token"); }
  else { setConn(false, "disconnected, retrying"); }
});
document.addEventListener("htmx:sendError", function () { setConn(false, "disconnected, retrying"); });
document.addEventListener("htmx:afterSwap", function (event) {
  window.__runnerUi.updates += 1;
  if (event.detail.target && event.detail.target.id === "live") { drawTimeline(); showActions(); }
});

// The action buttons live outside the swapped part; show those the newest state allows.
function showActions() {
  var state = document.getElementById("job-state");
  if (!state) { return; }
  var allowed = (state.dataset.actions || "").split(" ");
  document.querySelectorAll("#actions form[data-action]").forEach(function (form) {
    form.hidden = allowed.indexOf(form.dataset.action) < 0;
  });
}

var ENDS = {
  PREEMPTED: { style: "crossRot", color: "#d1495b", radius: 9, label: "preempted" },
  FAILED: { style: "rect", color: "#222222", radius: 6, label: "failed" },
  SUCCEEDED: { style: "star", color: "#2a9d55", radius: 10, label: "succeeded" },
  CANCELLED: { style: "circle", color: "#555555", radius: 6, label: "cancelled" },
  HALTED: { style: "rectRot", color: "#7b6fd0", radius: 7, label: "halted" }
};
var BUCKETS = ["wait", "startup", "useful", "stall", "lost", "other"];

function timelineData() {
  var el = document.getElementById("timeline-data");
  if (!el) { return null; }
  try { return JSON.parse(el.textContent); } catch (e) { return null; }
}

function lanePoints(lanes, labels, pick) {
  var out = [];
  lanes.forEach(function (lane, i) {
    pick(lane).forEach(function (x) { out.push({ x: x, y: labels[i] }); });
  });
  return out;
}

function timelineConfig(t) {
  var labels = t.lanes.map(function (l) { return l.label + " · " + l.state.toLowerCase(); });
  var bars = BUCKETS.map(function (bucket) {
    return {
      type: "bar", indexAxis: "y", grouped: false, order: 1, label: bucket === "wait" ? "waiting for a machine" : t.labels[bucket],
      backgroundColor: t.colors[bucket], borderWidth: 0, barPercentage: bucket === "wait" ? 0.3 : 0.75,
      categoryPercentage: 1.0,
      data: t.lanes.map(function (l) {
        if (bucket === "wait") { return l.wait; }
        var seg = l.segments.find(function (s) { return s[0] === bucket; });
        return seg ? [seg[1], seg[2]] : null;
      })
    };
  });
  var marks = [{
    type: "scatter", label: "checkpoint", pointStyle: "line", pointRotation: 90, pointRadius: 8, pointHoverRadius: 9,
    pointBorderWidth: 1.5, pointBorderColor: "#111111", borderColor: "#111111", backgroundColor: "#111111",
    data: lanePoints(t.lanes, labels, function (l) { return l.checkpoints.map(function (c) { return c[0]; }); })
  }, {
    type: "scatter", label: "preemption notice", pointStyle: "triangle", pointRotation: 180, pointRadius: 8,
    pointHoverRadius: 9, pointBackgroundColor: "#e07b00", pointBorderColor: "#111111", backgroundColor: "#e07b00",
    borderColor: "#111111",
    data: lanePoints(t.lanes, labels, function (l) { return l.notice ? [l.notice.at] : []; })
  }];
  Object.keys(ENDS).forEach(function (state) {
    var e = ENDS[state];
    marks.push({
      type: "scatter", label: e.label, pointStyle: e.style, pointRadius: e.radius, pointHoverRadius: e.radius + 1,
      pointBorderWidth: 2.5, pointBackgroundColor: e.color, pointBorderColor: e.color, backgroundColor: e.color,
      borderColor: e.color,
      data: lanePoints(t.lanes, labels, function (l) { return l.state === state && l.end !== null ? [l.end] : []; })
    });
  });
  // Chart.js draws the lowest `order` last, on top: the marks over the bars.
  marks.forEach(function (m) { m.order = 0; });
  return { labels: labels, datasets: bars.concat(marks) };
}

function progressConfig(t, range) {
  var datasets = t.progress.map(function (p, i) {
    return {
      label: p.label, stepped: true, borderWidth: 2, pointRadius: 2, fill: false,
      borderColor: "hsl(" + ((i * 67) % 360) + ", 55%, 42%)", backgroundColor: "hsl(" + ((i * 67) % 360) + ", 55%, 42%)",
      data: p.points.map(function (q) { return { x: q[0], y: q[1] }; })
    };
  });
  if (t.total_steps) {
    datasets.push({ label: "total " + t.total_steps + " steps", borderDash: [6, 4], borderWidth: 1, pointRadius: 0,
                    borderColor: "#333333", data: [{ x: range.min, y: t.total_steps }, { x: range.max, y: t.total_steps }] });
  }
  return { datasets: datasets };
}

function xRange(t) {
  var lo = 0, hi = Math.max(1, t.wall_s);
  t.lanes.forEach(function (l) {
    l.segments.forEach(function (s) { lo = Math.min(lo, s[1]); hi = Math.max(hi, s[2]); });
    if (l.end !== null) { hi = Math.max(hi, l.end); }
  });
  return { min: Math.floor(lo), max: Math.ceil(hi * 1.02) };
}

function seconds(v) { return (Math.round(v * 10) / 10) + " s"; }

function drawTimeline() {
  var t = timelineData();
  var canvas = document.getElementById("timeline");
  var progress = document.getElementById("progress");
  var note = document.getElementById("timeline-note");
  if (!canvas || !progress || typeof Chart === "undefined") { return; }
  if (!t || !t.lanes.length) {
    if (note) { note.textContent = "No attempt has started yet."; }
    return;
  }
  if (note) { note.textContent = t.hidden ? t.hidden + " more attempts are in the table and the totals, not drawn." : ""; }
  canvas.parentElement.style.height = (90 + 34 * t.lanes.length) + "px";
  var range = xRange(t);
  var lanes = timelineConfig(t);
  var steps = progressConfig(t, range);
  var chart = Chart.getChart(canvas);
  var stepChart = Chart.getChart(progress);
  if (chart && stepChart) {
    chart.data = lanes;
    chart.options.scales.y.labels = lanes.labels;
    chart.options.scales.x.min = stepChart.options.scales.x.min = range.min;
    chart.options.scales.x.max = stepChart.options.scales.x.max = range.max;
    stepChart.data = steps;
    stepChart.options.scales.y.suggestedMax = t.total_steps ? t.total_steps * 1.08 : undefined;
    chart.update("none");
    stepChart.update("none");
    return;
  }
  new Chart(canvas, {
    type: "bar", data: lanes,
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: {
        x: { type: "linear", offset: false, min: range.min, max: range.max, ticks: { includeBounds: false },
             title: { display: true, text: "seconds since submission" } },
        y: { type: "category", labels: lanes.labels, offset: true, grid: { offset: true } }
      },
      plugins: {
        legend: { position: "bottom", labels: {
          boxWidth: 12, usePointStyle: true,
          sort: function (a, b) { return a.datasetIndex - b.datasetIndex; },
          // Buckets always; a mark (checkpoint, notice, an end) only when there is one.
          filter: function (item, data) {
            var d = data.datasets[item.datasetIndex];
            return d.type === "bar" || d.data.length > 0;
          } } },
        tooltip: { callbacks: { label: function (ctx) {
          var raw = ctx.raw;
          if (Array.isArray(raw)) { return ctx.dataset.label + ": " + seconds(raw[1] - raw[0]); }
          return ctx.dataset.label + " at " + seconds(raw.x);
        } } }
      }
    }
  });
  new Chart(progress, {
    type: "line", data: steps,
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: {
        x: { type: "linear", min: range.min, max: range.max, ticks: { includeBounds: false },
             title: { display: true, text: "seconds since submission" } },
        y: { beginAtZero: true, suggestedMax: t.total_steps ? t.total_steps * 1.08 : undefined,
             title: { display: true, text: "committed step" } }
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } }
    }
  });
  window.__runnerUi.charts += 1;
}

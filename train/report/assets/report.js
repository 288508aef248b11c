// Script of the `neurotrain compare` page, inlined into every report by page.py.
//
// It reads the JSON in #report-data and draws with plotly.js: one chart per panel (a metric, of one
// job type when several log it) in its section (science, system), every run of the panel overlaid
// (EMA smoothing, the x axis and "full y range" chosen live), one parallel-coordinates chart per
// sweep, and click-to-sort on every table. "show all settings" (or the address ending in
// #all-settings) reveals the runs-table columns that are the same in every run. Plots use SVG
// scatter traces (not WebGL) so they render without a GPU.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const config = { responsive: true, displaylogo: false };

  // TensorBoard-style exponential moving average, debiased so the first points are not pulled to 0.
  function ema(values, alpha) {
    if (alpha <= 0) return values;
    let last = 0, n = 0;
    return values.map(function (y) {
      if (y === null || !isFinite(y)) return y;
      last = alpha * last + (1 - alpha) * y;
      n += 1;
      return last / (1 - Math.pow(alpha, n));
    });
  }

  function curveTraces(panel, xKey, alpha) {
    const traces = [];
    data.runs.forEach(function (run) {
      const c = run.curves[panel.metric];
      if (!c || (panel.job_type !== null && run.job_type !== panel.job_type)) return;
      const x = c[xKey];
      const legend = run.group || run.name;
      const ended = run.crashed ? run.status : run.status === "pruned" ? "pruned" : "";
      const dash = run.crashed ? "dash" : ended ? "dot" : "solid";
      const label = run.name + (ended ? " (" + ended + ")" : "");
      if (alpha > 0) {
        traces.push({ type: "scatter", mode: "lines", x: x, y: c.value, name: label, legendgroup: legend,
          showlegend: false, hoverinfo: "skip", opacity: 0.25, line: { color: run.color, width: 1, dash: dash } });
      }
      traces.push({ type: "scatter", mode: c.value.length > 1 ? "lines" : "markers", x: x, y: ema(c.value, alpha),
        name: label, legendgroup: legend, line: { color: run.color, width: 2, dash: dash },
        marker: { color: run.color } });
    });
    return traces;
  }

  function drawCurves() {
    const xKey = document.getElementById("x-axis").value;
    const alpha = parseFloat(document.getElementById("smoothing").value);
    const full = document.getElementById("full-range").checked;
    document.getElementById("smoothing-value").textContent = alpha.toFixed(2);
    data.panels.forEach(function (panel, i) {
      let div = document.getElementById("plot-" + i);
      if (!div) {
        div = document.createElement("div");
        div.id = "plot-" + i;
        div.className = "plot";
        div.dataset.metric = panel.metric;
        div.dataset.section = panel.section;
        document.getElementById("curves-" + panel.section).appendChild(div);
      }
      const yaxis = full ? {} : Object.assign({}, panel.yaxis);
      if (yaxis.range && yaxis.type !== "log") yaxis.autorange = false;
      const layout = { title: { text: panel.title, x: 0.01, xanchor: "left", font: { size: 14 } }, margin: { l: 60, r: 20, t: 40, b: 45 },
        xaxis: { title: { text: xKey } }, yaxis: yaxis, legend: { font: { size: 10 } }, hovermode: "closest" };
      Plotly.react(div, curveTraces(panel, xKey, alpha), layout, config);
    });
  }

  // Columns equal in every run are rendered hidden; the switch shows or hides them in every table.
  function showAllSettings() {
    const all = document.getElementById("show-all-settings").checked;
    document.querySelectorAll("table.runs .optional").forEach(function (cell) { cell.hidden = !all; });
  }

  function drawParcoords() {
    const root = document.getElementById("parcoords");
    if (!root) return;
    data.parcoords.forEach(function (chart, i) {
      const div = document.createElement("div");
      div.id = "parcoords-" + i;
      div.className = "plot parcoords";
      root.appendChild(div);
      const trace = { type: "parcoords", dimensions: chart.dims,
        line: { color: chart.color, colorscale: chart.colorscale, showscale: !Array.isArray(chart.colorscale) } };
      Plotly.newPlot(div, [trace], { title: { text: chart.title }, margin: { l: 80, r: 80, t: 80, b: 30 } }, config);
    });
  }

  function cellValue(row, col) {
    const cell = row.children[col];
    if (!cell) return "";
    if (cell.dataset.sort !== undefined) return parseFloat(cell.dataset.sort);
    return cell.textContent.trim().toLowerCase();
  }

  function makeSortable(table) {
    table.querySelectorAll("th").forEach(function (th) {
      th.addEventListener("click", function () {
        const col = parseInt(th.dataset.col, 10);
        const asc = !th.classList.contains("asc");
        table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = cellValue(a, col), y = cellValue(b, col);
          // Empty cells sort last in both directions.
          if (x === "" || (typeof x === "number" && isNaN(x))) return 1;
          if (y === "" || (typeof y === "number" && isNaN(y))) return -1;
          const cmp = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return asc ? cmp : -cmp;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  document.querySelectorAll("table.sortable").forEach(makeSortable);
  document.getElementById("x-axis").addEventListener("change", drawCurves);
  document.getElementById("smoothing").addEventListener("input", drawCurves);
  document.getElementById("full-range").addEventListener("change", drawCurves);
  const toggle = document.getElementById("show-all-settings");
  if (window.location.hash === "#all-settings") toggle.checked = true;
  toggle.addEventListener("change", showAllSettings);
  showAllSettings();
  drawCurves();
  drawParcoords();
})();

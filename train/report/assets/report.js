// Script of the `neurotrain compare` page, inlined into every report by page.py.
//
// It reads the JSON in #report-data and draws with plotly.js: one chart per metric with every run
// overlaid (EMA smoothing and the x axis chosen live), one parallel-coordinates chart per sweep, and
// click-to-sort on every table. Plots use SVG scatter traces (not WebGL) so they render without a GPU.
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

  function curveTraces(metric, xKey, alpha) {
    const traces = [];
    data.runs.forEach(function (run) {
      const c = run.curves[metric];
      if (!c) return;
      const x = c[xKey];
      const legend = run.group || run.name;
      const dash = run.crashed ? "dash" : "solid";
      const label = run.name + (run.crashed ? " (crashed)" : "");
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
    document.getElementById("smoothing-value").textContent = alpha.toFixed(2);
    const root = document.getElementById("curves");
    data.metrics.forEach(function (metric, i) {
      let div = document.getElementById("plot-" + i);
      if (!div) {
        div = document.createElement("div");
        div.id = "plot-" + i;
        div.className = "plot";
        div.dataset.metric = metric;
        root.appendChild(div);
      }
      const layout = { title: { text: metric }, margin: { l: 60, r: 20, t: 40, b: 45 },
        xaxis: { title: { text: xKey } }, legend: { font: { size: 10 } }, hovermode: "closest" };
      Plotly.react(div, curveTraces(metric, xKey, alpha), layout, config);
    });
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
  drawCurves();
  drawParcoords();
})();

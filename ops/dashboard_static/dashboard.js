// Live dashboard: fetch /api/dashboard every 2 s and redraw with plotly.js (served locally).
// After each draw the figures plotted are written into data attributes (#summary, each
// chart's data-points), so a headless browser test can compare them with ClickHouse.
"use strict";

const REFRESH_MS = 2000;
const params = new URLSearchParams(window.location.search);
// The window is fixed when the page opens, so running totals do not slide away.
const SINCE = params.get("since") || String(Math.floor(Date.now() / 1000) - 900);
const LAYOUT = {
  margin: { l: 50, r: 10, t: 6, b: 30 },
  legend: { orientation: "h", y: -0.2 },
  xaxis: { type: "date" },
  paper_bgcolor: "#fff",
  plot_bgcolor: "#fff",
};
const CONFIG = { displayModeBar: false, responsive: true, staticPlot: false };

function dates(ts) {
  return ts.map((t) => new Date(t * 1000));
}

function lines(t, series, extra) {
  return Object.keys(series).map((name) => ({
    type: "scatter",
    mode: "lines",
    name: name,
    x: dates(t),
    y: series[name],
    ...(extra || {}),
  }));
}

function countPoints(traces) {
  return traces.reduce((n, tr) => n + tr.y.length, 0);
}

async function draw(id, traces, layout) {
  const el = document.getElementById(id);
  await Plotly.react(el, traces, { ...LAYOUT, ...(layout || {}) }, CONFIG);
  el.dataset.traces = String(traces.length);
  el.dataset.points = String(countPoints(traces));
}

function stockTraces(stock, live, now) {
  return stock.skus.map((sku) => {
    const x = dates(stock.t);
    const y = stock.series[sku].slice();
    if (sku in live) {
      x.push(new Date(now * 1000));
      y.push(live[sku]);
    }
    return { type: "scatter", mode: "lines", line: { shape: "hv" }, name: sku, x: x, y: y };
  });
}

function setTile(id, text, value) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.dataset.value = value;
}

function gmvText(gmv) {
  const parts = Object.keys(gmv).map((cur) => cur + " " + Number(gmv[cur]).toLocaleString("en", { maximumFractionDigits: 2 }));
  return parts.length ? parts.join(" · ") : "0";
}

function lateRows(rows) {
  // textContent only: the cells never become markup
  const body = document.querySelector("#late-orders tbody");
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement("tr");
      [r.order_id, r.channel, r.external_id, r.state, r.ship_by.slice(0, 16), String(r.overdue_h)].forEach((text) => {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      return tr;
    })
  );
}

async function render(data) {
  const summary = document.getElementById("summary");
  const errors = data.errors || {};
  document.getElementById("errors").textContent = Object.keys(errors)
    .map((k) => k + " unavailable: " + errors[k])
    .join("; ");
  if (data.totals) {
    setTile("orders-total", String(data.totals.orders), String(data.totals.orders));
    setTile("accepted-total", String(data.totals.accepted), String(data.totals.accepted));
    setTile("gmv-total", gmvText(data.totals.gmv), JSON.stringify(data.totals.gmv));
    summary.dataset.orders = String(data.totals.orders);
    summary.dataset.accepted = String(data.totals.accepted);
    summary.dataset.gmv = JSON.stringify(data.totals.gmv);
    summary.dataset.ordersByChannel = JSON.stringify(data.orders.by_channel);
    await draw("chart-orders", lines(data.orders.t, data.orders.series), { yaxis: { title: "orders/s" } });
    await draw("chart-gmv", lines(data.gmv.t, data.gmv.series));
    await draw("chart-stock", stockTraces(data.stock, data.stock_live || {}, data.now));
    summary.dataset.stockLive = JSON.stringify(data.stock_live || {});
  }
  if (data.holds) {
    const reasons = Object.keys(data.holds.by_reason);
    setTile("holds-total", String(data.holds.total), String(data.holds.total));
    summary.dataset.holds = String(data.holds.total);
    summary.dataset.holdsByReason = JSON.stringify(data.holds.by_reason);
    setTile("late-total", String(data.holds.late), String(data.holds.late));
    setTile("due-soon-total", String(data.holds.due_soon), String(data.holds.due_soon));
    setTile("backorders-total", String(data.holds.backorders), String(data.holds.backorders));
    summary.dataset.late = String(data.holds.late);
    lateRows(data.holds.late_orders || []);
    await draw(
      "chart-holds",
      [{ type: "bar", x: reasons, y: reasons.map((r) => data.holds.by_reason[r]), marker: { color: "#d9822b" } }],
      { xaxis: { type: "category" } }
    );
  }
  if (data.lag) {
    setTile("lag-total", String(data.lag.total), String(data.lag.total));
    summary.dataset.lag = String(data.lag.total);
    const short = {};
    Object.keys(data.lag.series).forEach((topic) => { short[topic.replace(/^.*\.raw\./, "raw.")] = data.lag.series[topic]; });
    await draw("chart-lag", lines(data.lag.t, short, { mode: "lines+markers" }), { yaxis: { title: "messages", rangemode: "tozero" } });
  }
  setTile("updated", new Date(data.now * 1000).toLocaleTimeString(), String(data.now));
  summary.dataset.state = "drawn";
  summary.dataset.refreshes = String(Number(summary.dataset.refreshes || "0") + 1);
}

async function refresh() {
  try {
    const resp = await fetch("/api/dashboard?since=" + encodeURIComponent(SINCE), { cache: "no-store" });
    const data = await resp.json();
    if (!resp.ok) {
      document.getElementById("errors").textContent = data.error || resp.statusText;
      document.getElementById("summary").dataset.state = "error";
    } else {
      await render(data);
    }
  } catch (err) {
    document.getElementById("errors").textContent = "dashboard API unreachable: " + err;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();

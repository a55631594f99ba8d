// The dashboard's only script: the live feed (Server-Sent Events; the browser reconnects by
// itself and sends the last id back as Last-Event-ID) and the charts (inline SVG). Text from
// the server is always set as text, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const KEPT = 200; // feed rows kept on the page

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function startFeed(list) {
  const state = document.getElementById("feed-state");
  const say = (text, cls) => { state.textContent = text; state.className = "pill " + cls; };
  const source = new EventSource(list.dataset.source);
  let opened = 0; // rows of the first second are what was there already: not highlighted
  source.onopen = () => { say("live", "live"); opened = opened || Date.now(); };
  source.onerror = () => say("reconnecting…", "down");
  source.addEventListener("stored", (message) => {
    const e = JSON.parse(message.data);
    const row = el("li", Date.now() - opened > 1000 ? "new" : "");
    row.dataset.position = e.position;
    row.dataset.type = e.type;
    row.appendChild(el("span", "pos", "#" + e.position));
    const title = el("a", "type", e.type);
    title.href = "/dashboard/flow?correlation=" + encodeURIComponent(e.correlation);
    title.title = "the flow of this event's correlation";
    row.appendChild(title);
    if (e.summary) row.appendChild(el("span", "summary", e.summary));
    row.appendChild(el("span", "sub", e.at + " · " + e.stream + " v" + e.version +
                       (e.origin ? " · from " + e.origin : "")));
    list.prepend(row);
    while (list.children.length > KEPT) list.lastElementChild.remove();
  });
}

function draw(chart, points) {
  const keys = chart.dataset.series.split(",");
  chart.replaceChildren();
  const label = el("div", "label");
  label.appendChild(el("span", "", chart.dataset.label));
  const last = points.length ? points[points.length - 1] : {};
  label.appendChild(el("span", "now", keys.map((k) => String(last[k] ?? 0)).join(" · ")));
  chart.appendChild(label);
  const width = 300, height = 60;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", chart.dataset.label);
  let top = 0;
  for (const p of points) for (const k of keys) top = Math.max(top, p[k] ?? 0);
  top = top || 1;
  if (points.length > 1) {
    const t0 = points[0].t, span = (points[points.length - 1].t - t0) || 1;
    keys.forEach((k, i) => {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "s" + i);
      line.setAttribute("points", points.map((p) =>
        `${((p.t - t0) / span * width).toFixed(1)},${(height - 2 - (p[k] ?? 0) / top * (height - 6)).toFixed(1)}`).join(" "));
      svg.appendChild(line);
    });
  }
  chart.appendChild(svg);
  if (keys.length > 1) {
    const legend = el("div", "keys");
    keys.forEach((k, i) => legend.appendChild(el("span", "k" + i, k.replace("_lag", ""))));
    chart.appendChild(legend);
  }
}

function startCharts(box) {
  let span = "minutes", timer = null;
  const refresh = async () => {
    try {
      const answer = await fetch(box.dataset.samples + "?span=" + span, {credentials: "same-origin"});
      if (!answer.ok) return;
      const data = await answer.json();
      for (const chart of box.querySelectorAll(".chart")) draw(chart, data.points);
      for (const figure of document.querySelectorAll("[data-total]")) {
        figure.textContent = String(data.totals[figure.dataset.total] ?? "–");
      }
    } catch (e) { /* the next refresh tries again */ }
  };
  const every = () => { clearInterval(timer); timer = setInterval(refresh, span === "minutes" ? 3000 : 60000); };
  for (const button of box.querySelectorAll("[data-span]")) {
    button.addEventListener("click", () => {
      span = button.dataset.span;
      for (const b of box.querySelectorAll("[data-span]")) b.classList.toggle("on", b === button);
      refresh(); every();
    });
  }
  refresh(); every();
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  if (feed) startFeed(feed);
  const charts = document.getElementById("charts");
  if (charts) startCharts(charts);
});

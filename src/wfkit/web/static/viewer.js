// The viewer's behaviour: the live count of running runs, the graphs (mermaid, vendored), a run
// page kept up to date through the API's event stream, and the cancel / resume actions.
"use strict";

const FINAL = ["completed", "failed", "cancelled"];
const STREAM_EVENTS = ["stage.start", "stage.complete", "error", "decision", "complete"];

function dark() {
  return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
}

// Mermaid is large (its parse alone takes most of a second): it is loaded once the page has, and
// only where there is a graph to draw, so that the page itself is never waiting for it.
let mermaidLoading = null;

function loadMermaid() {
  if (!mermaidLoading) {
    mermaidLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/static/vendor/mermaid.min.js";
      script.onload = () => {
        window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark() ? "dark" : "default" });
        resolve(window.mermaid);
      };
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }
  return mermaidLoading;
}

// Graphs are drawn one batch at a time: a live page may replace a chart while an earlier batch is
// still drawing it, and mermaid must not be handed a chart that left the page.
let drawing = Promise.resolve();

function drawGraphs(root) {
  drawing = drawing.then(async () => {
    const charts = Array.from((root || document).querySelectorAll("pre.mermaid:not([data-processed])"))
      .filter((chart) => chart.isConnected);
    if (!charts.length) return;
    const mermaid = await loadMermaid();
    await mermaid.run({ nodes: charts.filter((chart) => chart.isConnected) });
  });
  return drawing;
}

function watchRunningCount() {
  const counter = document.getElementById("running-count");
  if (!counter) return;
  setInterval(async () => {
    try {
      const answer = await fetch("/workflows/runs?status=running&page_size=1", { headers: { Accept: "application/json" } });
      if (answer.ok) {
        const page = await answer.json();
        counter.textContent = String(page.total);
        counter.dataset.count = String(page.total);
      }
    } catch (_) { /* the server is away: the next round tries again */ }
  }, 5000);
}

function runPage() {
  const live = document.getElementById("live");
  if (!live) return;
  const runId = live.dataset.run;
  let source = null;
  let pending = null;

  let refreshing = Promise.resolve();

  function refresh() {
    pending = null;
    refreshing = refreshing.then(refreshNow, refreshNow);  // one at a time, in order
    return refreshing;
  }

  async function refreshNow() {
    const query = new URLSearchParams(location.search);
    query.set("part", "live");
    const answer = await fetch(`/runs/${runId}?${query}`);
    if (!answer.ok) return;
    const html = await answer.text();
    await drawing;  // not while mermaid draws the charts this replaces
    live.innerHTML = html;
    await drawGraphs(live);
    const status = document.getElementById("run-status");
    if (status && FINAL.includes(status.dataset.status) && source) {
      source.close();
      source = null;
    }
  }

  // Events come in bursts: one refresh per burst, and fewer for a big run (each reads all of it).
  function soon() {
    const stages = Number(live.dataset.stages || 0);
    if (pending === null) pending = setTimeout(refresh, Math.min(2000, 200 + stages / 10));
  }

  function follow() {
    if (source) return;
    // EventSource reconnects by itself, sending Last-Event-ID: nothing is replayed twice.
    source = new EventSource(`/workflows/runs/${runId}/events`);
    for (const name of STREAM_EVENTS) source.addEventListener(name, soon);
    source.addEventListener("complete", () => { if (source) { source.close(); source = null; } soon(); });
  }

  if (live.dataset.live === "yes") follow();
  loadDetails();

  // A big run's page comes with its first screen only; its details are fetched once it has loaded.
  async function loadDetails() {
    const holder = document.getElementById("details");
    if (!holder) return;
    const query = new URLSearchParams(location.search);
    query.set("part", "details");
    const answer = await fetch(`/runs/${runId}?${query}`);
    if (!answer.ok) {
      holder.textContent = `The details could not be loaded: ${answer.status} ${answer.statusText}`;
      return;
    }
    holder.outerHTML = await answer.text();
    await drawGraphs(live);
    if (location.hash) document.querySelector(location.hash)?.scrollIntoView();
  }

  live.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    const question = action === "cancel"
      ? `Cancel run ${runId}? A running run stops before its next node.`
      : `Resume run ${runId} from its checkpoint?`;
    if (!window.confirm(question)) return;
    button.disabled = true;
    const answer = await fetch(`/workflows/runs/${runId}/${action}`, { method: "POST" });
    const said = live.querySelector(".action-error");
    if (!answer.ok) {
      let detail = `${answer.status} ${answer.statusText}`;
      try { detail = (await answer.json()).detail || detail; } catch (_) { /* not problem details */ }
      if (said) { said.textContent = detail; said.hidden = false; }
      button.disabled = false;
      return;
    }
    await refresh();
    if (action === "resume") follow();
  });
}

window.addEventListener("DOMContentLoaded", () => {
  watchRunningCount();
  runPage();
});
window.addEventListener("load", () => { drawGraphs(document); });

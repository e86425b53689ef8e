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
    for (const chart of charts) chart.dataset.source = chart.textContent;
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
      const answer = await fetch("/workflows/runs?status=running&page_size=1&total=exact",
        { headers: { Accept: "application/json" } });
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
  const note = document.getElementById("live-note");
  const said = document.getElementById("action-error");
  let source = null;
  let pending = null;
  let failures = 0;  // refreshes or streams that failed in a row
  let refreshing = Promise.resolve();

  function tell(text) {
    if (!note) return;
    note.textContent = text || "";
    note.hidden = !text;
  }

  function shownFinal() {
    const status = document.getElementById("run-status");
    return Boolean(status && FINAL.includes(status.dataset.status));
  }

  // After a failure, the next try comes later and later (1 s, 2 s, 4 s... at most 30 s).
  function backoff() {
    return Math.min(30000, 1000 * 2 ** Math.min(failures, 5));
  }

  function failed(what) {
    failures += 1;
    tell(failures >= 6
      ? `Live updates lost (${what}): reload the page.`
      : `Live updates interrupted (${what}): trying again…`);
  }

  function refresh() {
    if (pending !== null) { clearTimeout(pending); pending = null; }
    refreshing = refreshing.then(refreshNow, refreshNow);  // one at a time, in order
    return refreshing;
  }

  async function refreshNow() {
    const query = new URLSearchParams(location.search);
    query.set("part", "live");
    let html;
    try {
      const answer = await fetch(`/runs/${runId}?${query}`);
      if (!answer.ok) throw new Error(`${answer.status} ${answer.statusText}`);
      html = await answer.text();
    } catch (err) {
      // The server is away (a restart, a proxy's 502): try again, until the page shows the end.
      failed(String(err.message || err));
      if (pending === null) pending = setTimeout(refresh, backoff());
      return;
    }
    await drawing;  // not while mermaid draws the charts this replaces
    swap(html);
    failures = 0;
    tell("");
    await drawGraphs(live);
    if (shownFinal()) {
      stop();
    } else if (!source) {
      follow();  // a run that is live again (resumed): follow it
    }
  }

  // Replace the live part, keeping what the reader was doing: the sections they opened, the
  // control they were on, and a graph that did not change (redrawing it would flash its source).
  function swap(html) {
    const opened = new Set(Array.from(live.querySelectorAll("details[open]")).map(keyOf));
    const focused = document.activeElement && live.contains(document.activeElement) ? keyOf(document.activeElement) : null;
    const charts = new Map(Array.from(live.querySelectorAll("pre.mermaid[data-processed]"))
      .map((chart) => [chart.dataset.source, chart]));
    live.innerHTML = html;
    for (const chart of live.querySelectorAll("pre.mermaid")) {
      const same = charts.get(chart.textContent);
      if (same) chart.replaceWith(same);
    }
    for (const element of live.querySelectorAll("details")) {
      if (opened.has(keyOf(element))) element.open = true;
    }
    if (focused) {
      const again = Array.from(live.querySelectorAll("button, a, summary")).find((e) => keyOf(e) === focused);
      if (again) again.focus();
    }
  }

  // Where an element stands on the page: the nearest element with an id, and its place among
  // the elements of its kind there (enough to find it again in the same page, refreshed).
  function keyOf(element) {
    const holder = element.parentElement && element.parentElement.closest("[id]");
    const kind = element.tagName;
    const peers = holder ? Array.from(holder.getElementsByTagName(kind)) : [];
    return `${holder ? holder.id : ""}/${kind}/${peers.indexOf(element)}/${element.dataset.action || ""}`;
  }

  // Events come in bursts: one refresh per burst, and fewer for a big run (each reads all of it).
  function soon() {
    const stages = Number(live.dataset.stages || 0);
    if (pending === null) pending = setTimeout(refresh, Math.min(2000, 200 + stages / 10));
  }

  function stop() {
    if (source) { source.close(); source = null; }
  }

  function follow() {
    if (source) return;
    // EventSource reconnects by itself after a dropped connection, sending Last-Event-ID: nothing
    // is replayed twice. It gives up for good on an answer that is not 200 (a proxy's 502, the
    // server's 503 while its database is away): then this opens it again, later.
    const opened = new EventSource(`/workflows/runs/${runId}/events`);
    source = opened;
    for (const name of STREAM_EVENTS) opened.addEventListener(name, soon);
    opened.addEventListener("open", () => { if (failures) { failures = 0; tell(""); } });
    // The run's end: refresh until the page shows it (the refresh closes the stream then).
    opened.addEventListener("complete", () => refresh());
    opened.addEventListener("error", () => {
      if (opened.readyState !== EventSource.CLOSED || source !== opened) return;
      source = null;
      failed("the event stream was refused");
      setTimeout(() => { if (!shownFinal()) { follow(); refresh(); } }, backoff());
    });
  }

  if (live.dataset.live === "yes") follow();
  loadDetails();

  // A big run's page comes with its first screen only; its details are fetched once it has loaded.
  async function loadDetails() {
    const holder = document.getElementById("details");
    if (!holder) return;
    const query = new URLSearchParams(location.search);
    query.set("part", "details");
    try {
      const answer = await fetch(`/runs/${runId}?${query}`);
      if (!answer.ok) throw new Error(`${answer.status} ${answer.statusText}`);
      holder.outerHTML = await answer.text();
    } catch (err) {
      holder.textContent = `The details could not be loaded (${err.message || err}): reload the page to try again.`;
      return;
    }
    await drawGraphs(live);
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView();
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
    if (said) said.hidden = true;
    let problem = null;
    try {
      const answer = await fetch(`/workflows/runs/${runId}/${action}`, { method: "POST" });
      if (!answer.ok) {
        problem = `${answer.status} ${answer.statusText}`;
        try { problem = (await answer.json()).detail || problem; } catch (_) { /* not problem details */ }
      }
    } catch (err) {
      problem = `the server could not be reached (${err.message || err}): try again`;
    }
    if (problem !== null && said) {
      // Outside the live part: the refresh below, and those that follow, leave it in place.
      said.textContent = `${action === "cancel" ? "Cancel" : "Resume"} refused: ${problem}`;
      said.hidden = false;
    }
    button.disabled = false;
    await refresh();  // refused or not, show the run as it is now
    if (problem === null && action === "resume") follow();
  });
}

window.addEventListener("DOMContentLoaded", () => {
  watchRunningCount();
  runPage();
});
window.addEventListener("load", () => { drawGraphs(document); });

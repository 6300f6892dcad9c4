// The header's workers line: who runs sessions, as GET /workers lists them. One process (the SQLite default)
// reads "cpu · idle"; several read "3 workers · 1 busy", and either opens a list of each worker's name, device,
// state and session. Reloaded when the queue changes, and every few seconds for `lost`, which no event announces.

import { api } from "./api.js";
import { $, formatDate, h } from "./dom.js";
import { bus, store } from "./state.js";

const POLL_MS = 5000;

let live = false; // only while the socket is live: a server that is down or wants a token is not asked
let loading = false;
let again = false;

/** The state the line shows: the most urgent of its workers' (`none` when nobody runs sessions). */
function overall(workers) {
  if (!workers.length) return "none";
  if (workers.some((worker) => worker.state === "lost")) return "lost";
  if (workers.some((worker) => worker.state === "busy")) return "busy";
  return "idle";
}

function summary(workers) {
  if (!workers.length) return "no workers";
  if (workers.length === 1) return `${workers[0].device} · ${workers[0].state}`;
  const counts = ["busy", "lost"]
    .map((state) => [state, workers.filter((worker) => worker.state === state).length])
    .filter(([, n]) => n > 0)
    .map(([state, n]) => `${n} ${state}`);
  return [`${workers.length} workers`, ...(counts.length ? counts : ["idle"])].join(" · ");
}

function workerItem(worker) {
  const session = worker.session_id;
  return h(
    "li",
    { dataset: { worker: worker.name, state: worker.state, session: session ?? "" } },
    h("span", { class: "worker-state" }, worker.state),
    h("span", { class: "worker-name" }, worker.name),
    h("span", { class: "worker-device" }, worker.device),
    session
      ? h("span", { class: "worker-session", title: session }, `session ${session.slice(0, 8)}`)
      : h("span", { class: "worker-note" }, "no session"),
    worker.state === "lost" ? h("span", { class: "worker-note" }, `last seen ${formatDate(worker.last_seen)}`) : null,
    worker.models_loaded.length ? h("span", { class: "worker-note" }, `loaded: ${worker.models_loaded.join(", ")}`) : null,
  );
}

function render(workers) {
  const box = $("#workers");
  box.dataset.state = overall(workers);
  box.dataset.count = String(workers.length);
  $("#workers-text").textContent = summary(workers);
  $("#workers-list").replaceChildren(...workers.map(workerItem));
  box.hidden = false;
}

/** Ask the server again; a call while one is on its way makes one more after it (answers never cross). */
async function refresh() {
  if (!live) return;
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  try {
    do {
      again = false;
      render((await api.get("/workers")).workers);
    } while (again && live);
  } catch (error) {
    console.warn("could not load the workers", error);
  } finally {
    loading = false;
  }
}

export function initWorkers() {
  const box = $("#workers");
  const database = store.config?.database;
  $("#workers-database").textContent = database ? `Database: ${database}` : "";
  // A small popup: a click elsewhere or Escape closes it.
  document.addEventListener("click", (event) => {
    if (box.open && !box.contains(event.target)) box.open = false;
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && box.open) {
      box.open = false;
      box.querySelector("summary").focus();
    }
  });
  bus.on("connection", (state) => {
    live = state === "live";
  });
  bus.on("ready", refresh);
  bus.on("queue_status", refresh);
  setInterval(() => document.hidden || refresh(), POLL_MS);
  document.addEventListener("visibilitychange", () => document.hidden || refresh());
}

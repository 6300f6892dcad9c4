// The Generate page's run panel: the live preview and step bar of the run on show, errors naming the node
// that failed, the results strip, Cancel / Cancel all mine, and the queue (ours and other clients' sessions).

import { api, withToken } from "./api.js";
import { $, errorText, h, notify } from "./dom.js";
import { bus, store } from "./state.js";

const TERMINAL = new Set(["completed", "failed", "canceled"]);

// Sessions this page queued: id → {index, total, seed, nodeTypes, status}.
const runs = new Map();
let shown = null; // the session whose progress the preview shows

/** A session the form just created: followed from now on, and on show if nothing else is running. */
export function trackRun(sessionId, run) {
  runs.set(sessionId, { ...run, status: "pending" });
  if (!shown || TERMINAL.has(runs.get(shown)?.status)) showRun(sessionId, "Waiting in the queue…");
}

/** The session was invoked: it waits in the queue unless an event already said otherwise. */
export function queuedRun(sessionId) {
  const run = runs.get(sessionId);
  if (run?.status === "pending") run.status = "queued";
}

// ---- the run in progress ---------------------------------------------------------------------------------

function setStatus(text) {
  $("#gen-status").textContent = text;
}

function setProgress(fraction) {
  $("#gen-progress").value = Math.max(0, Math.min(1, fraction));
}

function showError(text) {
  const box = $("#gen-error");
  box.textContent = text;
  box.hidden = !text;
}

function runLabel(run) {
  return run.total > 1 ? `image ${run.index} of ${run.total}` : "your image";
}

/** Point the preview at another of our sessions; clears what the previous one left. */
function showRun(sessionId, status) {
  if (shown === sessionId) return;
  shown = sessionId;
  const run = runs.get(sessionId);
  const preview = $("#gen-preview");
  preview.dataset.state = "waiting";
  $("#gen-preview-image").hidden = true;
  $("#gen-preview-caption").textContent = `Waiting for ${runLabel(run)} (seed ${run.seed})…`;
  setProgress(0);
  setStatus(status);
  showError("");
}

function nodeLabel(run, event) {
  const id = event.source_node_id || event.node_id;
  const type = event.node_type ?? run?.nodeTypes?.[id];
  return type && type !== id ? `“${id}” (${type})` : `“${id}”`;
}

function onProgress(event) {
  const run = runs.get(event.session_id);
  if (!run) return;
  if (shown !== event.session_id) showRun(event.session_id, "");
  const image = event.progress_image;
  if (image?.dataURL) {
    const img = $("#gen-preview-image");
    img.src = image.dataURL;
    img.alt = `Preview of ${runLabel(run)} at step ${event.step} of ${event.total_steps}`;
    img.hidden = false;
    $("#gen-preview").dataset.state = "progress";
    $("#gen-preview-caption").textContent = "";
  }
  setProgress(event.total_steps ? event.step / event.total_steps : 0);
  setStatus(`Step ${event.step} of ${event.total_steps}`);
}

function onImage(image) {
  const run = runs.get(image.session_id);
  if (!run || image.is_intermediate) return;
  addResult(image);
  if (shown === image.session_id || !shown) {
    const img = $("#gen-preview-image");
    img.src = withToken(image.image_url);
    img.alt = `Result: ${runLabel(run)}, seed ${run.seed}`;
    img.hidden = false;
    $("#gen-preview").dataset.state = "done";
    $("#gen-preview-caption").textContent = "";
  }
}

function addResult(image) {
  const list = $("#gen-results");
  if (list.querySelector(`[data-name="${CSS.escape(image.image_name)}"]`)) return;
  const scale = 96 / Math.max(image.width, image.height);
  list.prepend(
    h(
      "li",
      { dataset: { name: image.image_name } },
      h(
        "button",
        { type: "button", class: "result", onclick: () => bus.emit("open-image", image), "aria-label": "Open this result" },
        h("img", {
          src: withToken(image.thumbnail_url),
          alt: "",
          width: Math.round(image.width * scale),
          height: Math.round(image.height * scale),
          loading: "lazy",
        }),
      ),
    ),
  );
  while (list.children.length > 24) list.lastElementChild.remove();
}

function finish(sessionId, status, errorMessage) {
  const run = runs.get(sessionId);
  if (!run) return;
  run.status = status;
  if (shown === sessionId) {
    if (status === "completed") {
      setProgress(1);
      setStatus(`Done: ${runLabel(run)}, seed ${run.seed}`);
    } else if (status === "canceled") {
      setStatus(`Canceled ${runLabel(run)}`);
      $("#gen-preview").dataset.state = "canceled";
      if ($("#gen-preview-image").hidden) $("#gen-preview-caption").textContent = "Canceled before the first step.";
    } else if (status === "failed") {
      setStatus(`Failed: ${runLabel(run)}`);
      $("#gen-preview").dataset.state = "failed";
      if ($("#gen-preview-image").hidden) $("#gen-preview-caption").textContent = "This run failed; the reason is below.";
      if ($("#gen-error").hidden) showError(errorMessage ?? "The run failed; the server gave no reason.");
    }
  }
  updateCancelButtons();
}

/** After a reconnect that lost events: ask the server how each of our unfinished runs ended. */
async function refreshRuns() {
  for (const [id, run] of runs) {
    if (TERMINAL.has(run.status)) continue;
    try {
      const session = await api.get(`/sessions/${encodeURIComponent(id)}`);
      if (!TERMINAL.has(session.status)) {
        run.status = session.status;
        continue;
      }
      for (const output of Object.values(session.results ?? {})) {
        const name = output?.image?.image_name;
        if (name) onImage(await api.get(`/images/${encodeURIComponent(name)}`));
      }
      const errors = Object.entries(session.errors ?? {});
      const message = errors.length
        ? errors.map(([node, error]) => `The ${nodeLabel(run, { node_id: node })} node failed: ${error}`).join(" ")
        : undefined;
      if (message && shown === id) showError(message);
      finish(id, session.status, message);
    } catch (error) {
      console.warn("could not refresh a session", error);
    }
  }
}

// ---- cancel and the queue --------------------------------------------------------------------------------

async function cancel(sessionIds) {
  for (const id of sessionIds) {
    try {
      await api.delete(`/sessions/${encodeURIComponent(id)}/invoke`);
    } catch (error) {
      notify(`Could not cancel: ${errorText(error)}`, { kind: "error" });
    }
  }
}

function ourUnfinished() {
  return [...runs].filter(([, run]) => !TERMINAL.has(run.status)).map(([id]) => id);
}

function updateCancelButtons() {
  const running = store.queue.running;
  const current = running && runs.has(running) ? running : (shown && !TERMINAL.has(runs.get(shown)?.status) ? shown : null);
  const cancelButton = $("#gen-cancel");
  cancelButton.disabled = !current;
  cancelButton.dataset.session = current ?? "";
  $("#gen-cancel-all").disabled = ourUnfinished().length === 0;
}

function queueItem(id, isRunning) {
  const run = runs.get(id);
  const label = run ? `${runLabel(run)[0].toUpperCase()}${runLabel(run).slice(1)} · seed ${run.seed}` : `Session ${id.slice(0, 8)} (another client)`;
  return h(
    "li",
    { class: isRunning ? "running" : "", dataset: { session: id } },
    h("span", { class: "queue-state" }, isRunning ? "Running" : "Waiting"),
    h("span", { class: "queue-label" }, label),
    h("button", { type: "button", class: "small", onclick: () => cancel([id]), "aria-label": `Cancel ${label}` }, "Cancel"),
  );
}

export function renderQueue() {
  const { running, pending } = store.queue;
  const items = [];
  if (running) items.push(queueItem(running, true));
  for (const id of pending) items.push(queueItem(id, false));
  $("#queue-list").replaceChildren(...items);
  $("#queue-empty").hidden = items.length > 0;
  const badge = $("#queue-badge");
  badge.textContent = running || pending.length ? `${running ? "1 running" : "0 running"} · ${pending.length} waiting` : "";
  updateCancelButtons();
}

async function loadQueue() {
  try {
    store.queue = await api.get("/queue");
    renderQueue();
  } catch (error) {
    console.warn("could not load the queue", error);
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------

export function initRunPanel() {
  $("#gen-cancel").addEventListener("click", (event) => {
    const id = event.currentTarget.dataset.session;
    if (id) cancel([id]);
  });
  $("#gen-cancel-all").addEventListener("click", () => {
    // Waiting ones first, so none of them starts while the running one is being stopped.
    const ids = ourUnfinished();
    const running = store.queue.running;
    cancel([...ids.filter((id) => id !== running), ...ids.filter((id) => id === running)]);
  });
  bus.on("queue_status", (event) => {
    store.queue = { running: event.running, pending: event.pending };
    renderQueue();
  });
  bus.on("session_started", ({ session_id }) => {
    const run = runs.get(session_id);
    if (!run) return;
    run.status = "running";
    showRun(session_id, "");
    setStatus(`Starting ${runLabel(run)}…`);
    updateCancelButtons();
  });
  bus.on("model_load_started", (event) => {
    if (event.session_id && event.session_id === shown) {
      setStatus(`Loading ${event.model.model_name}${event.submodel ? ` (${event.submodel})` : ""}…`);
    }
  });
  bus.on("model_load_completed", (event) => {
    const run = runs.get(event.session_id);
    if (run?.node && event.session_id === shown) setStatus(`Running ${run.node}…`);
  });
  bus.on("invocation_started", (event) => {
    const run = runs.get(event.session_id);
    if (!run) return;
    run.node = nodeLabel(run, event);
    if (event.session_id === shown) setStatus(`Running ${run.node}…`);
  });
  bus.on("generator_progress", onProgress);
  bus.on("invocation_error", (event) => {
    const run = runs.get(event.session_id);
    if (!run) return;
    if (shown !== event.session_id) showRun(event.session_id, "");
    const kind = event.error_type ? `${event.error_type}: ` : "";
    showError(`The ${nodeLabel(run, event)} node failed — ${kind}${event.error}`);
  });
  bus.on("image_created", (event) => onImage(event.image));
  bus.on("session_complete", (event) => finish(event.session_id, event.status));
  bus.on("session_canceled", (event) => finish(event.session_id, "canceled"));
  bus.on("ready", async ({ first, resync }) => {
    await loadQueue();
    if (!first) await refreshRuns();
    if (resync) renderQueue();
  });
}

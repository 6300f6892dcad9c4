// The Generate page: the form, building and queuing the standard graph, the live preview and step bar of
// the run in progress, errors naming the node that failed, and the queue.

import { api, withToken } from "./api.js";
import { $, errorText, h, notify } from "./dom.js";
import { MAX_SEED, randomSeed, standardGraph } from "./graph.js";
import { bus, store } from "./state.js";

const FORM_KEY = "imagegraph.generate";
const TERMINAL = new Set(["completed", "failed", "canceled"]);

// Sessions this page queued: id → {index, total, seed, nodeTypes, status}.
const runs = new Map();
let shown = null; // the session whose progress the preview shows

const form = () => $("#generate-form");
const field = (name) => form().elements.namedItem(name);

export function modelKey(model) {
  return `${model.base_model}/${model.model_type}/${model.model_name}`;
}

// ---- the form -----------------------------------------------------------------------------------------

function fillSchedulers(schedulers) {
  const select = field("scheduler");
  select.replaceChildren(...schedulers.map((name) => h("option", { value: name }, name)));
  select.value = schedulers.includes("euler") ? "euler" : schedulers[0];
}

function fillModels() {
  const select = field("model");
  const hint = $("#gen-model-hint");
  const previous = select.value || savedForm().model;
  const mains = store.models
    .filter((model) => model.model_type === "main")
    .sort((a, b) => a.model_name.localeCompare(b.model_name));
  if (!mains.length) {
    select.replaceChildren(h("option", { value: "" }, "No models yet"));
    hint.replaceChildren("Add one on the ", h("a", { href: "#/models" }, "Models page"), ".");
    return;
  }
  select.replaceChildren(
    ...mains.map((model) =>
      h(
        "option",
        { value: modelKey(model), disabled: Boolean(model.error) },
        `${model.model_name} (${model.base_model})${model.error ? " — unusable" : ""}`,
      ),
    ),
  );
  const usable = mains.filter((model) => !model.error).map(modelKey);
  select.value = usable.includes(previous) ? previous : (usable[0] ?? "");
  const chosen = mains.find((model) => modelKey(model) === select.value);
  hint.textContent = usable.length ? (chosen?.description ?? "") : "Every model has an error; see the Models page.";
}

function savedForm() {
  try {
    return JSON.parse(localStorage.getItem(FORM_KEY) ?? "{}") ?? {};
  } catch {
    return {};
  }
}

function saveForm() {
  const values = {};
  for (const name of ["prompt", "negative", "model", "width", "height", "steps", "cfg", "scheduler", "seed", "count"]) {
    values[name] = field(name).value;
  }
  values.randomize = field("randomize").checked;
  localStorage.setItem(FORM_KEY, JSON.stringify(values));
}

function restoreForm() {
  const values = savedForm();
  for (const [name, value] of Object.entries(values)) {
    const input = field(name);
    if (!input || name === "model") continue;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else if (input.tagName !== "SELECT" || [...input.options].some((option) => option.value === value)) {
      input.value = value;
    }
  }
}

function syncSeedField() {
  field("seed").disabled = field("randomize").checked;
}

// Form field ← (node type, input) of the standard graph: the server's node catalogue gives their limits.
const LIMITS_FROM = {
  width: ["noise", "width"],
  height: ["noise", "height"],
  seed: ["noise", "seed"],
  steps: ["denoise_latents", "steps"],
  cfg: ["denoise_latents", "cfg_scale"],
};

/** Take min / max / multiple_of from GET /nodes/, so the form refuses what the server would. */
async function loadLimits() {
  let catalogue;
  try {
    catalogue = await api.get("/nodes/");
  } catch (error) {
    console.warn("could not load the node catalogue; using the form's own limits", error);
    return;
  }
  const nodes = Object.fromEntries((catalogue.nodes ?? catalogue).map((node) => [node.type, node]));
  for (const [name, [type, inputName]] of Object.entries(LIMITS_FROM)) {
    const spec = nodes[type]?.inputs?.find((input) => input.name === inputName);
    if (!spec) continue;
    const input = field(name);
    if (typeof spec.minimum === "number") input.min = spec.minimum;
    if (typeof spec.maximum === "number") input.max = spec.maximum;
    if (typeof spec.multiple_of === "number") input.step = spec.multiple_of;
  }
}

/** A whole number within the field's min / max (and a multiple of its step), or a message saying what is wrong. */
function checkInteger(name, label) {
  const input = field(name);
  const min = Number(input.min);
  const max = Number(input.max);
  const multiple = Number(input.step) || 1;
  const value = Number(input.value);
  let message = "";
  if (input.value.trim() === "" || !Number.isInteger(value)) message = `${label} must be a whole number.`;
  else if (value < min || value > max) message = `${label} must be between ${min} and ${max}.`;
  else if (value % multiple) message = `${label} must be a multiple of ${multiple} (try ${Math.round(value / multiple) * multiple}).`;
  input.setCustomValidity(message);
  return message ? { message, input } : { value };
}

/** The form's values as graph parameters, or null after telling the person what to fix. */
function readForm() {
  const problems = [];
  const get = (result) => {
    if (result.message) problems.push(result);
    return result.value;
  };
  const width = get(checkInteger("width", "Width"));
  const height = get(checkInteger("height", "Height"));
  const steps = get(checkInteger("steps", "Steps"));
  const count = get(checkInteger("count", "Images"));
  const randomize = field("randomize").checked;
  const seed = randomize ? 0 : get(checkInteger("seed", "Seed"));
  if (randomize) field("seed").setCustomValidity("");
  const cfgInput = field("cfg");
  const cfg = Number(cfgInput.value);
  const [cfgMin, cfgMax] = [Number(cfgInput.min), Number(cfgInput.max)];
  const cfgMessage =
    cfgInput.value.trim() === "" || !Number.isFinite(cfg) || cfg < cfgMin || cfg > cfgMax
      ? `CFG scale must be a number between ${cfgMin} and ${cfgMax}.`
      : "";
  cfgInput.setCustomValidity(cfgMessage);
  if (cfgMessage) problems.push({ message: cfgMessage, input: cfgInput });
  const model = store.models.find((m) => modelKey(m) === field("model").value);
  const modelSelect = field("model");
  const modelMessage = model ? "" : "Choose a model (add one on the Models page if the list is empty).";
  modelSelect.setCustomValidity(modelMessage);
  if (modelMessage) problems.push({ message: modelMessage, input: modelSelect });

  const errorBox = $("#gen-form-error");
  if (problems.length) {
    errorBox.textContent = problems.map((p) => p.message).join(" ");
    problems[0].input.focus();
    return null;
  }
  errorBox.textContent = "";
  return {
    prompt: field("prompt").value,
    negative: field("negative").value,
    model: { model_name: model.model_name, base_model: model.base_model, model_type: model.model_type },
    width,
    height,
    steps,
    cfg_scale: cfg,
    scheduler: field("scheduler").value,
    seed,
    randomize,
    count,
  };
}

/** The GenerationSettings the server builds the graph from (server/graph/standard.py). */
function graphSettings(params, seed) {
  const { prompt, negative, model, width, height, steps, cfg_scale, scheduler } = params;
  return { model, prompt, negative_prompt: negative, width, height, steps, cfg_scale, scheduler, seed };
}

/** Say which form field a 422 `loc` (["body", "nodes", "denoise", "steps"]) is about. */
function describeProblem(problem) {
  const loc = (problem.loc ?? []).filter((part) => part !== "body");
  const where = loc[0] === "nodes" && loc.length > 2 ? `${loc[1]}.${loc.slice(2).join(".")}` : loc.join(".");
  return where ? `${where}: ${problem.msg}` : problem.msg;
}

async function submit(event) {
  event.preventDefault();
  const params = readForm();
  if (!params) return;
  saveForm();
  const button = $("#gen-invoke");
  button.disabled = true;
  button.textContent = "Queuing…";
  const errorBox = $("#gen-form-error");
  try {
    const batch = [];
    for (let i = 0; i < params.count; i++) {
      batch.push(params.randomize ? randomSeed() : (params.seed + i) % (MAX_SEED + 1));
    }
    if (params.randomize) field("seed").value = batch.at(-1);
    for (const [i, seed] of batch.entries()) {
      const graph = await standardGraph(graphSettings(params, seed));
      const session = await api.post("/sessions/", graph);
      const nodeTypes = Object.fromEntries(Object.values(graph.nodes).map((node) => [node.id, node.type]));
      runs.set(session.id, { index: i + 1, total: batch.length, seed, nodeTypes, status: "pending" });
      if (!shown || TERMINAL.has(runs.get(shown)?.status)) showRun(session.id, "Waiting in the queue…");
      await api.put(`/sessions/${encodeURIComponent(session.id)}/invoke`);
      const run = runs.get(session.id);
      if (run.status === "pending") run.status = "queued";
    }
    updateCancelButtons();
    renderQueue();
    // On a phone the run panel sits under the form: bring the preview into view.
    if (window.matchMedia("(max-width: 800px)").matches) $(".run-panel").scrollIntoView({ block: "start" });
  } catch (error) {
    const details = (error.errors ?? []).map(describeProblem);
    errorBox.textContent = [errorText(error), ...details].join(" · ");
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
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

// ---- "Use these settings" ----------------------------------------------------------------------------------

function applySettings({ settings, source }) {
  const set = (name, value) => {
    if (value !== undefined && value !== null && value !== "") field(name).value = value;
  };
  set("prompt", settings.prompt);
  set("negative", settings.negative ?? "");
  set("width", settings.width);
  set("height", settings.height);
  set("steps", settings.steps);
  set("cfg", settings.cfg_scale);
  if (settings.scheduler && [...field("scheduler").options].some((o) => o.value === settings.scheduler)) {
    field("scheduler").value = settings.scheduler;
  }
  if (settings.seed !== undefined) {
    field("seed").value = settings.seed;
    field("randomize").checked = false;
    syncSeedField();
  }
  let note = "";
  if (settings.model_name) {
    const match =
      store.models.find(
        (m) => m.model_type === "main" && m.model_name === settings.model_name && (!settings.base_model || m.base_model === settings.base_model),
      ) ?? store.models.find((m) => m.model_type === "main" && m.model_name === settings.model_name);
    if (match && !match.error) field("model").value = modelKey(match);
    else note = ` Model “${settings.model_name}” is not installed; the model was left as it was.`;
  }
  saveForm();
  location.hash = "#/generate";
  notify(`Settings from ${source} metadata applied.${note}`, { kind: note ? "warning" : "info" });
  field("prompt").focus();
}

// ---- wiring ------------------------------------------------------------------------------------------------

export function initGenerate() {
  fillSchedulers(store.config?.schedulers ?? ["euler"]);
  restoreForm();
  syncSeedField();
  fillModels();
  loadLimits();

  form().addEventListener("submit", submit);
  form().addEventListener("change", saveForm);
  form().addEventListener("input", (event) => event.target.setCustomValidity?.(""));
  form().addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form().requestSubmit();
    }
  });
  field("randomize").addEventListener("change", syncSeedField);
  $("#gen-new-seed").addEventListener("click", () => {
    field("randomize").checked = false;
    syncSeedField();
    field("seed").value = randomSeed();
    saveForm();
  });
  field("model").addEventListener("change", () => {
    const chosen = store.models.find((model) => modelKey(model) === field("model").value);
    $("#gen-model-hint").textContent = chosen?.description ?? "";
  });
  $("#gen-open-workflow").addEventListener("click", async () => {
    // The graph Generate would queue for one image, to change freely in the editor.
    const params = readForm();
    if (!params) return;
    saveForm();
    const seed = params.randomize ? randomSeed() : params.seed;
    try {
      const graph = await standardGraph(graphSettings(params, seed));
      bus.emit("open-workflow", { graph, source: "the Generate page's settings" });
    } catch (error) {
      $("#gen-form-error").textContent = errorText(error);
    }
  });
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

  bus.on("models-loaded", fillModels);
  bus.on("use-settings", applySettings);
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

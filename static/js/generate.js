// The Generate page: wires the form (generate-form.js and its sections) to the server. Generate asks the
// server for the graph of the form's settings (POST /app/graph) and queues one session per image; the run
// panel (generate-run.js) follows them. "Use these settings" from the viewer lands here too.
//
// A new part of the form (ControlNet, hires fix, inpainting...) is a fieldset in index.html and a section
// module registered below; the form reads, saves and restores it with the rest.

import { api } from "./api.js";
import { $, errorText, notify } from "./dom.js";
import { embeddingSection, vaeSection } from "./generate-adapters.js";
import {
  applySettings,
  field,
  fillModels,
  fillSchedulers,
  form,
  graphSettings,
  loadLimits,
  modelChanged,
  readForm,
  registerSection,
  restoreForm,
  saveForm,
  syncSeedField,
} from "./generate-form.js";
import { loraSection } from "./generate-loras.js";
import { refinerSection } from "./generate-refiner.js";
import { initRunPanel, queuedRun, renderQueue, trackRun } from "./generate-run.js";
import { MAX_SEED, randomSeed, standardGraph } from "./graph.js";
import { bus, store } from "./state.js";

const SECTIONS = [embeddingSection, vaeSection, loraSection, refinerSection];

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
      trackRun(session.id, { index: i + 1, total: batch.length, seed, nodeTypes });
      await api.put(`/sessions/${encodeURIComponent(session.id)}/invoke`);
      queuedRun(session.id);
    }
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

function useSettings({ settings, source }) {
  const missing = applySettings(settings);
  location.hash = "#/generate";
  const note = missing.length ? ` Not installed here: ${missing.join(", ")}.` : "";
  notify(`Settings from ${source} metadata applied.${note}`, { kind: missing.length ? "warning" : "info" });
  field("prompt").focus();
}

async function openAsWorkflow() {
  // The graph Generate would queue for one image, to change freely in the editor.
  const params = readForm();
  if (!params) return;
  saveForm();
  const seed = params.randomize ? randomSeed() : params.seed;
  try {
    const graph = await standardGraph(graphSettings(params, seed));
    bus.emit("open-workflow", { graph, source: "the Generate page's settings" });
  } catch (error) {
    $("#gen-form-error").textContent = [errorText(error), ...(error.errors ?? []).map(describeProblem)].join(" · ");
  }
}

export function initGenerate() {
  fillSchedulers(store.config?.schedulers ?? ["euler"]);
  for (const section of SECTIONS) {
    registerSection(section);
    section.init(saveForm);
  }
  restoreForm();
  syncSeedField();
  fillModels();
  loadLimits({ clip_skip: ["clip_skip", "skipped_layers"] });

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
  field("model").addEventListener("change", () => modelChanged());
  $("#gen-open-workflow").addEventListener("click", openAsWorkflow);
  initRunPanel();

  bus.on("models-loaded", fillModels);
  bus.on("use-settings", useSettings);
}

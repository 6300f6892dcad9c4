// The Generate page: wires the form (generate-form.js and its sections) to the server. Generate asks the
// server for the graph of the form's settings (POST /app/graph) and queues one session per image; the run
// panel (generate-run.js) follows them. "Use these settings" from the viewer lands here too.
//
// Each part of the form beyond the basics (LoRAs, the refiner, the init image and its mask, ControlNets, the
// hires fix) is a fieldset in index.html and a section module registered below; the form reads, saves and
// restores it with the rest. A 422 is shown on the field it names, in the form's words.

import { api } from "./api.js";
import { $, errorText, notify } from "./dom.js";
import { embeddingSection, vaeSection } from "./generate-adapters.js";
import { controlSection } from "./generate-controls.js";
import {
  applySettings,
  field,
  fillModels,
  fillSchedulers,
  form,
  graphSettings,
  loadLimits,
  locateProblem,
  modelChanged,
  prepareSections,
  readForm,
  registerSection,
  restoreForm,
  saveForm,
  syncSeedField,
} from "./generate-form.js";
import { hiresSection } from "./generate-hires.js";
import { initSection } from "./generate-init.js";
import { loraSection } from "./generate-loras.js";
import { refinerSection } from "./generate-refiner.js";
import { initRunPanel, queuedRun, renderQueue, trackRun } from "./generate-run.js";
import { MAX_SEED, randomSeed, standardGraph } from "./graph.js";
import { bus, store } from "./state.js";

const SECTIONS = [embeddingSection, vaeSection, loraSection, refinerSection, initSection, controlSection, hiresSection];

/**
 * Say which form field a 422 `loc` (["body", "controls", 0, "image"], ["body", "nodes", "denoise", "steps"]) is
 * about, in the form's words, and mark that field → {text, input}.
 */
function describeProblem(problem) {
  const loc = (problem.loc ?? []).filter((part) => part !== "body");
  const found = loc.length ? locateProblem(loc) : null;
  if (found) {
    found.input?.setCustomValidity?.(problem.msg);
    return { text: `${found.label}: ${problem.msg}`, input: found.input };
  }
  const where = loc[0] === "nodes" && loc.length > 2 ? `${loc[1]}.${loc.slice(2).join(".")}` : loc.join(".");
  return { text: where ? `${where}: ${problem.msg}` : problem.msg, input: null };
}

/** A refusal in the form's error line: each problem on the field it names, the first field focused. */
function showRefusal(error) {
  const problems = (error.errors ?? []).map(describeProblem);
  const box = $("#gen-form-error");
  if (!problems.length) {
    box.textContent = errorText(error);
    return;
  }
  const lead = error.status === 422 ? "The server refused these settings. " : `${errorText(error)} `;
  box.textContent = lead + problems.map((problem) => problem.text).join(" · ");
  problems.find((problem) => problem.input)?.input.focus();
}

async function submit(event) {
  event.preventDefault();
  const params = readForm();
  if (!params) return;
  saveForm();
  const button = $("#gen-invoke");
  button.disabled = true;
  button.textContent = "Queuing…";
  try {
    await prepareSections(params.sections);
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
    showRefusal(error);
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
    await prepareSections(params.sections);
    const graph = await standardGraph(graphSettings(params, seed));
    bus.emit("open-workflow", { graph, source: "the Generate page's settings" });
  } catch (error) {
    showRefusal(error);
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

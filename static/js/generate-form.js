// The Generate form: its basic fields (prompt, model, size, steps, CFG, scheduler, seed, count) and the
// sections registered beside them (LoRAs, embeddings, VAE and clip skip, the refiner; later ones the same
// way). Filling the model and scheduler lists, limits from the node catalogue, checking what was typed,
// saving and restoring the form, the size each kind of model is made for, and "Use these settings".
//
// A section is {name, modelChanged(model), read(problems) → part of GenerationSettings, save() → JSON,
// restore(saved), apply(settings, model) → [what could not be restored]}, and optionally
// prepare(parts) → more of the settings, once they are sent (an upload), and locate(loc) → {label, input} of
// the field a 422's `loc` names; see registerSection.

import { api } from "./api.js";
import { $, h } from "./dom.js";
import { MAX_SEED } from "./graph.js";
import { findModel, findNamed, identifier, modelKey } from "./model-choice.js";
import { store } from "./state.js";

const FORM_KEY = "imagegraph.generate";
const BASIC_FIELDS = ["prompt", "negative", "model", "width", "height", "steps", "cfg", "scheduler", "seed", "count"];
// Main models people generate with; refiners are offered only as refiners.
const GENERATING_BASES = ["sd-1", "sd-2", "sdxl"];

const sections = [];
let sizeClass = "sd-1"; // what the width and height in the form are for (the HTML defaults are SD-1's 512)
let sizes = {}; // size class → [width, height] last set for it

export const form = () => $("#generate-form");
export const field = (name) => form().elements.namedItem(name);

/** Add a section to the form: it is read, saved, restored and told of model changes with the rest. */
export function registerSection(section) {
  sections.push(section);
}

/** What the sections still have to do before the settings are sent (the inpaint mask is uploaded). */
export async function prepareSections(parts) {
  for (const section of sections) if (section.prepare) Object.assign(parts, await section.prepare(parts));
}

// The basic fields, by the GenerationSettings name (or the standard graph's node input) a 422 gives.
const BASIC_LOCATIONS = {
  model: ["model", "Model"],
  prompt: ["prompt", "Prompt"],
  negative_prompt: ["negative", "Negative prompt"],
  width: ["width", "Width"],
  height: ["height", "Height"],
  steps: ["steps", "Steps"],
  cfg_scale: ["cfg", "CFG scale"],
  scheduler: ["scheduler", "Scheduler"],
  seed: ["seed", "Seed"],
};

/**
 * The form field a 422's `loc` is about, without "body": ["controls", 0, "weight"] (POST /app/graph) or
 * ["nodes", "control_1", "image"] (POST /sessions/) → {label, input}, or null when no field is.
 */
export function locateProblem(loc) {
  for (const section of sections) {
    const found = section.locate?.(loc);
    if (found) return found;
  }
  const name = loc[0] === "nodes" ? loc[2] : loc[0];
  const basic = BASIC_LOCATIONS[name];
  return basic ? { label: basic[1], input: field(basic[0]) } : null;
}

/** The main model chosen in the form (a ModelConfig), or null. */
export function chosenModel() {
  return findModel(field("model").value);
}

// ---- sizes: each kind of model has the size it was trained at -----------------------------------------

/** The square size a model is made for: SDXL 1024, SD-2's 768-v (v-prediction) models 768, the rest 512. */
export function nativeSize(model) {
  if (model?.base_model === "sdxl") return 1024;
  if (model?.base_model === "sd-2" && model.prediction_type === "v_prediction") return 768;
  return 512;
}

const classOf = (model) => (model ? `${model.base_model}${model.prediction_type === "v_prediction" ? "-v" : ""}` : sizeClass);

function rememberSize() {
  sizes[sizeClass] = [field("width").value, field("height").value];
}

/**
 * The chosen model changed (a person picked one, or the list changed under it). A model of another kind gets
 * the size last used for that kind, or its native size; one of the same kind keeps what was typed.
 */
export function modelChanged({ keepSize = false } = {}) {
  const model = chosenModel();
  $("#gen-model-hint").textContent = model?.description ?? "";
  const next = classOf(model);
  if (next !== sizeClass) {
    rememberSize();
    sizeClass = next;
    if (!keepSize) {
      const [width, height] = sizes[next] ?? [nativeSize(model), nativeSize(model)];
      field("width").value = width;
      field("height").value = height;
    }
  }
  for (const section of sections) section.modelChanged(model);
}

// ---- lists from the server ------------------------------------------------------------------------------

export function fillSchedulers(schedulers) {
  const select = field("scheduler");
  select.replaceChildren(...schedulers.map((name) => h("option", { value: name }, name)));
  select.value = schedulers.includes("euler") ? "euler" : schedulers[0];
}

export function fillModels() {
  const select = field("model");
  const hint = $("#gen-model-hint");
  const previous = select.value || savedForm().model;
  const mains = store.models
    .filter((model) => model.model_type === "main" && GENERATING_BASES.includes(model.base_model))
    .sort((a, b) => a.model_name.localeCompare(b.model_name));
  if (!mains.length) {
    select.replaceChildren(h("option", { value: "" }, "No models yet"));
    hint.replaceChildren("Add one on the ", h("a", { href: "#/models" }, "Models page"), ".");
    for (const section of sections) section.modelChanged(null);
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
  modelChanged();
  if (!usable.length) hint.textContent = "Every model has an error; see the Models page.";
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
export async function loadLimits(extra = {}) {
  let catalogue;
  try {
    catalogue = await api.get("/nodes/");
  } catch (error) {
    console.warn("could not load the node catalogue; using the form's own limits", error);
    return;
  }
  const nodes = Object.fromEntries((catalogue.nodes ?? catalogue).map((node) => [node.type, node]));
  for (const [name, [type, inputName]] of Object.entries({ ...LIMITS_FROM, ...extra })) {
    const spec = nodes[type]?.inputs?.find((input) => input.name === inputName);
    const input = field(name);
    if (!spec || !input) continue;
    if (typeof spec.minimum === "number") input.min = spec.minimum;
    if (typeof spec.maximum === "number") input.max = spec.maximum;
    if (typeof spec.multiple_of === "number") input.step = spec.multiple_of;
  }
}

// ---- saving and restoring ---------------------------------------------------------------------------------

export function savedForm() {
  try {
    return JSON.parse(localStorage.getItem(FORM_KEY) ?? "{}") ?? {};
  } catch {
    return {};
  }
}

export function saveForm() {
  const values = {};
  for (const name of BASIC_FIELDS) values[name] = field(name).value;
  values.randomize = field("randomize").checked;
  rememberSize();
  values.size_class = sizeClass;
  values.sizes = sizes;
  for (const section of sections) values[section.name] = section.save();
  localStorage.setItem(FORM_KEY, JSON.stringify(values));
}

export function restoreForm() {
  const values = savedForm();
  for (const name of [...BASIC_FIELDS, "randomize"]) {
    const input = field(name);
    if (!(name in values) || name === "model") continue;
    const value = values[name];
    if (input.type === "checkbox") input.checked = Boolean(value);
    else if (input.tagName !== "SELECT" || [...input.options].some((option) => option.value === value)) {
      input.value = value;
    }
  }
  if (typeof values.size_class === "string") sizeClass = values.size_class;
  if (values.sizes && typeof values.sizes === "object") sizes = values.sizes;
  for (const section of sections) if (section.name in values) section.restore(values[section.name]);
}

export function syncSeedField() {
  field("seed").disabled = field("randomize").checked;
}

// ---- reading the form ---------------------------------------------------------------------------------------

/** A whole number within the field's min / max (and a multiple of its step), or a message saying what is wrong. */
export function checkInteger(name, label) {
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

/** A number within min / max of `input` (a decimal one), or a problem; an empty field is `undefined`. */
export function checkNumber(input, label, { optional = false } = {}) {
  const text = input.value.trim();
  if (optional && text === "") {
    input.setCustomValidity("");
    return { value: undefined };
  }
  const value = Number(text);
  const [min, max] = [Number(input.min), Number(input.max)];
  const message =
    text === "" || !Number.isFinite(value) || value < min || value > max ? `${label} must be a number between ${min} and ${max}.` : "";
  input.setCustomValidity(message);
  return message ? { message, input } : { value };
}

/**
 * The form's values, or null after telling the person what to fix: {prompt, negative, model, width, height,
 * steps, cfg_scale, scheduler, seed, randomize, count, sections} where `sections` holds the registered
 * sections' parts of the GenerationSettings.
 */
export function readForm() {
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
  const cfg = get(checkNumber(field("cfg"), "CFG scale"));
  const model = chosenModel();
  const modelSelect = field("model");
  const modelMessage = model ? "" : "Choose a model (add one on the Models page if the list is empty).";
  modelSelect.setCustomValidity(modelMessage);
  if (modelMessage) problems.push({ message: modelMessage, input: modelSelect });
  const parts = {};
  for (const section of sections) Object.assign(parts, section.read(problems, model));

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
    model: identifier(model),
    width,
    height,
    steps,
    cfg_scale: cfg,
    scheduler: field("scheduler").value,
    seed,
    randomize,
    count,
    sections: parts,
  };
}

/** The GenerationSettings the server builds the graph from (server/graph/standard.py). */
export function graphSettings(params, seed) {
  const { prompt, negative, model, width, height, steps, cfg_scale, scheduler, sections: parts } = params;
  return { model, prompt, negative_prompt: negative, width, height, steps, cfg_scale, scheduler, seed, ...parts };
}

// ---- "Use these settings" -------------------------------------------------------------------------------------

/** Put an image's settings (metadata.js's form) into the form → the things it names that are not installed. */
export function applySettings(settings) {
  const set = (name, value) => {
    if (value !== undefined && value !== null && value !== "") field(name).value = value;
  };
  const missing = [];
  if (settings.model_name) {
    const match =
      findNamed("main", settings.model_name, { base: settings.base_model }) ??
      findNamed("main", settings.model_name, { bases: GENERATING_BASES });
    if (match && GENERATING_BASES.includes(match.base_model)) field("model").value = modelKey(match);
    else missing.push(`the model “${settings.model_name}” (the model was left as it was)`);
  }
  // The image's own size wins over the model's usual one.
  modelChanged({ keepSize: Boolean(settings.width && settings.height) });
  set("prompt", settings.prompt);
  set("negative", settings.negative ?? "");
  set("width", settings.width);
  set("height", settings.height);
  set("steps", settings.steps);
  set("cfg", settings.cfg_scale);
  if (settings.scheduler && [...field("scheduler").options].some((o) => o.value === settings.scheduler)) {
    field("scheduler").value = settings.scheduler;
  }
  if (settings.seed !== undefined && settings.seed >= 0 && settings.seed <= MAX_SEED) {
    field("seed").value = settings.seed;
    field("randomize").checked = false;
    syncSeedField();
  }
  const model = chosenModel();
  for (const section of sections) missing.push(...section.apply(settings, model));
  saveForm();
  return missing;
}

// The Generate form's LoRA section: a searchable picker offering the LoRAs of the chosen model's base, and
// the LoRAs added, in the order they are applied, each with a weight (slider and number) and a remove button.
// A LoRA that no longer fits (the model changed to another base) stays in the list, marked, and stops the
// form until it is removed: silently leaving it out would make an image other than the one asked for.

import { combobox } from "./combobox.js";
import { $, h } from "./dom.js";
import { baseName, findModel, findNamed, identifier, modelKey, modelsOf } from "./model-choice.js";

export const WEIGHT_MIN = -10; // GenerationSettings' limits
export const WEIGHT_MAX = 10;
const SLIDER_MIN = -2; // where almost every LoRA weight lies; the number takes the rest
const SLIDER_MAX = 2;
const DEFAULT_WEIGHT = 0.75;

let loras = []; // [{model_name, base_model, weight}], in the order they are applied
let model = null; // the chosen main model
let onChange = () => {};

const keyOf = (lora) => modelKey({ ...lora, model_type: "lora" });

/** Why `lora` cannot be used with the chosen model, or "". */
function problemOf(lora) {
  if (!findModel(keyOf(lora))) return "not installed";
  if (model && lora.base_model !== model.base_model) {
    return `for ${baseName(lora.base_model)} models, not ${baseName(model.base_model)}`;
  }
  return "";
}

function weightControls(lora, index) {
  const label = `Weight of ${lora.model_name}`;
  const slider = h("input", {
    type: "range",
    min: SLIDER_MIN,
    max: SLIDER_MAX,
    step: 0.05,
    value: String(lora.weight),
    "aria-label": label,
    dataset: { weightSlider: "" },
  });
  const number = h("input", {
    type: "number",
    min: WEIGHT_MIN,
    max: WEIGHT_MAX,
    step: 0.05,
    value: String(lora.weight),
    inputmode: "decimal",
    "aria-label": `${label}, as a number`,
    dataset: { weight: "", index },
  });
  slider.addEventListener("input", () => {
    number.value = slider.value;
    number.setCustomValidity("");
    loras[index].weight = Number(slider.value);
  });
  number.addEventListener("input", () => {
    const value = Number(number.value);
    if (number.value.trim() !== "" && Number.isFinite(value)) {
      slider.value = String(value);
      loras[index].weight = value;
    }
  });
  return [slider, number];
}

function render() {
  const rows = loras.map((lora, index) => {
    const problem = problemOf(lora);
    return h(
      "li",
      { class: `lora-row${problem ? " has-problem" : ""}`, dataset: { lora: keyOf(lora) } },
      h("span", { class: "lora-name" }, lora.model_name),
      h(
        "button",
        {
          type: "button",
          class: "icon-button small",
          "aria-label": `Remove the LoRA ${lora.model_name}`,
          onclick: () => remove(index),
        },
        "✕",
      ),
      ...weightControls(lora, index),
      problem ? h("p", { class: "lora-problem" }, `${lora.model_name} is ${problem}: remove it to generate.`) : null,
    );
  });
  $("#gen-loras").replaceChildren(...rows);
  $("#gen-loras").hidden = !rows.length;
}

function add(picked) {
  const config = findModel(picked.value);
  if (!config) return;
  loras.push({ model_name: config.model_name, base_model: config.base_model, weight: DEFAULT_WEIGHT });
  render();
  onChange();
  // Straight to the new LoRA's weight: it is what a person sets next.
  $("#gen-loras").lastElementChild?.querySelector("[data-weight]")?.focus();
}

function remove(index) {
  loras.splice(index, 1);
  render();
  onChange();
  $("#gen-lora-search").focus();
}

function offered() {
  const added = new Set(loras.map(keyOf));
  return modelsOf("lora", model?.base_model)
    .filter((config) => !added.has(modelKey(config)))
    .map((config) => ({ value: modelKey(config), label: config.model_name }));
}

function showMissing(missing) {
  const note = $("#gen-lora-missing");
  note.replaceChildren(
    h("span", {}, `Not installed here, so left out: ${missing.map((m) => `${m.model_name} (${m.weight})`).join(", ")}.`),
    h("button", { type: "button", class: "small", onclick: () => showMissing([]) }, "Dismiss"),
  );
  note.hidden = !missing.length;
}

export const loraSection = {
  name: "loras",

  /** `changed` runs after every edit that the form should save. */
  init(changed) {
    onChange = changed;
    combobox({
      input: $("#gen-lora-search"),
      listbox: $("#gen-lora-options"),
      items: offered,
      onPick: add,
      empty: () =>
        loras.length
          ? `Every ${baseName(model?.base_model)} LoRA is added.`
          : `No LoRAs for ${model ? baseName(model.base_model) : "this"} models yet; add some on the Models page.`,
    });
    render();
  },

  modelChanged(chosen) {
    model = chosen;
    render();
  },

  read(problems) {
    const settings = [];
    for (const [index, lora] of loras.entries()) {
      const input = $(`#gen-loras [data-weight][data-index="${index}"]`);
      const problem = problemOf(lora);
      if (problem) {
        problems.push({ message: `The LoRA ${lora.model_name} is ${problem}: remove it to generate.`, input });
        continue;
      }
      const text = input.value.trim();
      const weight = Number(text);
      const bad = text === "" || !Number.isFinite(weight) || weight < WEIGHT_MIN || weight > WEIGHT_MAX;
      const message = bad ? `The weight of ${lora.model_name} must be a number between ${WEIGHT_MIN} and ${WEIGHT_MAX}.` : "";
      input.setCustomValidity(message);
      if (message) problems.push({ message, input });
      settings.push({ lora: identifier({ ...lora, model_type: "lora" }), weight });
    }
    return { loras: settings };
  },

  save() {
    return loras;
  },

  restore(saved) {
    if (!Array.isArray(saved)) return;
    loras = saved
      .filter((lora) => typeof lora?.model_name === "string" && typeof lora.base_model === "string")
      .map((lora) => ({ model_name: lora.model_name, base_model: lora.base_model, weight: Number(lora.weight) || 0 }));
    render();
  },

  /** settings.loras: [{model_name, base_model?, weight}] (undefined: the image does not say). */
  apply(settings, chosen) {
    model = chosen;
    if (!Array.isArray(settings.loras)) return [];
    const found = [];
    const missing = [];
    for (const wanted of settings.loras) {
      const config = findNamed("lora", wanted.model_name, {
        base: wanted.base_model,
        bases: chosen ? [chosen.base_model] : null,
      });
      if (config) found.push({ model_name: config.model_name, base_model: config.base_model, weight: wanted.weight });
      else missing.push(wanted);
    }
    loras = found;
    render();
    showMissing(missing);
    return missing.map((lora) => `the LoRA “${lora.model_name}”`);
  },
};

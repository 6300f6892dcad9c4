// The Generate form's ControlNet section: one or more ControlNets, each with its control image (an upload or
// an image of the gallery), a processor (none, or Canny with its two thresholds and a preview of the edge map
// the ControlNet will see), a ControlNet model of the main model's base, weight, begin and end (percent of
// the steps), control mode and resize mode. Sent as `controls`; the server makes the edge map in the graph.
// A ControlNet left over from a model of another base stays, marked, and stops the form until it is changed.

import { withToken } from "./api.js";
import { cannyPreview } from "./control-preview.js";
import { $, errorText, h } from "./dom.js";
import { imageInfo, imageSourceButtons } from "./image-source.js";
import { baseName, findModel, findNamed, identifier, modelKey, modelsOf } from "./model-choice.js";

const MODES = [
  ["balanced", "Balanced"],
  ["more_prompt", "The prompt is more important"],
  ["more_control", "The ControlNet is more important"],
  ["unbalanced", "Both (unbalanced)"],
];
const RESIZE_MODES = [
  ["just_resize", "Stretch to the size"],
  ["crop_resize", "Crop to the size"],
  ["fill_resize", "Fit inside, fill the rest"],
];
const WEIGHT = { min: -1, max: 2 }; // ControlSettings' limits
const THRESHOLD = { min: 0, max: 255, step: 1 }; // Canny's, on 8-bit pixels
const PERCENT = { min: 0, max: 100, step: 1 };
const PREVIEW_DELAY_MS = 350; // thresholds typed in quick succession make one preview

let controls = []; // [{uid, image, processor, low, high, model, weight, begin, end, mode, resize_mode}]
let model = null; // the chosen main model
let onChange = () => {};
let nextUid = 1;
const previewTimers = new Map(); // uid → timer

function blank() {
  const first = modelsOf("controlnet", model?.base_model)[0];
  return {
    uid: nextUid++,
    image: null, // {image_name, width, height, thumbnail_url}
    processor: "none",
    low: 100,
    high: 200,
    model: first ? modelKey(first) : "",
    weight: 1,
    begin: 0,
    end: 100,
    mode: "balanced",
    resize_mode: "just_resize",
  };
}

const title = (index) => `ControlNet ${index + 1}`;

/** Why the control's model cannot be used with the main model, or "". */
function modelProblem(control) {
  if (!control.model) {
    const base = model ? baseName(model.base_model) : "this";
    if (modelsOf("controlnet", model?.base_model).length) return "choose its model";
    return `there are no ControlNet models for ${base} models yet (add one on the Models page)`;
  }
  const config = findModel(control.model);
  if (!config) return `its model ${control.model.split("/").pop()} is not installed`;
  if (model && config.base_model !== model.base_model) {
    return `its model ${config.model_name} is for ${baseName(config.base_model)} models, not ${baseName(model.base_model)}`;
  }
  return "";
}

// ---- one control --------------------------------------------------------------------------------------

function select(id, options, value, onPick) {
  const el = h("select", { id }, ...options.map(([key, label]) => h("option", { value: key }, label)));
  el.value = value;
  el.addEventListener("change", () => onPick(el.value));
  return el;
}

function numberField({ id, label, value, min, max, step, onValue }) {
  const input = h("input", { id, type: "number", min, max, step, value: String(value), inputmode: "numeric" });
  input.addEventListener("input", () => {
    const number = Number(input.value);
    if (input.value.trim() !== "" && Number.isFinite(number)) onValue(number);
  });
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

function weightField(control, prefix) {
  const id = `${prefix}-weight`;
  const slider = h("input", { type: "range", min: 0, max: 2, step: 0.05, value: String(control.weight), "aria-label": "Weight (slider)" });
  const number = h("input", {
    id,
    type: "number",
    min: WEIGHT.min,
    max: WEIGHT.max,
    step: 0.05,
    value: String(control.weight),
    inputmode: "decimal",
  });
  slider.addEventListener("input", () => {
    number.value = slider.value;
    number.setCustomValidity("");
    control.weight = Number(slider.value);
  });
  number.addEventListener("input", () => {
    const value = Number(number.value);
    if (number.value.trim() !== "" && Number.isFinite(value)) {
      slider.value = String(value);
      control.weight = value;
    }
  });
  return h("div", { class: "field" }, h("label", { for: id }, "Weight"), h("div", { class: "slider-pair" }, slider, number));
}

function imageFigure(control, index) {
  const image = control.image;
  return h(
    "figure",
    { class: "control-image" },
    image
      ? h("img", {
          src: withToken(image.thumbnail_url),
          alt: `${title(index)}'s control image, ${image.width} × ${image.height}`,
          dataset: { controlImage: image.image_name },
        })
      : h("span", { class: "control-empty" }, "No control image yet"),
    h("figcaption", {}, "Control image"),
  );
}

function previewFigure(control, index) {
  return h(
    "figure",
    { class: "control-image", dataset: { controlPreview: "" } },
    h("span", { class: "control-empty", role: "status" }, control.image ? "Making the edge map…" : "The edge map shows here"),
    h("figcaption", {}, `Edge map (${control.low} / ${control.high})`),
  );
}

function modelOptions(control) {
  const fitting = modelsOf("controlnet", model?.base_model);
  const options = fitting.map((config) => [modelKey(config), config.model_name]);
  if (control.model && !options.some(([key]) => key === control.model)) {
    const config = findModel(control.model);
    options.unshift([control.model, `${config?.model_name ?? control.model.split("/").pop()} (does not fit)`]);
  }
  if (!options.length) options.push(["", "No ControlNet models for this base"]);
  else if (!control.model) options.unshift(["", "Choose a ControlNet"]);
  return options;
}

function row(control, index) {
  const prefix = `gen-control-${control.uid}`;
  const problem = modelProblem(control);
  const canny = control.processor === "canny";
  const refresh = () => {
    render();
    onChange();
  };
  const sources = imageSourceButtons({
    id: `${prefix}-file`,
    what: `${title(index)}'s control image`,
    category: "control",
    current: () => control.image?.image_name ?? null,
    onImage: (image) => {
      control.image = { image_name: image.image_name, width: image.width, height: image.height, thumbnail_url: image.thumbnail_url };
      refresh();
    },
    onError: (text) => {
      $("#gen-form-error").textContent = text;
    },
  });
  return h(
    "li",
    { class: `control-row${problem && control.model ? " has-problem" : ""}`, dataset: { control: String(index) } },
    h(
      "div",
      { class: "control-head" },
      h("span", { class: "control-title" }, title(index)),
      h("button", { type: "button", class: "icon-button small", "aria-label": `Remove ${title(index)}`, onclick: () => remove(index) }, "✕"),
    ),
    h("div", { class: "control-images" }, imageFigure(control, index), canny ? previewFigure(control, index) : null),
    sources,
    h(
      "div",
      { class: "field" },
      h("label", { for: `${prefix}-model` }, "Model"),
      select(`${prefix}-model`, modelOptions(control), control.model, (value) => {
        control.model = value;
        refresh();
      }),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: `${prefix}-processor` }, "Processor"),
      select(`${prefix}-processor`, [["none", "None (the image is the control map)"], ["canny", "Canny edges"]], control.processor, (value) => {
        control.processor = value;
        refresh();
      }),
    ),
    canny
      ? h(
          "div",
          { class: "row" },
          numberField({
            id: `${prefix}-low`,
            label: "Low threshold",
            value: control.low,
            ...THRESHOLD,
            onValue: (v) => thresholds(control, index, { low: v }),
          }),
          numberField({
            id: `${prefix}-high`,
            label: "High threshold",
            value: control.high,
            ...THRESHOLD,
            onValue: (v) => thresholds(control, index, { high: v }),
          }),
        )
      : null,
    weightField(control, prefix),
    h(
      "div",
      { class: "row" },
      numberField({
        id: `${prefix}-begin`,
        label: "Begin (% of steps)",
        value: control.begin,
        ...PERCENT,
        onValue: (v) => (control.begin = v),
      }),
      numberField({
        id: `${prefix}-end`,
        label: "End (% of steps)",
        value: control.end,
        ...PERCENT,
        onValue: (v) => (control.end = v),
      }),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: `${prefix}-mode` }, "Control mode"),
      select(`${prefix}-mode`, MODES, control.mode, (value) => (control.mode = value)),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: `${prefix}-resize` }, "Resize mode"),
      select(`${prefix}-resize`, RESIZE_MODES, control.resize_mode, (value) => (control.resize_mode = value)),
    ),
    problem && control.model ? h("p", { class: "control-problem" }, `${title(index)}: ${problem}.`) : null,
  );
}

// ---- the edge-map preview -----------------------------------------------------------------------------

function thresholds(control, index, values) {
  Object.assign(control, values);
  const caption = document.querySelector(`#gen-controls li[data-control="${index}"] [data-control-preview] figcaption`);
  if (caption) caption.textContent = `Edge map (${control.low} / ${control.high})`;
  clearTimeout(previewTimers.get(control.uid));
  previewTimers.set(control.uid, setTimeout(() => showPreview(control), PREVIEW_DELAY_MS));
}

async function showPreview(control) {
  if (control.processor !== "canny" || !control.image) return;
  const { low, high } = control;
  const imageName = control.image.image_name;
  const figure = () => document.querySelector(`#gen-controls li[data-control="${controls.indexOf(control)}"] [data-control-preview]`);
  const stillWanted = () => control.processor === "canny" && control.image?.image_name === imageName && control.low === low && control.high === high;
  const status = figure()?.querySelector(".control-empty");
  if (status) status.textContent = "Making the edge map…";
  try {
    const name = await cannyPreview(imageName, low, high);
    const target = figure();
    if (!target || !stillWanted()) return;
    const img = h("img", {
      src: withToken(`/api/v1/images/${encodeURIComponent(name)}/full`),
      alt: `Canny edge map of ${title(controls.indexOf(control))}'s control image at thresholds ${low} and ${high}`,
      dataset: { previewImage: name },
    });
    target.querySelector("img, .control-empty")?.replaceWith(img);
  } catch (error) {
    const target = figure();
    if (!target || !stillWanted()) return;
    const message = h("span", { class: "control-empty control-failed", role: "status" }, `No preview: ${errorText(error)}`);
    target.querySelector("img, .control-empty")?.replaceWith(message);
  }
}

// ---- the list -----------------------------------------------------------------------------------------

function render() {
  const list = $("#gen-controls");
  list.replaceChildren(...controls.map(row));
  list.hidden = !controls.length;
  const none = $("#gen-control-none");
  const available = modelsOf("controlnet", model?.base_model).length;
  none.textContent = available ? "" : `No ControlNet models for ${model ? baseName(model.base_model) : "this"} models yet; add some on the Models page.`;
  none.hidden = Boolean(available) || Boolean(controls.length);
  for (const control of controls) if (control.processor === "canny") showPreview(control);
}

function add() {
  controls.push(blank());
  render();
  onChange();
  $("#gen-controls").lastElementChild?.querySelector(".image-source label, .image-source button")?.focus();
}

function remove(index) {
  controls.splice(index, 1);
  render();
  onChange();
  $("#gen-control-add").focus();
}

function checkedNumber(input, label, min, max, { integer = false } = {}) {
  const value = Number(input.value);
  const bad = input.value.trim() === "" || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value));
  const message = bad ? `${label} must be ${integer ? "a whole number" : "a number"} between ${min} and ${max}.` : "";
  input.setCustomValidity(message);
  return { value, message, input };
}

// A 422's loc → the control's input (its id's suffix) and its name in words; the controlnet node's inputs by
// the settings' names.
const LOCATED = {
  image: [null, "control image"],
  model: ["-model", "model"],
  weight: ["-weight", "weight"],
  begin: ["-begin", "begin"],
  end: ["-end", "end"],
  mode: ["-mode", "control mode"],
  resize_mode: ["-resize", "resize mode"],
  processor: ["-processor", "processor"],
  low_threshold: ["-low", "low threshold"],
  high_threshold: ["-high", "high threshold"],
};
const NODE_INPUTS = {
  control_model: "model",
  control_weight: "weight",
  begin_step_percent: "begin",
  end_step_percent: "end",
  control_mode: "mode",
};

export const controlSection = {
  name: "controls",

  init(changed) {
    onChange = changed;
    $("#gen-control-add").addEventListener("click", add);
    render();
  },

  modelChanged(chosen) {
    model = chosen;
    // A control with no model yet takes the first that fits the new main model.
    const first = modelsOf("controlnet", model?.base_model)[0];
    for (const control of controls) if (!control.model && first) control.model = modelKey(first);
    render();
  },

  read(problems) {
    const settings = [];
    for (const [index, control] of controls.entries()) {
      const item = $(`#gen-controls li[data-control="${index}"]`);
      const name = title(index);
      const prefix = `#gen-control-${control.uid}`;
      if (!control.image) {
        problems.push({ message: `${name} needs a control image: upload one or choose one from the gallery.`, input: item.querySelector(".image-source button") });
      }
      const problem = modelProblem(control);
      if (problem) problems.push({ message: `${name}: ${problem}.`, input: $(`${prefix}-model`) });
      const get = (result) => {
        if (result.message) problems.push(result);
        return result.value;
      };
      const weight = get(checkedNumber($(`${prefix}-weight`), `${name}'s weight`, WEIGHT.min, WEIGHT.max));
      const begin = get(checkedNumber($(`${prefix}-begin`), `${name}'s begin`, 0, 100));
      const end = get(checkedNumber($(`${prefix}-end`), `${name}'s end`, 0, 100));
      if (begin >= end && !problems.length) problems.push({ message: `${name} must begin before it ends (begin ${begin} %, end ${end} %).`, input: $(`${prefix}-begin`) });
      const entry = {
        image: control.image?.image_name,
        model: findModel(control.model) ? identifier(findModel(control.model)) : null,
        weight,
        begin: begin / 100,
        end: end / 100,
        mode: control.mode,
        resize_mode: control.resize_mode,
        processor: control.processor,
      };
      if (control.processor === "canny") {
        entry.low_threshold = get(checkedNumber($(`${prefix}-low`), `${name}'s low threshold`, 0, 255, { integer: true }));
        entry.high_threshold = get(checkedNumber($(`${prefix}-high`), `${name}'s high threshold`, 0, 255, { integer: true }));
      }
      settings.push(entry);
    }
    return { controls: settings };
  },

  /** ["body", "controls", 0, "weight"] or ["body", "nodes", "control_1", "image"] → that control's input. */
  locate(loc) {
    let index = null;
    let part = null;
    if (loc[0] === "controls" && Number.isInteger(loc[1])) [index, part] = [loc[1], loc[2]];
    const node = loc[0] === "nodes" ? /^(control|canny)_(\d+)$/.exec(String(loc[1])) : null;
    if (node) [index, part] = [Number(node[2]) - 1, NODE_INPUTS[loc[2]] ?? loc[2]];
    const control = controls[index];
    if (!control) return null;
    const suffix = LOCATED[part]?.[0];
    const input = suffix
      ? $(`#gen-control-${control.uid}${suffix}`)
      : $(`#gen-controls li[data-control="${index}"] .image-source button`);
    return { label: `${title(index)}, ${LOCATED[part]?.[1] ?? part ?? "settings"}`, input };
  },

  save() {
    return controls.map(({ uid, ...rest }) => rest);
  },

  restore(saved) {
    if (!Array.isArray(saved)) return;
    controls = saved
      .filter((entry) => entry && typeof entry === "object")
      .map((entry) => ({ ...blank(), ...entry, uid: nextUid++ }))
      .map((control) => ({ ...control, image: control.image?.image_name ? control.image : null }));
    render();
    // A control image may have been deleted since: say so on its control rather than at generation time.
    for (const control of controls) {
      if (!control.image) continue;
      imageInfo(control.image.image_name).catch((error) => {
        if (error.status !== 404) return;
        control.image = null;
        render();
      });
    }
  },

  /**
   * settings.controlnets: [{model_name, base_model?, image, weight, begin, end, mode, resize_mode, processor}]
   * (undefined: the image does not say). Their control images are used as they are in the gallery.
   */
  apply(settings, chosen) {
    model = chosen;
    if (!Array.isArray(settings.controlnets)) return [];
    const missing = [];
    const images = new Map(); // control → the image name the metadata gives, looked up below
    controls = settings.controlnets.map((wanted) => {
      const config = findNamed("controlnet", wanted.model_name, { base: wanted.base_model, bases: chosen ? [chosen.base_model] : null });
      if (!config) missing.push(`the ControlNet “${wanted.model_name}”`);
      const control = blank();
      const restored = {
        ...control,
        model: config ? modelKey(config) : control.model,
        weight: wanted.weight ?? 1,
        begin: Math.round((wanted.begin ?? 0) * 100),
        end: Math.round((wanted.end ?? 1) * 100),
        mode: MODES.some(([key]) => key === wanted.mode) ? wanted.mode : "balanced",
        resize_mode: RESIZE_MODES.some(([key]) => key === wanted.resize_mode) ? wanted.resize_mode : "just_resize",
        processor: wanted.processor === "canny" ? "canny" : "none",
      };
      if (wanted.image) images.set(restored, wanted.image);
      return restored;
    });
    render();
    // The control images, if they are still in the gallery.
    for (const [control, name] of images) {
      imageInfo(name)
        .then((image) => {
          control.image = { image_name: image.image_name, width: image.width, height: image.height, thumbnail_url: image.thumbnail_url };
          render();
          onChange();
        })
        .catch((error) => console.warn(`the control image ${name} is not available`, error));
    }
    return missing;
  },
};

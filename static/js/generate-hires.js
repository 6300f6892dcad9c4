// The Generate form's hires fix: generate at the form's size, then make the latents (or, with an upscale
// model, the image) larger by "scale" and denoise them again at "denoising strength". Sent as `hires`; for
// text to image only (the server refuses it beside an init image, and beside a refiner).

import { $, h } from "./dom.js";
import { checkInteger, checkNumber, field } from "./generate-form.js";
import { hasInitImage } from "./generate-init.js";
import { findModel, findNamed, identifier, modelKey, modelsOf } from "./model-choice.js";

let wantedUpscaler = ""; // a model key, "" = resize the latents

const on = () => field("hires").checked;

/** The second pass's size, as the server computes it: the first's times the scale, to a multiple of 8. */
function hiresSize(scale) {
  const size = (name) => Math.round((Number(field(name).value) * scale) / 8) * 8;
  return [size("width"), size("height")];
}

function fillUpscalers() {
  const select = field("hires_upscaler");
  const upscalers = modelsOf("upscale");
  select.replaceChildren(
    h("option", { value: "" }, "Latent (resize the latents)"),
    ...upscalers.map((config) => h("option", { value: modelKey(config) }, config.model_name)),
  );
  select.value = upscalers.some((config) => modelKey(config) === wantedUpscaler) ? wantedUpscaler : "";
}

function renderHint() {
  const scale = Number(field("hires_scale").value);
  const hint = $("#gen-hires-hint");
  if (!Number.isFinite(scale) || scale <= 1) {
    hint.textContent = "";
    return;
  }
  const [width, height] = hiresSize(scale);
  hint.textContent = `${field("width").value} × ${field("height").value} first, then ${width} × ${height}.`;
}

function render() {
  $("#gen-hires-fields").hidden = !on();
  renderHint();
}

export const hiresSection = {
  name: "hires",

  init(changed) {
    field("hires").addEventListener("change", () => {
      render();
      changed();
    });
    const slider = $("#gen-hires-strength-slider");
    const number = field("hires_strength");
    slider.addEventListener("input", () => {
      number.value = slider.value;
      number.setCustomValidity("");
    });
    number.addEventListener("input", () => {
      if (number.value.trim() !== "" && Number.isFinite(Number(number.value))) slider.value = number.value;
    });
    field("hires_upscaler").addEventListener("change", () => {
      wantedUpscaler = field("hires_upscaler").value;
    });
    for (const name of ["hires_scale", "width", "height"]) field(name).addEventListener("input", renderHint);
    fillUpscalers();
    render();
  },

  modelChanged() {
    fillUpscalers();
    renderHint();
  },

  read(problems) {
    if (!on()) return { hires: null };
    if (hasInitImage()) {
      problems.push({ message: "The hires fix is for text to image: turn it off, or remove the init image.", input: field("hires") });
      return { hires: null };
    }
    const get = (result) => {
      if (result.message) problems.push(result);
      return result.value;
    };
    const settings = {
      scale: get(checkNumber(field("hires_scale"), "Hires scale")),
      strength: get(checkNumber(field("hires_strength"), "Hires denoising strength")),
    };
    if (field("hires_steps").value.trim() !== "") settings.steps = get(checkInteger("hires_steps", "Hires steps"));
    else field("hires_steps").setCustomValidity("");
    const upscaler = findModel(field("hires_upscaler").value);
    if (upscaler) settings.upscaler = identifier(upscaler);
    return { hires: settings };
  },

  locate(loc) {
    const inner = loc[0] === "nodes" && /^hires_/.test(String(loc[1])) ? loc[1] : loc[0] === "hires" ? loc[1] ?? "hires" : null;
    if (!inner) return null;
    const inputs = {
      scale: "hires_scale",
      strength: "hires_strength",
      steps: "hires_steps",
      upscaler: "hires_upscaler",
      hires_upscale: "hires_upscaler",
    };
    return { label: "Hires fix", input: field(inputs[inner] ?? "hires") };
  },

  save() {
    return {
      on: on(),
      scale: field("hires_scale").value,
      strength: field("hires_strength").value,
      steps: field("hires_steps").value,
      upscaler: wantedUpscaler,
    };
  },

  restore(saved) {
    if (!saved || typeof saved !== "object") return;
    field("hires").checked = Boolean(saved.on);
    for (const key of ["scale", "strength", "steps"]) if (typeof saved[key] === "string") field(`hires_${key}`).value = saved[key];
    $("#gen-hires-strength-slider").value = field("hires_strength").value;
    if (typeof saved.upscaler === "string") wantedUpscaler = saved.upscaler;
    fillUpscalers();
    render();
  },

  /** settings.hires: {scale, strength, upscaler?} | null (none); undefined: the image does not say. */
  apply(settings) {
    if (settings.hires === undefined) return [];
    const hires = settings.hires;
    field("hires").checked = Boolean(hires);
    const missing = [];
    if (hires) {
      if (hires.scale) field("hires_scale").value = hires.scale;
      if (hires.strength !== undefined) field("hires_strength").value = hires.strength;
      $("#gen-hires-strength-slider").value = field("hires_strength").value;
      field("hires_steps").value = "";
      const upscaler = hires.upscaler && findNamed("upscale", hires.upscaler);
      wantedUpscaler = upscaler ? modelKey(upscaler) : "";
      if (hires.upscaler && !upscaler) missing.push(`the upscaler “${hires.upscaler}” (the latents are resized)`);
    }
    fillUpscalers();
    render();
    return missing;
  },
};

// The Generate form's refiner section, for SDXL models only: an sdxl-refiner model that takes over the
// schedule at "switch at" (diffusers' ensemble of experts), and in "Advanced" its own steps, CFG scale,
// scheduler and aesthetic scores (left empty, steps, CFG and scheduler are the base's).

import { $, h } from "./dom.js";
import { checkInteger, checkNumber, field } from "./generate-form.js";
import { findModel, findNamed, identifier, modelKey, modelsOf } from "./model-choice.js";

const DEFAULTS = { switch_at: "0.8", aesthetic_score: "6", negative_aesthetic_score: "2.5" };
// Saved and restored as they are typed: form field name → saved key.
const FIELDS = {
  refiner_switch_at: "switch_at",
  refiner_steps: "steps",
  refiner_cfg: "cfg_scale",
  refiner_scheduler: "scheduler",
  refiner_aesthetic: "aesthetic_score",
  refiner_negative_aesthetic: "negative_aesthetic_score",
};

let model = null;
let wanted = ""; // the refiner chosen (a model key, "" = none), kept while an SD-1 model is chosen

const isSdxl = () => model?.base_model === "sdxl";

function fillRefiners() {
  const select = field("refiner_model");
  const refiners = modelsOf("main", "sdxl-refiner");
  select.replaceChildren(
    h("option", { value: "" }, refiners.length ? "None" : "None (no refiner models registered)"),
    ...refiners.map((refiner) => h("option", { value: modelKey(refiner) }, refiner.model_name)),
  );
  select.value = refiners.some((refiner) => modelKey(refiner) === wanted) ? wanted : "";
  const on = Boolean(select.value);
  for (const name of Object.keys(FIELDS)) field(name).disabled = !on;
  $("#gen-refiner-switch-slider").disabled = !on;
  $("#gen-refiner-section").hidden = !isSdxl();
}

function fillSchedulers() {
  const select = field("refiner_scheduler");
  const keep = select.value;
  const names = [...field("scheduler").options].map((option) => option.value);
  select.replaceChildren(h("option", { value: "" }, "The base's"), ...names.map((name) => h("option", { value: name }, name)));
  select.value = names.includes(keep) ? keep : "";
}

export const refinerSection = {
  name: "refiner",

  init(changed) {
    fillSchedulers();
    const slider = $("#gen-refiner-switch-slider");
    const number = field("refiner_switch_at");
    slider.addEventListener("input", () => {
      number.value = slider.value;
      number.setCustomValidity("");
    });
    number.addEventListener("input", () => {
      if (Number.isFinite(Number(number.value)) && number.value.trim() !== "") slider.value = number.value;
    });
    field("refiner_model").addEventListener("change", () => {
      wanted = field("refiner_model").value;
      fillRefiners();
      changed();
    });
    fillRefiners();
  },

  modelChanged(chosen) {
    model = chosen;
    fillRefiners();
  },

  read(problems) {
    const refiner = findModel(field("refiner_model").value);
    if (!isSdxl() || !refiner) return { refiner: null };
    const get = (result) => {
      if (result.message) problems.push(result);
      return result.value;
    };
    const settings = {
      model: identifier(refiner),
      switch_at: get(checkNumber(field("refiner_switch_at"), "Switch at")),
      aesthetic_score: get(checkNumber(field("refiner_aesthetic"), "Aesthetic score")),
      negative_aesthetic_score: get(checkNumber(field("refiner_negative_aesthetic"), "Negative aesthetic score")),
    };
    if (field("refiner_steps").value.trim() !== "") settings.steps = get(checkInteger("refiner_steps", "Refiner steps"));
    else field("refiner_steps").setCustomValidity("");
    const cfg = get(checkNumber(field("refiner_cfg"), "Refiner CFG scale", { optional: true }));
    if (cfg !== undefined) settings.cfg_scale = cfg;
    if (field("refiner_scheduler").value) settings.scheduler = field("refiner_scheduler").value;
    return { refiner: settings };
  },

  save() {
    const saved = { model: wanted };
    for (const [name, key] of Object.entries(FIELDS)) saved[key] = field(name).value;
    return saved;
  },

  restore(saved) {
    if (!saved || typeof saved !== "object") return;
    if (typeof saved.model === "string") wanted = saved.model;
    fillSchedulers();
    for (const [name, key] of Object.entries(FIELDS)) {
      if (typeof saved[key] === "string") field(name).value = saved[key];
    }
    $("#gen-refiner-switch-slider").value = field("refiner_switch_at").value;
    fillRefiners();
  },

  /**
   * settings.refiner: {model_name, base_model?, switch_at, steps?, cfg_scale?, scheduler?, aesthetic_score?,
   * negative_aesthetic_score?} | null (no refiner). Values the image does not give go back to their defaults.
   */
  apply(settings, chosen) {
    model = chosen;
    if (settings.refiner === undefined) return [];
    const wantedRefiner = settings.refiner;
    const refiner = wantedRefiner && findNamed("main", wantedRefiner.model_name, { bases: ["sdxl-refiner"] });
    wanted = refiner ? modelKey(refiner) : "";
    if (refiner) {
      fillSchedulers();
      const value = (key) => (wantedRefiner[key] === undefined || wantedRefiner[key] === null ? (DEFAULTS[key] ?? "") : String(wantedRefiner[key]));
      for (const [name, key] of Object.entries(FIELDS)) field(name).value = value(key);
      // The base's steps, CFG and scheduler are what an empty field means: keep it empty when they are the same.
      if (field("refiner_steps").value === field("steps").value) field("refiner_steps").value = "";
      if (field("refiner_cfg").value === field("cfg").value) field("refiner_cfg").value = "";
      if (field("refiner_scheduler").value === field("scheduler").value) field("refiner_scheduler").value = "";
      $("#gen-refiner-switch-slider").value = field("refiner_switch_at").value;
    }
    fillRefiners();
    return wantedRefiner && !refiner ? [`the refiner “${wantedRefiner.model_name}” (no refiner is used)`] : [];
  },
};

// The Generate form's embedding picker (it writes `<name>` into the prompt or the negative prompt, where the
// cursor is: the server reads that as the embedding) and its VAE picker and clip skip.

import { combobox } from "./combobox.js";
import { $, h } from "./dom.js";
import { field } from "./generate-form.js";
import { baseName, findModel, findNamed, identifier, modelKey, modelsOf } from "./model-choice.js";

// ---- embeddings ---------------------------------------------------------------------------------------------

let model = null; // the chosen main model
let onChange = () => {};

const TARGETS = { prompt: "#gen-prompt", negative: "#gen-negative" };

function insertEmbedding(picked) {
  const target = document.querySelector('input[name="embedding_target"]:checked')?.value ?? "prompt";
  const area = $(TARGETS[target]);
  const text = `<${picked.label}>`;
  const [start, end] = [area.selectionStart ?? area.value.length, area.selectionEnd ?? area.value.length];
  const before = area.value.slice(0, start);
  // A space between it and a word it would otherwise stick to.
  const lead = before && !/\s$/.test(before) ? " " : "";
  area.setRangeText(lead + text, start, end, "end");
  area.dispatchEvent(new Event("input", { bubbles: true }));
  onChange();
  area.focus();
}

export const embeddingSection = {
  name: "embedding_target",

  init(changed) {
    onChange = changed;
    combobox({
      input: $("#gen-embedding-search"),
      listbox: $("#gen-embedding-options"),
      items: () => modelsOf("embedding", model?.base_model).map((config) => ({ value: modelKey(config), label: config.model_name })),
      onPick: insertEmbedding,
      empty: () => `No embeddings for ${model ? baseName(model.base_model) : "this"} models yet; add some on the Models page.`,
    });
    // It inserts into the prompt a person was last in, unless they choose the other one.
    for (const [target, selector] of Object.entries(TARGETS)) {
      $(selector).addEventListener("focus", () => {
        $(`input[name="embedding_target"][value="${target}"]`).checked = true;
      });
    }
  },

  modelChanged(chosen) {
    model = chosen;
  },

  read() {
    return {};
  },

  save() {
    return document.querySelector('input[name="embedding_target"]:checked')?.value ?? "prompt";
  },

  restore(saved) {
    const radio = $(`input[name="embedding_target"][value="${saved}"]`);
    if (radio) radio.checked = true;
  },

  apply() {
    return [];
  },
};

// ---- VAE and clip skip ----------------------------------------------------------------------------------------

let wantedVae = ""; // the VAE chosen (a model key; "" = the model's own), kept while it does not fit the model

function fillVaes() {
  const select = field("vae");
  const vaes = modelsOf("vae", model?.base_model);
  const own = model?.vae ? "The model's own (set on the Models page)" : "The model's own";
  select.replaceChildren(h("option", { value: "" }, own), ...vaes.map((vae) => h("option", { value: modelKey(vae) }, vae.model_name)));
  const fits = vaes.some((vae) => modelKey(vae) === wantedVae);
  select.value = fits ? wantedVae : "";
  const wanted = findModel(wantedVae);
  $("#gen-vae-hint").textContent =
    wantedVae && !fits
      ? `${wanted?.model_name ?? wantedVae.split("/").pop()} is not a VAE for ${model ? baseName(model.base_model) : "this"} models; the model's own is used.`
      : "";
}

export const vaeSection = {
  name: "vae",

  init(changed) {
    field("vae").addEventListener("change", () => {
      wantedVae = field("vae").value;
      fillVaes();
      changed();
    });
  },

  modelChanged(chosen) {
    model = chosen;
    fillVaes();
  },

  read(problems) {
    const input = field("clip_skip");
    const value = Number(input.value);
    const [min, max] = [Number(input.min), Number(input.max)];
    const message =
      input.value.trim() === "" || !Number.isInteger(value) || value < min || value > max
        ? `Clip skip must be a whole number between ${min} and ${max}.`
        : "";
    input.setCustomValidity(message);
    if (message) problems.push({ message, input });
    const vae = findModel(field("vae").value);
    return { vae: vae ? identifier(vae) : null, clip_skip: value };
  },

  save() {
    return { vae: wantedVae, clip_skip: field("clip_skip").value };
  },

  restore(saved) {
    if (typeof saved?.vae === "string") wantedVae = saved.vae;
    if (saved?.clip_skip !== undefined) field("clip_skip").value = saved.clip_skip;
    fillVaes();
  },

  /** settings.vae: {model_name, base_model?} | null (the model's own); settings.clip_skip: layers skipped. */
  apply(settings, chosen) {
    model = chosen;
    const missing = [];
    if (settings.clip_skip !== undefined) field("clip_skip").value = settings.clip_skip;
    if (settings.vae !== undefined) {
      const vae = settings.vae && findNamed("vae", settings.vae.model_name, {
        base: settings.vae.base_model,
        bases: chosen ? [chosen.base_model] : null,
      });
      wantedVae = vae ? modelKey(vae) : "";
      if (settings.vae && !vae) missing.push(`the VAE “${settings.vae.model_name}” (the model's own is used)`);
    }
    fillVaes();
    return missing;
  },
};

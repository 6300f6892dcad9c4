// The registered models as the Generate page's pickers see them: keys, identifiers, which models fit a base,
// and finding a model an image names (by name, and by base where the image says it).

import { store } from "./state.js";

export const BASE_NAMES = { "sd-1": "SD-1", "sd-2": "SD-2", sdxl: "SDXL", "sdxl-refiner": "SDXL refiner" };

export const baseName = (base) => BASE_NAMES[base] ?? base;

/** "sd-1/lora/style": how option values and saved forms name a model. */
export const modelKey = (model) => `${model.base_model}/${model.model_type}/${model.model_name}`;

/** The model identifier the API takes: {model_name, base_model, model_type}. */
export const identifier = (model) => ({
  model_name: model.model_name,
  base_model: model.base_model,
  model_type: model.model_type,
});

export const findModel = (key) => store.models.find((model) => modelKey(model) === key) ?? null;

/** Usable models of `type` (and `base`, if given), sorted by name: what a picker offers. */
export function modelsOf(type, base = null) {
  return store.models
    .filter((model) => model.model_type === type && !model.error && (!base || model.base_model === base))
    .sort((a, b) => a.model_name.localeCompare(b.model_name));
}

/**
 * The usable model of `type` an image names: by name and base when it gives a base, else by name among `bases`
 * (in that order of preference). Null when there is none.
 */
export function findNamed(type, name, { base = null, bases = null } = {}) {
  if (!name) return null;
  const named = modelsOf(type).filter((model) => model.model_name === name);
  if (base) return named.find((model) => model.base_model === base) ?? null;
  if (!bases) return named[0] ?? null;
  for (const wanted of bases) {
    const match = named.find((model) => model.base_model === wanted);
    if (match) return match;
  }
  return null;
}

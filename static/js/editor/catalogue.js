// The node catalogue (GET /api/v1/nodes/): every node type with its inputs and outputs, looked up by type.
// Node types the server does not know (a graph from another tool, say) still get a spec, made up from the
// graph itself, so they can be drawn, wired and deleted; validation names them when the graph runs.

import { api } from "../api.js";

// The model type (and base) a model input wants. The catalogue types them all as `model`; these follow the
// node fields of InvokeAI 3.x that API.md names.
const MODEL_INPUTS = {
  "main_model_loader.model": { model_type: "main", bases: ["sd-1", "sd-2"] },
  "sdxl_model_loader.model": { model_type: "main", bases: ["sdxl"] },
  "sdxl_refiner_model_loader.model": { model_type: "main", bases: ["sdxl-refiner"] },
  "sdxl_lora_loader.lora": { model_type: "lora", bases: ["sdxl"] },
  "esrgan.model": { model_type: "upscale" },
  "metadata_accumulator.vae": { model_type: "vae" },
};
const MODEL_INPUT_NAMES = { lora: "lora", vae: "vae", vae_model: "vae", control_model: "controlnet" };

export class Catalogue {
  constructor(nodes) {
    this.specs = new Map(nodes.map((spec) => [spec.type, decorate(spec)]));
  }

  static async load() {
    const body = await api.get("/nodes/");
    return new Catalogue(body.nodes ?? body);
  }

  /** Every known type, in catalogue order. */
  all() {
    return [...this.specs.values()];
  }

  has(type) {
    return this.specs.has(type);
  }

  /** The spec of `type`; for an unknown type, one made up from how `node` is used in `graph` (see top). */
  spec(type, usage = null) {
    return this.specs.get(type) ?? unknownSpec(type, usage);
  }
}

function decorate(spec) {
  const inputs = new Map(spec.inputs.map((input) => [input.name, input]));
  const outputs = new Map(spec.outputs.map((output) => [output.name, output]));
  return { ...spec, known: true, inputByName: inputs, outputByName: outputs, title: titleOf(spec) };
}

/** "DenoiseLatents" → "Denoise latents". */
function titleOf(spec) {
  const words = (spec.title || spec.type).replace(/([a-z0-9])([A-Z])/g, "$1 $2").replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1).toLowerCase();
}

/** usage: {inputs: Set of fields wired into it, outputs: Set of fields wired from it, values: its literals}. */
function unknownSpec(type, usage) {
  const names = new Set([...(usage?.inputs ?? []), ...Object.keys(usage?.values ?? {})]);
  const inputs = [...names].map((name) => ({ name, type: "any", required: false, input: "any" }));
  const outputs = [...(usage?.outputs ?? [])].map((name) => ({ name, type: "any" }));
  return {
    type,
    title: type,
    description: "A node type this server does not know; running the graph will say so.",
    category: "unknown",
    known: false,
    inputs,
    outputs,
    inputByName: new Map(inputs.map((input) => [input.name, input])),
    outputByName: new Map(outputs.map((output) => [output.name, output])),
  };
}

/** What a model picker offers for this input: {model_type, bases?}. */
export function modelFilter(nodeType, inputName) {
  return MODEL_INPUTS[`${nodeType}.${inputName}`] ?? { model_type: MODEL_INPUT_NAMES[inputName] ?? "main" };
}

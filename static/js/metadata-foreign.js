// Generation settings from other tools' metadata: A1111's `parameters` text and ComfyUI's `prompt` graph, as
// they are in the PNG or as the server has already parsed them (`{format: "a1111" | "comfyui", ...}`).
// The settings' shape is metadata.js's (see readSettings there).

const A1111_SAMPLERS = {
  "euler a": "euler_a",
  euler: "euler",
  heun: "heun",
  lms: "lms",
  ddim: "ddim",
  plms: "pndm",
  "dpm++ 2m": "dpmpp_2m",
  "dpm++ 2m karras": "dpmpp_2m_k",
  unipc: "unipc",
};

const COMFY_SAMPLERS = {
  euler: "euler",
  euler_ancestral: "euler_a",
  heun: "heun",
  lms: "lms",
  ddim: "ddim",
  ddpm: "ddpm",
  dpmpp_2m: "dpmpp_2m",
  uni_pc: "unipc",
  uni_pc_bh2: "unipc",
};

// A1111's LoRA tag: `<lora:name>` or `<lora:name:weight>` (a further `:number`, the text encoder's, is ignored).
const A1111_LORA = /<lora:([^:<>]+)(?::([^:<>]+))?(?::[^<>]*)?>/g;

export const number = (value) => {
  const n = typeof value === "string" ? Number(value.trim()) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
};

// Only a model file's own extension goes: "sd_xl_base_1.0" is a whole name (A1111 writes names without one).
const MODEL_FILE = /\.(safetensors|ckpt|pt|pth|bin|sft)$/i;

/** A file's name without folders and extension: how A1111 and ComfyUI name models we know by name. */
export const stem = (file) => (typeof file === "string" ? file.replace(/^.*[\\/]/, "").replace(MODEL_FILE, "") : undefined);

/** A1111 writes "name [hash]" for some models (the refiner); the name is ours. */
const withoutHash = (name) => (typeof name === "string" ? stem(name.replace(/\s*\[[0-9a-f]+\]\s*$/i, "").trim()) : undefined);

/** A1111's refiner: `Refiner: name [hash], Refiner switch at: 0.8`. */
function a1111Refiner(fields) {
  const name = withoutHash(fields.refiner);
  return name ? { model_name: name, switch_at: number(fields["refiner switch at"]) } : null;
}

function a1111Sampler(sampler, scheduleType) {
  let name = String(sampler ?? "").toLowerCase();
  if (String(scheduleType ?? "").toLowerCase() === "karras" && !name.endsWith("karras")) name += " karras";
  return A1111_SAMPLERS[name];
}

/** A1111: prompt lines, then "Negative prompt: ...", then "Steps: 20, Sampler: Euler a, CFG scale: 7, ..." */
export function parseA1111(text) {
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  let paramsLine = "";
  if (lines.length && /(^|,\s*)Steps:\s*\d+/.test(lines.at(-1))) paramsLine = lines.pop();
  const negativeAt = lines.findIndex((line) => line.startsWith("Negative prompt:"));
  const promptLines = negativeAt >= 0 ? lines.slice(0, negativeAt) : lines;
  const negativeLines = negativeAt >= 0 ? lines.slice(negativeAt) : [];
  const negative = negativeLines.join("\n").replace(/^Negative prompt:\s*/, "");
  const fields = {};
  // Values may be quoted and hold commas: `Lora hashes: "a: 1, b: 2"`.
  for (const match of paramsLine.matchAll(/\s*([^:,]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)/g)) {
    fields[match[1].trim().toLowerCase()] = match[2].trim().replace(/^"|"$/g, "");
  }
  const size = /^(\d+)\s*x\s*(\d+)$/.exec(fields.size ?? "");
  const [width, height] = size ? [Number(size[1]), Number(size[2])] : [];
  let prompt = promptLines.join("\n");
  const loras = [...prompt.matchAll(A1111_LORA)].map((match) => ({
    model_name: match[1].trim(),
    weight: number(match[2]) ?? 1,
  }));
  if (loras.length) {
    // A1111 conditions on the prompt without its LoRA tags (the server takes them out the same way).
    prompt = prompt.replace(A1111_LORA, "").replace(/[ \t]{2,}/g, " ").replace(/[ \t]+,/g, ",");
    prompt = prompt.trim().replace(/^[\s,]+|[\s,]+$/g, "");
  }
  const clipSkip = number(fields["clip skip"]);
  return {
    source: "Automatic1111",
    settings: {
      prompt: prompt.trim(),
      negative: negative.trim(),
      model_name: stem(fields.model),
      width,
      height,
      steps: number(fields.steps),
      cfg_scale: number(fields["cfg scale"]),
      scheduler: a1111Sampler(fields.sampler, fields["schedule type"]),
      seed: number(fields.seed),
      // A1111 writes each of these only when it is used.
      loras,
      vae: fields.vae ? { model_name: stem(fields.vae) } : null,
      clip_skip: clipSkip ? Math.max(0, clipSkip - 1) : 0,
      refiner: a1111Refiner(fields),
    },
  };
}

/** ComfyUI API-format prompt: {node_id: {class_type, inputs}}; links are [node_id, output_index]. */
export function parseComfy(prompt) {
  const nodes = Object.values(prompt).filter((node) => node && typeof node === "object" && node.class_type);
  const linked = (link) => (Array.isArray(link) ? prompt[link[0]] : undefined);
  const samplers = nodes.filter((node) => /^KSampler/.test(node.class_type));
  // The first pass of a base + refiner pair starts at step 0; the refiner's starts later.
  const startOf = (node) => number(node.inputs?.start_at_step) ?? 0;
  const sampler = [...samplers].sort((a, b) => startOf(a) - startOf(b))[0];
  if (!sampler) return null;
  const input = sampler.inputs ?? {};
  const textOf = (link) => {
    const node = linked(link);
    if (!node) return undefined;
    const text = node.inputs?.text ?? node.inputs?.text_g;
    return typeof text === "string" ? text : undefined;
  };
  const latent = linked(input.latent_image);
  // Back from the sampler's model through LoRA loaders (and the like) to the checkpoint.
  const chain = (start, key) => {
    const found = [];
    for (let node = linked(start), hops = 0; node && hops < 32; node = linked(node.inputs?.[key]), hops++) found.push(node);
    return found;
  };
  const modelChain = chain(input.model, "model");
  const checkpoint = (list) => list.find((node) => node.inputs?.ckpt_name)?.inputs.ckpt_name;
  const loras = modelChain
    .filter((node) => /^LoraLoader/.test(node.class_type) && node.inputs?.lora_name)
    .reverse() // applied from the checkpoint out
    .map((node) => ({ model_name: stem(node.inputs.lora_name), weight: number(node.inputs.strength_model) ?? 1 }));
  const clipLayer = nodes.find((node) => node.class_type === "CLIPSetLastLayer");
  const stopAt = number(clipLayer?.inputs?.stop_at_clip_layer);
  const decode = nodes.find((node) => node.class_type === "VAEDecode");
  const vaeLoader = linked(decode?.inputs?.vae);
  const refinerPass = samplers.find((node) => node !== sampler && startOf(node) > 0);
  const refinerCheckpoint = refinerPass && checkpoint(chain(refinerPass.inputs.model, "model"));
  const baseSteps = number(input.steps);
  let scheduler = COMFY_SAMPLERS[input.sampler_name];
  if (scheduler === "dpmpp_2m" && input.scheduler === "karras") scheduler = "dpmpp_2m_k";
  return {
    source: "ComfyUI",
    settings: {
      prompt: textOf(input.positive),
      negative: textOf(input.negative),
      model_name: stem(checkpoint(modelChain)),
      width: number(latent?.inputs?.width),
      height: number(latent?.inputs?.height),
      steps: baseSteps,
      cfg_scale: number(input.cfg),
      scheduler,
      seed: number(input.seed ?? input.noise_seed),
      loras,
      vae: vaeLoader?.class_type === "VAELoader" && vaeLoader.inputs?.vae_name ? { model_name: stem(vaeLoader.inputs.vae_name) } : null,
      // ComfyUI counts from the end: -1 is the last layer (nothing skipped), -2 the penultimate.
      clip_skip: stopAt !== undefined && stopAt < -1 ? -stopAt - 1 : 0,
      refiner:
        refinerCheckpoint && stem(refinerCheckpoint) !== stem(checkpoint(modelChain))
          ? {
              model_name: stem(refinerCheckpoint),
              switch_at: baseSteps ? startOf(refinerPass) / baseSteps : undefined,
              cfg_scale: number(refinerPass.inputs.cfg),
            }
          : null,
    },
  };
}

/** The server's parsed form of foreign metadata: {format: "a1111" | "comfyui", positive_prompt, sampler, ...}. */
export function fromParsedForeign(meta) {
  const raw =
    meta.format === "a1111" && typeof meta.parameters === "string"
      ? parseA1111(meta.parameters)
      : meta.format === "comfyui" && meta.prompt && typeof meta.prompt === "object"
        ? parseComfy(meta.prompt)
        : null;
  let scheduler;
  if (meta.format === "a1111") {
    scheduler = a1111Sampler(meta.sampler, meta.extra?.["Schedule type"]);
  } else {
    scheduler = COMFY_SAMPLERS[meta.sampler];
    if (scheduler === "dpmpp_2m" && meta.scheduler === "karras") scheduler = "dpmpp_2m_k";
  }
  const settings = {
    prompt: meta.positive_prompt,
    negative: meta.negative_prompt,
    model_name: stem(meta.model),
    width: number(meta.width),
    height: number(meta.height),
    steps: number(meta.steps),
    cfg_scale: number(meta.cfg_scale),
    scheduler,
    seed: number(meta.seed),
  };
  if (meta.format === "a1111") {
    // The server has read the LoRA tags (and taken them out of the prompt), clip skip (as layers skipped) and
    // the VAE; A1111 writes each only when it is used.
    settings.loras = (Array.isArray(meta.loras) ? meta.loras : []).map((entry) => ({
      model_name: entry.lora?.model_name,
      weight: number(entry.weight) ?? 1,
    }));
    settings.vae = typeof meta.vae === "string" && meta.vae ? { model_name: stem(meta.vae) } : null;
    settings.clip_skip = number(meta.clip_skip) ?? 0;
    const extra = Object.fromEntries(Object.entries(meta.extra ?? {}).map(([key, value]) => [key.toLowerCase(), value]));
    settings.refiner = a1111Refiner(extra);
  }
  // Whatever the server left out, our own reading of the raw text may still have.
  for (const [key, value] of Object.entries(raw?.settings ?? {})) settings[key] ??= value;
  return { source: meta.format === "a1111" ? "Automatic1111" : "ComfyUI", settings };
}

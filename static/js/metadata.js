// Turn whatever metadata an image carries into generation settings the form understands: ours and
// InvokeAI's (CoreMetadata), A1111's `parameters` text, and ComfyUI's `prompt` graph.
//
// settings: {prompt, negative, model_name, base_model, width, height, steps, cfg_scale, scheduler, seed}
// (any may be missing); source: a short name of where they came from.

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

const number = (value) => {
  const n = typeof value === "string" ? Number(value.trim()) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
};

function fromCore(meta) {
  return {
    source: "imagegraph / InvokeAI",
    settings: {
      prompt: meta.positive_prompt,
      negative: meta.negative_prompt,
      model_name: meta.model?.model_name,
      base_model: meta.model?.base_model,
      width: number(meta.width),
      height: number(meta.height),
      steps: number(meta.steps),
      cfg_scale: number(meta.cfg_scale),
      scheduler: meta.scheduler,
      seed: number(meta.seed),
    },
  };
}

const stem = (file) => (typeof file === "string" ? file.replace(/^.*[\\/]/, "").replace(/\.[^.]+$/, "") : undefined);

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
  let sampler = (fields.sampler ?? "").toLowerCase();
  if (fields["schedule type"]?.toLowerCase() === "karras" && !sampler.endsWith("karras")) sampler += " karras";
  return {
    source: "Automatic1111",
    settings: {
      prompt: promptLines.join("\n").trim(),
      negative: negative.trim(),
      model_name: fields.model,
      width,
      height,
      steps: number(fields.steps),
      cfg_scale: number(fields["cfg scale"]),
      scheduler: A1111_SAMPLERS[sampler],
      seed: number(fields.seed),
    },
  };
}

/** ComfyUI API-format prompt: {node_id: {class_type, inputs}}; links are [node_id, output_index]. */
export function parseComfy(prompt) {
  const nodes = Object.values(prompt).filter((node) => node && typeof node === "object" && node.class_type);
  const byId = prompt;
  const sampler = nodes.find((node) => /^KSampler/.test(node.class_type));
  if (!sampler) return null;
  const input = sampler.inputs ?? {};
  const linked = (link) => (Array.isArray(link) ? byId[link[0]] : undefined);
  const textOf = (link) => {
    const node = linked(link);
    if (!node) return undefined;
    const text = node.inputs?.text ?? node.inputs?.text_g;
    return typeof text === "string" ? text : undefined;
  };
  const latent = linked(input.latent_image);
  let model = linked(input.model);
  // Follow LoRA loaders and the like back to the checkpoint loader.
  for (let hops = 0; model && !model.inputs?.ckpt_name && hops < 10; hops++) model = linked(model.inputs?.model);
  const ckpt = model?.inputs?.ckpt_name;
  let scheduler = COMFY_SAMPLERS[input.sampler_name];
  if (scheduler === "dpmpp_2m" && input.scheduler === "karras") scheduler = "dpmpp_2m_k";
  return {
    source: "ComfyUI",
    settings: {
      prompt: textOf(input.positive),
      negative: textOf(input.negative),
      model_name: stem(ckpt),
      width: number(latent?.inputs?.width),
      height: number(latent?.inputs?.height),
      steps: number(input.steps),
      cfg_scale: number(input.cfg),
      scheduler,
      seed: number(input.seed ?? input.noise_seed),
    },
  };
}

function parseJson(value) {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

/** The server's parsed form of foreign metadata: {format: "a1111" | "comfyui", positive_prompt, sampler, ...}. */
function fromParsedForeign(meta) {
  const raw =
    meta.format === "a1111" && typeof meta.parameters === "string"
      ? parseA1111(meta.parameters)
      : meta.format === "comfyui" && meta.prompt && typeof meta.prompt === "object"
        ? parseComfy(meta.prompt)
        : null;
  let scheduler;
  if (meta.format === "a1111") {
    let sampler = String(meta.sampler ?? "").toLowerCase();
    const type = String(meta.extra?.["Schedule type"] ?? "").toLowerCase();
    if (type === "karras" && !sampler.endsWith("karras")) sampler += " karras";
    scheduler = A1111_SAMPLERS[sampler];
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
  // Whatever the server left out, our own reading of the raw text may still have.
  for (const [key, value] of Object.entries(raw?.settings ?? {})) settings[key] ??= value;
  return { source: meta.format === "a1111" ? "Automatic1111" : "ComfyUI", settings };
}

/** `metadata` as GET /images/{name}/metadata returns it → {source, settings} or null. */
export function readSettings(metadata) {
  if (!metadata) return null;
  if (typeof metadata === "string") return /Steps:\s*\d+/.test(metadata) ? parseA1111(metadata) : null;
  if (typeof metadata !== "object") return null;
  if (metadata.format === "a1111" || metadata.format === "comfyui") return fromParsedForeign(metadata);
  if ("generation_mode" in metadata || "positive_prompt" in metadata) return fromCore(metadata);
  if (metadata.invokeai_metadata) return readSettings(parseJson(metadata.invokeai_metadata));
  if (typeof metadata.parameters === "string") return parseA1111(metadata.parameters);
  const comfy = parseJson(metadata.prompt);
  if (comfy && typeof comfy === "object") return parseComfy(comfy);
  return null;
}

const LABELS = [
  ["prompt", "Prompt"],
  ["negative", "Negative prompt"],
  ["model_name", "Model"],
  ["seed", "Seed"],
  ["steps", "Steps"],
  ["cfg_scale", "CFG scale"],
  ["scheduler", "Scheduler"],
];

/**
 * [label, value] rows for display, skipping what is unknown. The generation size is shown only where it is not
 * the image's own size (an upscaled or cropped image), which the viewer already shows as "Size".
 */
export function settingsRows(settings, image = null) {
  const rows = LABELS.filter(([key]) => settings[key] !== undefined && settings[key] !== null && settings[key] !== "").map(
    ([key, label]) => [label, String(settings[key])],
  );
  const sameSize = image && settings.width === image.width && settings.height === image.height;
  if (settings.width && settings.height && !sameSize) {
    rows.push(["Generation size", `${settings.width} × ${settings.height}`]);
  }
  return rows;
}

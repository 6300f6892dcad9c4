// Turn whatever metadata an image carries into generation settings the form understands: ours and
// InvokeAI's (CoreMetadata), A1111's `parameters` text, and ComfyUI's `prompt` graph (metadata-foreign.js).
//
// settings: {prompt, negative, model_name, base_model, width, height, steps, cfg_scale, scheduler, seed,
//   loras: [{model_name, base_model?, weight}], vae: {model_name, base_model?} | null (the model's own),
//   clip_skip (layers skipped), refiner: {model_name, base_model?, switch_at, steps?, cfg_scale?, scheduler?,
//   aesthetic_score?, negative_aesthetic_score?} | null, controlnets: [{model_name, base_model?, image, weight,
//   begin, end, mode, resize_mode, processor}], hires: {scale, strength, method} | null, generation_mode}
// Any may be missing (undefined: the metadata does not say); source: a short name of where they came from.

import { fromParsedForeign, number, parseA1111, parseComfy } from "./metadata-foreign.js";

/** A model identifier as ours and InvokeAI 3 write it ({model_name, base_model}), or InvokeAI 4 ({name, base}). */
function named(model) {
  if (typeof model === "string") return model ? { model_name: model } : null;
  if (!model || typeof model !== "object") return null;
  const name = model.model_name ?? model.name;
  if (typeof name !== "string" || !name) return null;
  const base = model.base_model ?? model.base;
  return typeof base === "string" ? { model_name: name, base_model: base } : { model_name: name };
}

function fromCore(meta) {
  const refiner = named(meta.refiner_model);
  return {
    source: "imagegraph / InvokeAI",
    settings: {
      prompt: meta.positive_prompt,
      negative: meta.negative_prompt,
      model_name: named(meta.model)?.model_name,
      base_model: named(meta.model)?.base_model,
      width: number(meta.width),
      height: number(meta.height),
      steps: number(meta.steps),
      cfg_scale: number(meta.cfg_scale),
      scheduler: meta.scheduler,
      seed: number(meta.seed),
      // CoreMetadata records each of these only when it is used.
      loras: (Array.isArray(meta.loras) ? meta.loras : [])
        .map((entry) => ({ ...named(entry?.lora ?? entry?.model), weight: number(entry?.weight) ?? 1 }))
        .filter((lora) => lora.model_name),
      vae: named(meta.vae),
      clip_skip: number(meta.clip_skip) ?? 0,
      controlnets: (Array.isArray(meta.controlnets) ? meta.controlnets : [])
        .map((entry) => ({
          ...named(entry?.control_model),
          image: entry?.image?.image_name ?? entry?.image,
          weight: number(entry?.control_weight),
          begin: number(entry?.begin_step_percent),
          end: number(entry?.end_step_percent),
          mode: entry?.control_mode,
          resize_mode: entry?.resize_mode,
          processor: entry?.processor,
        }))
        .filter((control) => control.model_name),
      hires: meta.hrf_enabled
        ? { scale: number(meta.hrf_scale), strength: number(meta.hrf_strength), method: meta.hrf_method }
        : meta.generation_mode === undefined ? undefined : null,
      generation_mode: meta.generation_mode,
      refiner: refiner && {
        ...refiner,
        switch_at: number(meta.refiner_start),
        steps: number(meta.refiner_steps),
        cfg_scale: number(meta.refiner_cfg_scale),
        scheduler: meta.refiner_scheduler,
        aesthetic_score: number(meta.refiner_positive_aesthetic_score),
        negative_aesthetic_score: number(meta.refiner_negative_aesthetic_score),
      },
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

// generation_mode → words; text to image, the usual, is not shown.
const MODE_NAMES = { img2img: "image to image", inpaint: "inpainting", outpaint: "outpainting" };

const known = (value) => value !== undefined && value !== null && value !== "";

/** The adapters and the refiner, as [label, value] rows: only those the image used. */
function adapterRows(settings) {
  const rows = [];
  if (settings.loras?.length) {
    rows.push(["LoRAs", settings.loras.map((lora) => `${lora.model_name} × ${lora.weight}`).join("\n")]);
  }
  if (settings.vae?.model_name) rows.push(["VAE", settings.vae.model_name]);
  if (settings.clip_skip) {
    rows.push(["Clip skip", `${settings.clip_skip} (layers skipped; A1111's “Clip skip: ${settings.clip_skip + 1}”)`]);
  }
  if (settings.controlnets?.length) {
    const describe = (control) => {
      const processed = control.processor && control.processor !== "none" ? `, ${control.processor}` : "";
      const partial = known(control.begin) && known(control.end) && (control.begin > 0 || control.end < 1);
      const range = partial ? `, steps ${Math.round(control.begin * 100)}–${Math.round(control.end * 100)} %` : "";
      return `${control.model_name} × ${control.weight ?? 1}${processed}${range}`;
    };
    rows.push(["ControlNets", settings.controlnets.map(describe).join("\n")]);
  }
  if (settings.hires?.scale) {
    const strength = known(settings.hires.strength) ? `, denoising strength ${settings.hires.strength}` : "";
    rows.push(["Hires fix", `× ${settings.hires.scale}${strength}`]);
  }
  const refiner = settings.refiner;
  if (refiner?.model_name) {
    rows.push(["Refiner", known(refiner.switch_at) ? `${refiner.model_name}, switch at ${refiner.switch_at}` : refiner.model_name]);
    const parts = [
      known(refiner.steps) ? `${refiner.steps} steps` : null,
      known(refiner.cfg_scale) ? `CFG ${refiner.cfg_scale}` : null,
      refiner.scheduler || null,
      known(refiner.aesthetic_score) ? `aesthetic score ${refiner.aesthetic_score}` : null,
      known(refiner.negative_aesthetic_score) ? `negative ${refiner.negative_aesthetic_score}` : null,
    ].filter(Boolean);
    if (parts.length) rows.push(["Refiner settings", parts.join(", ")]);
  }
  return rows;
}

/**
 * [label, value] rows for display, skipping what is unknown. The generation size is shown only where it is not
 * the image's own size (an upscaled or cropped image), which the viewer already shows as "Size".
 */
export function settingsRows(settings, image = null) {
  const rows = LABELS.filter(([key]) => known(settings[key])).map(([key, label]) => [label, String(settings[key])]);
  const mode = MODE_NAMES[String(settings.generation_mode ?? "").replace(/^sdxl_/, "")];
  if (mode) rows.push(["Made by", mode]);
  rows.push(...adapterRows(settings));
  const sameSize = image && settings.width === image.width && settings.height === image.height;
  if (settings.width && settings.height && !sameSize) {
    rows.push(["Generation size", `${settings.width} × ${settings.height}`]);
  }
  return rows;
}

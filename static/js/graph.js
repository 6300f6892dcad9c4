// The standard text-to-image graph of the contract (API.md, "Sessions and graphs"): the same field names
// `imagegraph generate` uses, with a metadata_accumulator wired to l2i so the PNG carries its settings.

export const MAX_SEED = 4294967295;

export function randomSeed() {
  const value = new Uint32Array(1);
  crypto.getRandomValues(value);
  return value[0];
}

function graphId() {
  // crypto.randomUUID needs a secure context; a token-protected server on a LAN address is not one.
  return `t2i-${Date.now().toString(36)}-${randomSeed().toString(36)}`;
}

/**
 * params: {prompt, negative, model: {model_name, base_model, model_type}, width, height, steps, cfg_scale,
 * scheduler, seed}. Returns the Graph to POST to /sessions/.
 */
export function textToImageGraph(params) {
  const { prompt, negative, model, width, height, steps, cfg_scale, scheduler, seed } = params;
  const edge = (source, sourceField, destination, destinationField) => ({
    source: { node_id: source, field: sourceField },
    destination: { node_id: destination, field: destinationField },
  });
  return {
    id: graphId(),
    nodes: {
      model: { id: "model", type: "main_model_loader", model },
      pos: { id: "pos", type: "compel", prompt },
      neg: { id: "neg", type: "compel", prompt: negative },
      noise: { id: "noise", type: "noise", seed, width, height },
      denoise: { id: "denoise", type: "denoise_latents", steps, cfg_scale, scheduler },
      decode: { id: "decode", type: "l2i" },
      meta: {
        id: "meta",
        type: "metadata_accumulator",
        generation_mode: "txt2img",
        positive_prompt: prompt,
        negative_prompt: negative,
        seed,
        width,
        height,
        steps,
        cfg_scale,
        scheduler,
        model,
      },
    },
    edges: [
      edge("model", "clip", "pos", "clip"),
      edge("model", "clip", "neg", "clip"),
      edge("model", "unet", "denoise", "unet"),
      edge("pos", "conditioning", "denoise", "positive_conditioning"),
      edge("neg", "conditioning", "denoise", "negative_conditioning"),
      edge("noise", "noise", "denoise", "noise"),
      edge("denoise", "latents", "decode", "latents"),
      edge("model", "vae", "decode", "vae"),
      edge("meta", "metadata", "decode", "metadata"),
    ],
  };
}

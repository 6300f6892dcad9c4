// Seeds, and the standard generation graph: the server builds it (POST /app/graph, server/graph/standard.py),
// so the page, `imagegraph generate` and the example in the README run the same graph.

import { api } from "./api.js";

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
 * settings: the GenerationSettings of the API ({model: {model_name, base_model, model_type}, prompt,
 * negative_prompt, width, height, steps, cfg_scale, scheduler, seed, ...}). Resolves to the Graph to POST to
 * /sessions/.
 */
export function standardGraph(settings) {
  return api.post("/app/graph", { graph_id: graphId(), ...settings });
}

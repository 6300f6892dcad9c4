// What a ControlNet will see when its processor is Canny: a one-node `canny_image_processor` graph run for the
// control image at the chosen thresholds, so a person can set them before generating. The edge map is kept as
// an intermediate image (it is a preview, not a result for the gallery); the same image and thresholds are
// not run twice.

import { resultImage, runGraph, sessionProblem } from "./session-run.js";

const made = new Map(); // "image|low|high" → Promise of the edge map's image name

function previewGraph(image, low, high) {
  return {
    id: `canny-preview-${Date.now().toString(36)}`,
    nodes: {
      edges: {
        id: "edges",
        type: "canny_image_processor",
        image: { image_name: image },
        low_threshold: low,
        high_threshold: high,
        is_intermediate: true,
      },
    },
    edges: [],
  };
}

async function run(image, low, high) {
  const session = await runGraph(previewGraph(image, low, high));
  const name = resultImage(session, "edges");
  if (session.status !== "completed" || !name) throw new Error(`the edge map was not made: ${sessionProblem(session)}`);
  return name;
}

/** The name of the Canny edge map of `image` at `low` / `high` (made once, then remembered). */
export function cannyPreview(image, low, high) {
  const key = `${image}|${low}|${high}`;
  if (!made.has(key)) {
    const promise = run(image, low, high);
    made.set(key, promise);
    // A failure is not remembered: the next try runs again.
    promise.catch(() => made.delete(key));
  }
  return made.get(key);
}

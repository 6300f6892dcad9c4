// The viewer's "Upscale": the image on show made larger by `scale`, with an upscale model (`esrgan`, tiled,
// at the model's own scale, then Lanczos to the size asked for) or with Lanczos alone. The result is a new
// image in the gallery, which the viewer then shows.

import { api } from "./api.js";
import { $, errorText, h } from "./dom.js";
import { modelKey, modelsOf, findModel, identifier } from "./model-choice.js";
import { resultImage, runGraph, sessionProblem } from "./session-run.js";

const LIMIT = 16384; // img_resize's largest side

let current = () => null; // the ImageDTO on show
let open = () => {};
let wanted = ""; // the upscaler chosen last ("" = Lanczos), kept for the next image
let busy = false;

const panel = () => $("#viewer-upscale-panel");
const scaleInput = () => $("#viewer-upscale-scale");

function targetSize(image, scale) {
  return [Math.round(image.width * scale), Math.round(image.height * scale)];
}

/** The graph: esrgan (intermediate) → img_resize (Lanczos) to `width` × `height`; or img_resize alone. */
export function upscaleGraph(imageName, upscaler, width, height) {
  const nodes = {};
  const edges = [];
  let source = { image: { image_name: imageName } };
  if (upscaler) {
    nodes.upscale = { id: "upscale", type: "esrgan", image: { image_name: imageName }, model: identifier(upscaler), is_intermediate: true };
    edges.push({ source: { node_id: "upscale", field: "image" }, destination: { node_id: "resize", field: "image" } });
    source = {};
  }
  nodes.resize = { id: "resize", type: "img_resize", width, height, resample_mode: "lanczos", ...source };
  return { id: `upscale-${Date.now().toString(36)}`, nodes, edges };
}

function fillModels() {
  const select = $("#viewer-upscale-model");
  const models = modelsOf("upscale");
  select.replaceChildren(
    h("option", { value: "" }, "Lanczos (no model)"),
    ...models.map((config) => h("option", { value: modelKey(config) }, config.model_name)),
  );
  select.value = models.some((config) => modelKey(config) === wanted) ? wanted : "";
}

function renderSize() {
  const image = current();
  const scale = Number(scaleInput().value);
  const line = $("#viewer-upscale-size");
  if (!image || !Number.isFinite(scale) || scale <= 1) {
    line.textContent = "";
    return;
  }
  const [width, height] = targetSize(image, scale);
  line.textContent = `${image.width} × ${image.height} → ${width} × ${height}`;
}

function setStatus(text) {
  $("#viewer-upscale-status").textContent = text;
}

function toggle(show = panel().hidden) {
  panel().hidden = !show;
  $("#viewer-upscale").setAttribute("aria-expanded", String(show));
  if (show) {
    fillModels();
    renderSize();
    $("#viewer-upscale-model").focus();
  }
}

/** A new image is on show: the panel closes (unless an upscale of the last one is still running). */
export function upscaleFor() {
  if (!busy) {
    toggle(false);
    setStatus("");
  }
  renderSize();
}

async function run(event) {
  event.preventDefault();
  const image = current();
  if (!image || busy) return;
  const input = scaleInput();
  const scale = Number(input.value);
  const [min, max] = [Number(input.min), Number(input.max)];
  if (input.value.trim() === "" || !Number.isFinite(scale) || scale < min || scale > max) {
    input.setCustomValidity(`The scale must be a number between ${min} and ${max}.`);
    setStatus(`The scale must be a number between ${min} and ${max}.`);
    input.focus();
    return;
  }
  input.setCustomValidity("");
  const [width, height] = targetSize(image, scale);
  if (Math.max(width, height) > LIMIT) {
    setStatus(`${width} × ${height} is over the ${LIMIT} pixels an image may have on a side; choose a smaller scale.`);
    return;
  }
  wanted = $("#viewer-upscale-model").value;
  const upscaler = findModel(wanted);
  const how = upscaler ? upscaler.model_name : "Lanczos";
  busy = true;
  const button = $("#viewer-upscale-run");
  button.disabled = true;
  setStatus(`Upscaling with ${how}: waiting in the queue…`);
  try {
    const session = await runGraph(upscaleGraph(image.image_name, upscaler, width, height), {
      onEvent: (e) => {
        if (e.type === "invocation_started") setStatus(`Upscaling with ${how}…`);
        if (e.type === "generator_progress" && e.total_steps > 1) setStatus(`Upscaling with ${how}: tile ${e.step} of ${e.total_steps}`);
      },
    });
    const name = resultImage(session, "resize");
    if (session.status !== "completed" || !name) throw new Error(sessionProblem(session));
    const result = await api.get(`/images/${encodeURIComponent(name)}`);
    // Still busy here: the viewer keeps this panel open on the result, to say what happened.
    if ($("#viewer").open) open(result);
    setStatus(`Upscaled with ${how} to ${result.width} × ${result.height}; it is in the gallery.`);
  } catch (error) {
    const details = (error.errors ?? []).map((problem) => problem.msg).join(" ");
    setStatus(`Could not upscale: ${errorText(error)}${details && !errorText(error).includes(details) ? ` ${details}` : ""}`);
  } finally {
    busy = false;
    button.disabled = false;
  }
}

/** current(): the ImageDTO the viewer shows; openImage(dto): show another one. */
export function initUpscale({ current: shown, openImage }) {
  current = shown;
  open = openImage;
  $("#viewer-upscale").addEventListener("click", () => toggle());
  panel().addEventListener("submit", run);
  scaleInput().addEventListener("input", () => {
    scaleInput().setCustomValidity("");
    renderSize();
  });
}

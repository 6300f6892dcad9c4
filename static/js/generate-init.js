// The Generate form's init image: image to image (`init_image`, `strength`), inpainting (a mask painted over
// the image, uploaded as an image when generating: `mask_image`) and outpainting (`outpaint`: how far to
// extend each side; the width and height sent are then the extended canvas's). The image comes from an
// upload, the gallery, or the viewer's "Use as init image" and "Inpaint".

import { api, withToken } from "./api.js";
import { $, errorText } from "./dom.js";
import { checkNumber, field } from "./generate-form.js";
import { imageInfo, imageSourceButtons } from "./image-source.js";
import { MaskEditor } from "./mask-editor.js";
import { bus } from "./state.js";

const MODES = ["img2img", "inpaint", "outpaint"];
const SIDES = ["left", "right", "top", "bottom"];
const DIMENSION = { min: 64, max: 4096 }; // GenerationSettings' width and height, multiples of 8

let init = null; // {image_name, width, height, image_url, thumbnail_url} of the init image, or null
let editor = null;
let uploaded = { version: -1, name: null }; // the mask as last uploaded
let onChange = () => {};

const mode = () => document.querySelector('input[name="init_mode"]:checked')?.value ?? "img2img";
const toEight = (value) => Math.min(DIMENSION.max, Math.max(DIMENSION.min, Math.round(value / 8) * 8));

/** True while the form starts from an image (the hires fix is for text to image only). */
export function hasInitImage() {
  return init !== null;
}

function margins() {
  return Object.fromEntries(SIDES.map((side) => [side, Number(field(`outpaint_${side}`).value)]));
}

/** The outpainted canvas: the image (at a multiple of 8) with the margins around it. */
function outpaintSize() {
  const m = margins();
  return { width: toEight(init.width) + m.left + m.right, height: toEight(init.height) + m.top + m.bottom };
}

function setSize(width, height) {
  field("width").value = width;
  field("height").value = height;
}

// ---- showing it ---------------------------------------------------------------------------------------

function renderStage() {
  const stage = $("#gen-mask-stage");
  const img = $("#gen-init-image");
  const outpaint = mode() === "outpaint";
  let [boxWidth, boxHeight] = [init.width, init.height];
  let place = { left: 0, top: 0, width: 100, height: 100 };
  if (outpaint) {
    // The image in its place on the larger canvas, the new area around it.
    const m = margins();
    const [width, height] = [toEight(init.width), toEight(init.height)];
    [boxWidth, boxHeight] = [width + m.left + m.right, height + m.top + m.bottom];
    place = {
      left: (100 * m.left) / boxWidth,
      top: (100 * m.top) / boxHeight,
      width: (100 * width) / boxWidth,
      height: (100 * height) / boxHeight,
    };
  }
  stage.style.aspectRatio = `${boxWidth} / ${boxHeight}`;
  stage.style.width = `min(100%, calc(55vh * ${boxWidth / boxHeight}))`;
  stage.classList.toggle("outpainting", outpaint);
  for (const [key, value] of Object.entries(place)) img.style[key] = `${value}%`;
}

function render() {
  $("#gen-init-empty").hidden = Boolean(init);
  $("#gen-init-body").hidden = !init;
  if (!init) return;
  const img = $("#gen-init-image");
  const src = withToken(init.image_url);
  if (img.getAttribute("src") !== src) img.src = src;
  img.alt = `The init image, ${init.width} × ${init.height}`;
  $("#gen-init-name").textContent = `${init.width} × ${init.height}`;
  const current = mode();
  $("#gen-mask-canvas").hidden = current !== "inpaint";
  $("#gen-mask-tools").hidden = current !== "inpaint";
  $("#gen-outpaint-fields").hidden = current !== "outpaint";
  if (current === "outpaint") {
    const { width, height } = outpaintSize();
    $("#gen-outpaint-hint").textContent = `The canvas becomes ${width} × ${height}; the new area is painted.`;
  }
  renderStage();
}

/** Run `then` once the Generate page shows (a hash change shows it a moment later). */
function whenShown(then, frames = 30) {
  if (!$("#page-generate").hidden || frames <= 0) then();
  else requestAnimationFrame(() => whenShown(then, frames - 1));
}

function showProblem(text) {
  $("#gen-form-error").textContent = text;
}

/** Start from `image` (an ImageDTO) in `wanted` mode; the size fields take the image's size. */
function useImage(image, wanted = null) {
  const changed = init?.image_name !== image.image_name;
  init = {
    image_name: image.image_name,
    width: image.width,
    height: image.height,
    image_url: image.image_url,
    thumbnail_url: image.thumbnail_url,
  };
  if (wanted) $(`input[name="init_mode"][value="${wanted}"]`).checked = true;
  editor.setSize(init.width, init.height);
  if (changed) editor.clear();
  if (mode() === "outpaint") {
    const { width, height } = outpaintSize();
    setSize(width, height);
  } else setSize(toEight(init.width), toEight(init.height));
  render();
  onChange();
}

function remove() {
  init = null;
  editor.clear();
  render();
  onChange();
}

// ---- reading it -----------------------------------------------------------------------------------------

function readMargins(problems) {
  const values = {};
  for (const side of SIDES) {
    const input = field(`outpaint_${side}`);
    const value = Number(input.value);
    const label = `${side[0].toUpperCase()}${side.slice(1)} margin`;
    let message = "";
    if (input.value.trim() === "" || !Number.isInteger(value) || value < 0 || value > 4096) message = `${label} must be a whole number of pixels, 0 to 4096.`;
    else if (value % 8) message = `${label} must be a multiple of 8 (try ${Math.round(value / 8) * 8}).`;
    input.setCustomValidity(message);
    if (message) problems.push({ message, input });
    values[side] = value;
  }
  if (SIDES.every((side) => values[side] === 0) && !problems.length) {
    problems.push({ message: "Outpainting: extend at least one side (left, right, top or bottom).", input: field("outpaint_right") });
  }
  return values;
}

async function uploadMask() {
  if (uploaded.version === editor.version && uploaded.name) return uploaded.name;
  const version = editor.version;
  const form = new FormData();
  form.append("file", await editor.toBlob(), "mask.png");
  // An intermediate: the mask belongs to the images it makes, not to the gallery.
  const image = await api.post("/images/upload", undefined, { form, query: { image_category: "mask", is_intermediate: true } });
  uploaded = { version, name: image.image_name };
  return image.image_name;
}

// ---- the section ----------------------------------------------------------------------------------------

export const initSection = {
  name: "init",

  init(changed) {
    onChange = changed;
    editor = new MaskEditor({ canvas: $("#gen-mask-canvas"), cursor: $("#gen-mask-cursor"), onChange: () => onChange() });
    $("#gen-init-source").replaceWith(
      imageSourceButtons({
        id: "gen-init-file",
        what: "the init image",
        current: () => init?.image_name ?? null,
        onImage: (image) => useImage(image),
        onError: showProblem,
      }),
    );
    $("#gen-init-remove").addEventListener("click", remove);
    for (const radio of document.querySelectorAll('input[name="init_mode"]')) {
      radio.addEventListener("change", () => {
        if (init && mode() === "outpaint") {
          const { width, height } = outpaintSize();
          setSize(width, height);
        } else if (init) setSize(toEight(init.width), toEight(init.height));
        render();
      });
    }
    for (const side of SIDES) {
      field(`outpaint_${side}`).addEventListener("input", () => {
        if (!init || mode() !== "outpaint") return;
        const { width, height } = outpaintSize();
        if (SIDES.every((s) => Number.isInteger(margins()[s]))) setSize(width, height);
        render();
      });
    }
    for (const radio of document.querySelectorAll('input[name="mask_tool"]')) {
      radio.addEventListener("change", () => {
        editor.tool = radio.value;
      });
    }
    const sizeSlider = $("#gen-mask-size-slider");
    const sizeNumber = field("mask_size");
    const setBrush = (value) => {
      if (Number.isFinite(value) && value >= 1) editor.size = value;
    };
    sizeSlider.addEventListener("input", () => {
      sizeNumber.value = sizeSlider.value;
      setBrush(Number(sizeSlider.value));
    });
    sizeNumber.addEventListener("input", () => {
      sizeSlider.value = sizeNumber.value;
      setBrush(Number(sizeNumber.value));
    });
    $("#gen-mask-invert").addEventListener("click", () => editor.invert());
    $("#gen-mask-clear").addEventListener("click", () => editor.clear());
    const strength = field("strength");
    const strengthSlider = $("#gen-strength-slider");
    strengthSlider.addEventListener("input", () => {
      strength.value = strengthSlider.value;
      strength.setCustomValidity("");
    });
    strength.addEventListener("input", () => {
      if (strength.value.trim() !== "" && Number.isFinite(Number(strength.value))) strengthSlider.value = strength.value;
    });
    // The viewer's "Use as init image" and "Inpaint".
    bus.on("use-init-image", ({ image, mode: wanted }) => {
      useImage(image, wanted);
      location.hash = "#/generate";
      whenShown(() => {
        $("#gen-init-section").scrollIntoView({ block: "start" });
        $(`input[name="init_mode"][value="${wanted}"]`)?.focus({ preventScroll: true });
      });
    });
    render();
  },

  modelChanged() {},

  read(problems) {
    if (!init) return {};
    const strength = checkNumber(field("strength"), "Strength");
    if (strength.message) problems.push(strength);
    const parts = { init_image: init.image_name, strength: strength.value };
    const current = mode();
    if (current === "inpaint") {
      if (editor.isEmpty()) {
        problems.push({ message: "Inpaint: paint over the part of the image to repaint first (or choose Image to image).", input: $("#gen-mask-brush") });
      }
      parts.mask_image = null; // uploaded in prepare()
    } else if (current === "outpaint") {
      const values = readMargins(problems);
      const { width, height } = outpaintSize();
      if (width > DIMENSION.max || height > DIMENSION.max) {
        problems.push({ message: `Outpainting: the canvas would be ${width} × ${height}, over 4096 pixels; extend less.`, input: field("outpaint_right") });
      }
      // The extended canvas is the size generated at.
      Object.assign(parts, { outpaint: { ...values, fill: field("outpaint_fill").value }, width, height });
    }
    return parts;
  },

  /** The mask is uploaded (once per edit) when the settings are sent. */
  async prepare(parts) {
    if (!init || mode() !== "inpaint") return {};
    try {
      return { mask_image: await uploadMask() };
    } catch (error) {
      throw new Error(`The mask could not be uploaded: ${errorText(error)}`);
    }
  },

  /** Which input a 422's `loc` is about (["body", "init_image"], ["body", "nodes", "mask_image", "image"]...). */
  locate(loc) {
    // A setting (["init_image"]) or a node of the standard graph (["nodes", "mask_image", "image"]).
    const name = loc[0] === "nodes" ? loc[1] : loc[0];
    if (["init_image", "init_resize", "encode"].includes(name)) return { label: "Init image", input: $("#gen-init-remove") };
    if (["mask_image", "mask", "mask_resize"].includes(name)) return { label: "Inpaint mask", input: $("#gen-mask-brush") };
    if (name === "strength") return { label: "Strength", input: field("strength") };
    if (name === "outpaint" || name === "pad") {
      const side = SIDES.includes(loc.at(-1)) ? loc.at(-1) : "right";
      return { label: "Outpainting", input: field(`outpaint_${side}`) };
    }
    return null;
  },

  save() {
    const saved = { image: init, mode: mode(), strength: field("strength").value, fill: field("outpaint_fill").value };
    for (const side of SIDES) saved[side] = field(`outpaint_${side}`).value;
    // The painting goes with it, as long as it is a reasonable size to keep in the browser.
    if (init && !editor.isEmpty()) {
      const painted = editor.toDataURL();
      if (painted.length < 1_500_000) saved.mask = painted;
    }
    return saved;
  },

  restore(saved) {
    if (!saved || typeof saved !== "object") return;
    if (MODES.includes(saved.mode)) $(`input[name="init_mode"][value="${saved.mode}"]`).checked = true;
    if (typeof saved.strength === "string") {
      field("strength").value = saved.strength;
      $("#gen-strength-slider").value = saved.strength;
    }
    if (["edge", "fill"].includes(saved.fill)) field("outpaint_fill").value = saved.fill;
    for (const side of SIDES) if (typeof saved[side] === "string") field(`outpaint_${side}`).value = saved[side];
    const image = saved.image;
    if (image && typeof image.image_name === "string" && Number(image.width) > 0 && Number(image.height) > 0) {
      init = { ...image };
      editor.setSize(init.width, init.height);
      if (typeof saved.mask === "string") editor.load(saved.mask);
      render();
      // It may have been deleted since.
      imageInfo(init.image_name).catch((error) => {
        if (error.status !== 404 || init?.image_name !== image.image_name) return;
        remove();
        showProblem("The init image you had chosen was deleted; choose another.");
      });
    }
  },

  apply() {
    return [];
  },
};

// The image viewer dialog: the full image, its generation settings (ours, InvokeAI's, A1111's, ComfyUI's),
// "Use these settings", star, download, delete; "Use as init image", "Inpaint" (both on the Generate page) and
// "Upscale" (upscale.js); arrow keys step through the gallery, Escape closes.

import { api, withToken } from "./api.js";
import { $, confirmDialog, errorText, formatDate, h, notify } from "./dom.js";
import { knownImage, neighbour } from "./gallery.js";
import { readSettings, settingsRows } from "./metadata.js";
import { bus } from "./state.js";
import { initUpscale, upscaleFor } from "./upscale.js";

let image = null; // the ImageDTO on show
let parsed = null; // {source, settings} read from its metadata, or null
let graphBody = null; // {graph, workflow} from its /metadata: what "Open in workflow editor" opens
let deleting = null; // the name this viewer is deleting: its own image_deleted event is expected

const dialog = () => $("#viewer");

function renderStar() {
  const button = $("#viewer-star");
  button.setAttribute("aria-pressed", String(image.starred));
  button.textContent = image.starred ? "★ Starred" : "☆ Star";
}

function renderNav() {
  $("#viewer-prev").disabled = !neighbour(image.image_name, -1);
  $("#viewer-next").disabled = !neighbour(image.image_name, 1);
}

function renderMeta(rows) {
  $("#viewer-meta").replaceChildren(...rows.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

function baseRows() {
  return [
    ["Size", `${image.width} × ${image.height}`],
    ["Category", image.image_category],
    ["Created", formatDate(image.created_at)],
  ];
}

async function loadMetadata(shownName) {
  $("#viewer-source").textContent = "Reading metadata…";
  $("#viewer-use").disabled = true;
  $("#viewer-workflow").disabled = true;
  graphBody = null;
  $("#viewer-raw-text").textContent = "";
  try {
    const body = await api.get(`/images/${encodeURIComponent(shownName)}/metadata`);
    if (image?.image_name !== shownName) return;
    parsed = readSettings(body.metadata);
    $("#viewer-raw-text").textContent = JSON.stringify(body, null, 2);
    if (body.graph?.nodes) {
      graphBody = { graph: body.graph, workflow: body.workflow ?? null };
      $("#viewer-workflow").disabled = false;
    }
    if (parsed) {
      $("#viewer-source").textContent = `Generation settings from ${parsed.source} metadata.`;
      renderMeta([...settingsRows(parsed.settings, image), ...baseRows()]);
      $("#viewer-use").disabled = false;
    } else {
      $("#viewer-source").textContent = body.metadata
        ? "This image carries metadata, but no generation settings we can read."
        : "This image carries no generation settings.";
    }
  } catch (error) {
    if (image?.image_name === shownName) $("#viewer-source").textContent = `Could not read metadata: ${errorText(error)}`;
  }
}

export function openViewer(next) {
  image = knownImage(next.image_name) ?? next;
  parsed = null;
  const img = $("#viewer-image");
  img.src = withToken(image.image_url);
  img.width = image.width;
  img.height = image.height;
  img.alt = `${image.width}×${image.height} image from ${formatDate(image.created_at)}`;
  $("#viewer-title").textContent = image.image_category === "user" ? "Uploaded image" : "Image";
  const download = $("#viewer-download");
  download.href = withToken(image.image_url);
  download.setAttribute("download", image.image_name);
  renderStar();
  renderNav();
  renderMeta(baseRows());
  upscaleFor(image);
  if (!dialog().open) dialog().showModal();
  loadMetadata(image.image_name);
}

function step(direction) {
  const next = image && neighbour(image.image_name, direction);
  if (next) openViewer(next);
}

async function toggleStar() {
  try {
    image = await api.patch(`/images/${encodeURIComponent(image.image_name)}`, { starred: !image.starred });
    renderStar();
  } catch (error) {
    notify(`Could not change the star: ${errorText(error)}`, { kind: "error" });
  }
}

async function deleteShown() {
  const target = image;
  const ok = await confirmDialog({
    title: "Delete this image?",
    message: "The image file, its thumbnail and its record are removed. This cannot be undone.",
    confirmLabel: "Delete",
    danger: true,
  });
  if (!ok || !target) {
    $("#viewer-delete").focus();
    return;
  }
  const after = neighbour(target.image_name, 1) ?? neighbour(target.image_name, -1);
  deleting = target.image_name;
  try {
    await api.delete(`/images/${encodeURIComponent(target.image_name)}`);
    notify("Image deleted.");
    if (after) openViewer(after);
    else dialog().close();
  } catch (error) {
    notify(`Could not delete the image: ${errorText(error)}`, { kind: "error" });
  } finally {
    deleting = null;
  }
}

export function initViewer() {
  $("#viewer-close").addEventListener("click", () => dialog().close());
  $("#viewer-prev").addEventListener("click", () => step(-1));
  $("#viewer-next").addEventListener("click", () => step(1));
  $("#viewer-star").addEventListener("click", toggleStar);
  $("#viewer-delete").addEventListener("click", deleteShown);
  $("#viewer-workflow").addEventListener("click", () => {
    if (!graphBody || !image) return;
    const { graph, workflow } = graphBody;
    dialog().close();
    // The layout comes from the image's imagegraph_workflow chunk when a saved workflow made it.
    bus.emit("open-workflow", { graph, layout: workflow?.layout ?? null, name: workflow?.name ?? null, source: "this image" });
  });
  for (const [button, mode] of [["#viewer-init", "img2img"], ["#viewer-inpaint", "inpaint"]]) {
    $(button).addEventListener("click", () => {
      if (!image) return;
      const chosen = image;
      dialog().close();
      bus.emit("use-init-image", { image: chosen, mode });
    });
  }
  initUpscale({ current: () => image, openImage: openViewer });
  $("#viewer-use").addEventListener("click", () => {
    if (!parsed) return;
    dialog().close();
    bus.emit("use-settings", parsed);
  });
  dialog().addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select, summary")) return;
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
  });
  // A click on the backdrop (outside the dialog box) closes it, as people expect.
  dialog().addEventListener("click", (event) => {
    if (event.target === dialog()) dialog().close();
  });
  dialog().addEventListener("close", () => {
    image = null;
    $("#viewer-image").removeAttribute("src");
  });

  bus.on("open-image", openViewer);
  bus.on("image_updated", (event) => {
    if (image?.image_name === event.image.image_name) {
      image = event.image;
      renderStar();
    }
  });
  bus.on("image_deleted", (event) => {
    if (event.image_name !== deleting && image?.image_name === event.image_name && dialog().open) {
      dialog().close();
      notify("The image you were viewing was deleted.");
    }
  });
}

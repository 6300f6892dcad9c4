// Where the Generate page's images come from (the init image, a ControlNet's control image): a file uploaded
// on the spot, or an image of the gallery chosen in the image picker. Either way the caller gets an ImageDTO.

import { api } from "./api.js";
import { errorText, h } from "./dom.js";
import { pickImage } from "./editor/pickers.js";

/** Upload `file` (PNG, JPEG or WebP) into `category` → its ImageDTO. */
export function uploadFile(file, category = "user") {
  const form = new FormData();
  form.append("file", file);
  return api.post("/images/upload", undefined, { form, query: { image_category: category } });
}

/** The ImageDTO of an image by name (an ApiError with status 404 once it is deleted). */
export function imageInfo(name) {
  return api.get(`/images/${encodeURIComponent(name)}`);
}

/**
 * "Upload…" and "From gallery…" for one image: `id` names the file input, `what` says in words what the image
 * is for ("the init image", "ControlNet 1's control image"). onImage(dto) gets the image; onError(text) a
 * failure; onBusy(text) a line to show while uploading.
 */
export function imageSourceButtons({ id, what, category = "user", current = () => null, onImage, onError, onBusy = () => {} }) {
  const input = h("input", {
    id,
    type: "file",
    class: "visually-hidden",
    accept: "image/png,image/jpeg,image/webp",
    "aria-label": `Upload ${what}`,
  });
  input.addEventListener("change", async () => {
    const file = input.files?.[0];
    if (!file) return;
    onBusy(`Uploading ${file.name}…`);
    try {
      onImage(await uploadFile(file, category));
    } catch (error) {
      onError(`${file.name}: ${errorText(error)}`);
    } finally {
      input.value = "";
    }
  });
  const fromGallery = async () => {
    const name = await pickImage(current(), { title: `Choose ${what}`, category });
    if (!name) return;
    try {
      onImage(await imageInfo(name));
    } catch (error) {
      onError(errorText(error));
    }
  };
  return h(
    "div",
    { class: "button-row image-source" },
    input,
    h("label", { class: "button small", for: id }, "Upload…"),
    h("button", { type: "button", class: "small", onclick: fromGallery, "aria-label": `Choose ${what} from the gallery` }, "From gallery…"),
  );
}

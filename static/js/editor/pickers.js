// The image picker behind an image input: the gallery's newest images, or a file uploaded on the spot.

import { api, withToken } from "../api.js";
import { $, errorText, h } from "../dom.js";

const SHOWN = 120;

/**
 * Resolves to the chosen image's name, or null when the dialog is closed without a choice. `title` heads the
 * dialog; an image uploaded from it gets `category` (the Generate page's control images are `control`).
 */
export function pickImage(current, { title = "Choose an image", category = "user" } = {}) {
  const dialog = $("#wf-image-dialog");
  $("#wf-image-title").textContent = title;
  const grid = $("#wf-image-grid");
  const status = $("#wf-image-status");
  const upload = $("#wf-image-upload");
  let chosen = null;
  status.textContent = "Loading…";
  grid.replaceChildren();
  api
    .get("/images/", { query: { is_intermediate: false, limit: SHOWN } })
    .then((page) => {
      status.textContent = page.total ? "" : "No images yet: upload one.";
      grid.replaceChildren(
        ...page.items.map((image) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                class: `wf-pick${image.image_name === current ? " current" : ""}`,
                dataset: { imageName: image.image_name },
                "aria-label": `${image.width}×${image.height} image ${image.image_name}`,
              },
              h("img", { src: withToken(image.thumbnail_url), alt: "", loading: "lazy" }),
            ),
          ),
        ),
      );
    })
    .catch((error) => {
      status.textContent = `Could not list images: ${errorText(error)}`;
    });

  return new Promise((resolve) => {
    const onClick = (event) => {
      const button = event.target.closest("[data-image-name]");
      if (!button) return;
      chosen = button.dataset.imageName;
      dialog.close();
    };
    const onUpload = async () => {
      const file = upload.files?.[0];
      if (!file) return;
      const form = new FormData();
      form.append("file", file);
      status.textContent = `Uploading ${file.name}…`;
      try {
        const image = await api.post("/images/upload", undefined, { form, query: { image_category: category } });
        chosen = image.image_name;
        dialog.close();
      } catch (error) {
        status.textContent = `${file.name}: ${errorText(error)}`;
      } finally {
        upload.value = "";
      }
    };
    grid.addEventListener("click", onClick);
    upload.addEventListener("change", onUpload);
    dialog.addEventListener(
      "close",
      () => {
        grid.removeEventListener("click", onClick);
        upload.removeEventListener("change", onUpload);
        resolve(chosen);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

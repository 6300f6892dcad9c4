// The Models page: every model grouped by base and type with its `error`; sync; import by path or URL;
// scan a folder and add what it finds; edit, convert, merge, delete. The list reloads on models_changed,
// so a file dropped into an autoimport folder shows up by itself.

import { api } from "./api.js";
import { $, confirmDialog, errorText, h, notify } from "./dom.js";
import { bus, store } from "./state.js";

const BASES = { "sd-1": "Stable Diffusion 1.x", "sd-2": "Stable Diffusion 2.x", sdxl: "SDXL", "sdxl-refiner": "SDXL Refiner" };
const TYPES = {
  main: "Main models",
  lora: "LoRAs",
  embedding: "Embeddings",
  vae: "VAEs",
  controlnet: "ControlNets",
  upscale: "Upscalers",
};
const VARIANTS = ["normal", "inpaint", "depth"];
const PREDICTIONS = ["epsilon", "v_prediction", "sample"];
const INTERPOLATIONS = ["weighted_sum", "sigmoid", "inv_sigmoid", "add_difference"];

let loading = null;
let again = false;
let ckptConfs = null;

const modelPath = (model) =>
  `/models/${encodeURIComponent(model.base_model)}/${encodeURIComponent(model.model_type)}/${encodeURIComponent(model.model_name)}`;
const keyOf = (model) => `${model.base_model}/${model.model_type}/${model.model_name}`;

// ---- the list -------------------------------------------------------------------------------------------

/** Fetch every model; calls that arrive while one is in flight fold into one more fetch after it. */
export async function loadModels() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = (async () => {
    do {
      again = false;
      try {
        const body = await api.get("/models/");
        store.models = body.models;
        render();
        bus.emit("models-loaded");
      } catch (error) {
        $("#models-status").textContent = `Could not load models: ${errorText(error)}`;
      }
    } while (again);
  })().finally(() => {
    loading = null;
  });
  return loading;
}

function badge(text) {
  return text ? h("span", { class: "tag" }, text) : null;
}

function card(model) {
  const key = keyOf(model);
  const canConvert = model.model_type === "main" && model.model_format === "checkpoint";
  return h(
    "li",
    { class: `model-card${model.error ? " has-error" : ""}`, dataset: { key } },
    h(
      "div",
      { class: "model-head" },
      h("h4", {}, model.model_name),
      badge(model.model_format),
      model.variant && model.variant !== "normal" ? badge(model.variant) : null,
      badge(model.prediction_type),
    ),
    h("code", { class: "model-path" }, model.path),
    model.description ? h("p", { class: "muted" }, model.description) : null,
    model.error ? h("p", { class: "model-error" }, `Unusable: ${model.error}`) : null,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "small", dataset: { action: "edit" }, "aria-label": `Edit ${model.model_name}` }, "Edit"),
      canConvert
        ? h("button", { type: "button", class: "small", dataset: { action: "convert" }, "aria-label": `Convert ${model.model_name} to diffusers` }, "Convert")
        : null,
      h("button", { type: "button", class: "small danger", dataset: { action: "delete" }, "aria-label": `Delete ${model.model_name}` }, "Delete"),
    ),
  );
}

function render() {
  const list = $("#models-list");
  // Keep keyboard focus on the same button across a re-render (models_changed can arrive at any time).
  const focused = document.activeElement?.closest?.("[data-key]") && list.contains(document.activeElement)
    ? [document.activeElement.closest("[data-key]").dataset.key, document.activeElement.dataset.action]
    : null;
  const sections = [];
  const known = new Set([...Object.keys(BASES)]);
  const bases = [...Object.keys(BASES), ...new Set(store.models.map((m) => m.base_model).filter((b) => !known.has(b)))];
  for (const base of bases) {
    const ofBase = store.models.filter((model) => model.base_model === base);
    if (!ofBase.length) continue;
    const groups = [];
    const types = [...Object.keys(TYPES), ...new Set(ofBase.map((m) => m.model_type).filter((t) => !(t in TYPES)))];
    for (const type of types) {
      const models = ofBase.filter((model) => model.model_type === type).sort((a, b) => a.model_name.localeCompare(b.model_name));
      if (!models.length) continue;
      const label = `${TYPES[type] ?? type} for ${BASES[base] ?? base}`;
      groups.push(
        h("h3", {}, `${TYPES[type] ?? type} (${models.length})`),
        h("ul", { class: "model-cards", "aria-label": label }, models.map(card)),
      );
    }
    sections.push(h("section", { class: "model-group", "aria-label": BASES[base] ?? base }, h("h2", {}, BASES[base] ?? base), groups));
  }
  if (!sections.length) {
    sections.push(
      h(
        "p",
        { class: "empty" },
        "No models yet. Drop a model file or folder into ",
        h("code", {}, `${store.config?.folders?.autoimport ?? "autoimport"}/main`),
        ", import one by path, or scan a folder.",
      ),
    );
  }
  list.replaceChildren(...sections);
  const count = store.models.length;
  const broken = store.models.filter((model) => model.error).length;
  $("#models-status").textContent = `${count} model${count === 1 ? "" : "s"}${broken ? `, ${broken} with errors` : ""}.`;
  if (focused) {
    const again = list.querySelector(`[data-key="${CSS.escape(focused[0])}"] [data-action="${focused[1]}"]`);
    again?.focus();
  }
}

// ---- a dialog with fields ----------------------------------------------------------------------------------

/** Show the shared form dialog; `submit(form)` runs on Save and may throw to keep it open with the error. */
function formDialog({ title, fields, submitLabel, submit }) {
  const dialog = $("#model-dialog");
  const form = $("#model-dialog-form");
  const error = $("#model-dialog-error");
  const ok = $("#model-dialog-ok");
  $("#model-dialog-title").textContent = title;
  $("#model-dialog-fields").replaceChildren(...fields);
  error.textContent = "";
  ok.textContent = submitLabel;
  ok.disabled = false;
  const onSubmit = async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    ok.disabled = true;
    const label = ok.textContent;
    ok.textContent = "Working…";
    error.textContent = "";
    try {
      await submit(form);
      dialog.close();
    } catch (problem) {
      error.textContent = errorText(problem);
    } finally {
      ok.disabled = false;
      ok.textContent = label;
    }
  };
  const cancel = () => dialog.close();
  form.addEventListener("submit", onSubmit);
  $("#model-dialog-cancel").addEventListener("click", cancel);
  dialog.addEventListener(
    "close",
    () => {
      form.removeEventListener("submit", onSubmit);
      $("#model-dialog-cancel").removeEventListener("click", cancel);
    },
    { once: true },
  );
  dialog.showModal();
  form.querySelector("input, select, textarea")?.focus();
}

let fieldCounter = 0;

function labelled(labelText, control, hint) {
  const id = `mf-${++fieldCounter}`;
  control.id = id;
  const hintEl = hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl);
}

function select(name, options, value) {
  const el = h(
    "select",
    { name },
    options.map((option) => (Array.isArray(option) ? h("option", { value: option[0] }, option[1]) : h("option", { value: option }, option))),
  );
  el.value = value ?? "";
  return el;
}

const text = (name, value, extra = {}) => h("input", { type: "text", name, value: value ?? "", autocomplete: "off", spellcheck: "false", ...extra });
const valueOf = (form, name) => form.elements.namedItem(name).value;

// ---- edit, convert, delete, merge ----------------------------------------------------------------------------

async function edit(model) {
  if (!ckptConfs) {
    try {
      ckptConfs = await api.get("/models/ckpt_confs");
    } catch (error) {
      ckptConfs = [];
      notify(`Could not load the legacy configs: ${errorText(error)}`, { kind: "warning" });
    }
  }
  // Variant, prediction type, a legacy config and a VAE of its own mean something for main models only.
  const isMain = model.model_type === "main";
  const isCheckpoint = isMain && model.model_format === "checkpoint";
  const confs = ckptConfs.includes(model.config) || !model.config ? ckptConfs : [model.config, ...ckptConfs];
  const fields = [
    labelled("Name", text("model_name", model.model_name, { required: true })),
    labelled("Base", select("base_model", Object.keys(BASES).map((b) => [b, BASES[b]]), model.base_model)),
    labelled("Description", h("textarea", { name: "description", rows: 2, value: model.description ?? "" })),
    labelled("Path", text("path", model.path, { required: true })),
    isMain ? labelled("Variant", select("variant", VARIANTS, model.variant ?? "normal")) : null,
    isMain
      ? labelled("Prediction type", select("prediction_type", [["", "Not set"], ...PREDICTIONS], model.prediction_type ?? ""))
      : null,
    isCheckpoint
      ? labelled("Legacy config", select("config", [["", "Not set"], ...confs], model.config ?? ""), "The original LDM yaml this checkpoint was trained with.")
      : null,
    isMain ? labelled("VAE", text("vae", model.vae, { placeholder: "optional path" }), "A VAE to use instead of the model's own.") : null,
    h("p", { class: "muted" }, `Type: ${model.model_type} · format: ${model.model_format}`),
  ].filter(Boolean);
  formDialog({
    title: `Edit ${model.model_name}`,
    fields,
    submitLabel: "Save",
    submit: async (form) => {
      const orNull = (name) => valueOf(form, name) || null;
      const body = {
        ...model,
        model_name: valueOf(form, "model_name").trim(),
        base_model: valueOf(form, "base_model"),
        description: valueOf(form, "description"),
        path: valueOf(form, "path").trim(),
        variant: isMain ? valueOf(form, "variant") : model.variant,
        prediction_type: isMain ? orNull("prediction_type") : (model.prediction_type ?? null),
        config: isCheckpoint ? orNull("config") : (model.config ?? null),
        vae: isMain ? orNull("vae") : (model.vae ?? null),
      };
      const saved = await api.patch(modelPath(model), body);
      notify(`Saved ${saved.model_name}.`);
      await loadModels();
    },
  });
}

function convert(model) {
  formDialog({
    title: `Convert ${model.model_name}`,
    fields: [
      h("p", {}, "Writes a diffusers copy of this checkpoint, which then replaces the checkpoint in the list. The checkpoint file itself is kept."),
      labelled(
        "Destination folder (optional)",
        text("dest", "", { placeholder: `models/${model.base_model}/${model.model_type}/` }),
        "An existing folder on the server; leave empty for the server's models folder.",
      ),
    ],
    submitLabel: "Convert",
    submit: async (form) => {
      const dest = valueOf(form, "dest").trim();
      const converted = await api.put(`/models/convert/${modelPath(model).slice("/models/".length)}`, undefined, {
        query: { convert_dest_directory: dest || undefined },
      });
      notify(`Converted ${model.model_name}: now ${converted.model_format} at ${converted.path}.`);
      await loadModels();
    },
  });
}

async function remove(model) {
  const checkbox = h("input", { type: "checkbox", id: "delete-files" });
  const extra = h(
    "div",
    { class: "checkbox-field" },
    checkbox,
    h("label", { for: "delete-files" }, "Also delete its files (only files inside the models folder are ever deleted)"),
  );
  const ok = await confirmDialog({
    title: `Delete ${model.model_name}?`,
    message: "The model leaves the list and models.yaml.",
    confirmLabel: "Delete",
    danger: true,
    extra,
  });
  if (!ok) return;
  try {
    await api.delete(modelPath(model), { query: { delete_files: checkbox.checked } });
    notify(`Deleted ${model.model_name}.`);
    await loadModels();
  } catch (error) {
    notify(`Could not delete ${model.model_name}: ${errorText(error)}`, { kind: "error" });
  }
}

function merge() {
  const mains = store.models.filter((model) => model.model_type === "main" && !model.error);
  const bases = Object.keys(BASES).filter((base) => mains.filter((model) => model.base_model === base).length >= 2);
  if (!bases.length) {
    notify("Merging needs at least two usable main models of the same base.", { kind: "warning" });
    return;
  }
  const baseSelect = select("base", bases.map((b) => [b, BASES[b]]), bases[0]);
  const pick = [select("model_1", []), select("model_2", []), select("model_3", [])];
  const interp = select("interp", INTERPOLATIONS, "weighted_sum");
  const alpha = h("input", { type: "range", name: "alpha", min: 0, max: 1, step: 0.05, value: "0.5" });
  const alphaOut = h("output", { for: "merge-alpha" }, "0.50");
  alpha.addEventListener("input", () => {
    alphaOut.textContent = Number(alpha.value).toFixed(2);
  });
  const fillModels = () => {
    const names = mains.filter((model) => model.base_model === baseSelect.value).map((model) => model.model_name);
    pick.forEach((el, i) => {
      const options = i === 2 ? [["", "None"], ...names] : names;
      el.replaceChildren(...options.map((o) => (Array.isArray(o) ? h("option", { value: o[0] }, o[1]) : h("option", { value: o }, o))));
      el.value = i === 2 ? "" : (names[i] ?? "");
    });
  };
  baseSelect.addEventListener("change", fillModels);
  fillModels();
  const force = h("input", { type: "checkbox", name: "force", id: "merge-force" });
  formDialog({
    title: "Merge models",
    fields: [
      labelled("Base", baseSelect),
      labelled("First model", pick[0]),
      labelled("Second model", pick[1]),
      labelled("Third model (add_difference only)", pick[2]),
      labelled("Algorithm", interp),
      h("div", { class: "field" }, h("label", { for: "merge-alpha" }, "Alpha ", alphaOut), Object.assign(alpha, { id: "merge-alpha" })),
      labelled("Name of the merged model", text("name", "", { placeholder: "first+second" })),
      labelled(
        "Destination folder (optional)",
        text("dest", ""),
        "An existing folder on the server; leave empty for the server's models folder.",
      ),
      h("div", { class: "checkbox-field" }, force, h("label", { for: "merge-force" }, "Merge even if the models look incompatible")),
    ],
    submitLabel: "Merge",
    submit: async (form) => {
      const names = pick.map((el) => el.value).filter(Boolean);
      if (new Set(names).size !== names.length) throw new Error("Pick different models.");
      if (names.length === 3 && interp.value !== "add_difference") throw new Error("Three models merge only with add_difference.");
      if (names.length === 2 && interp.value === "add_difference") throw new Error("add_difference needs a third model.");
      const body = {
        model_names: names,
        alpha: Number(alpha.value),
        interp: interp.value,
        force: force.checked,
      };
      const name = valueOf(form, "name").trim();
      const dest = valueOf(form, "dest").trim();
      if (name) body.merged_model_name = name;
      if (dest) body.merge_dest_directory = dest;
      const merged = await api.put(`/models/merge/${encodeURIComponent(baseSelect.value)}`, body);
      notify(`Merged into ${merged.model_name}.`);
      await loadModels();
    },
  });
}

// ---- sync, import, scan --------------------------------------------------------------------------------------

async function sync() {
  const button = $("#models-sync");
  button.disabled = true;
  button.textContent = "Syncing…";
  try {
    const result = await api.post("/models/sync");
    const part = (label, ids) => `${ids.length} ${label}${ids.length ? ` (${ids.join(", ")})` : ""}`;
    notify(`Sync done: ${part("added", result.added)}, ${part("removed", result.removed)}, ${part("updated", result.updated)}.`);
    await loadModels();
  } catch (error) {
    notify(`Sync failed: ${errorText(error)}`, { kind: "error" });
  } finally {
    button.disabled = false;
    button.textContent = "Sync";
  }
}

function formError(form) {
  let el = form.querySelector(".form-error");
  if (!el) {
    el = h("p", { class: "form-error", role: "alert" });
    form.querySelector(".actions").before(el);
  }
  return el;
}

async function importModel(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = formError(form);
  error.textContent = "";
  const location = form.elements.namedItem("location").value.trim();
  if (!location) {
    error.textContent = "Enter a path on the server, or a URL.";
    form.elements.namedItem("location").focus();
    return;
  }
  const body = { location };
  const prediction = form.elements.namedItem("prediction_type").value;
  if (prediction) body.prediction_type = prediction;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  button.textContent = "Importing…";
  try {
    const model = await api.post("/models/import", body);
    notify(`Imported ${model.model_name} (${BASES[model.base_model] ?? model.base_model}, ${model.model_type}).`);
    form.elements.namedItem("location").value = "";
    await loadModels();
  } catch (problem) {
    error.textContent = errorText(problem);
  } finally {
    button.disabled = false;
    button.textContent = "Import";
  }
}

function isRegistered(path) {
  return store.models.some((model) => model.path === path || path.endsWith(`/${model.path}`));
}

async function addFound(path, li) {
  const button = li.querySelector("button");
  const note = li.querySelector(".search-note");
  button.disabled = true;
  button.textContent = "Adding…";
  try {
    const model = await api.post("/models/import", { location: path });
    button.textContent = "Added";
    note.textContent = `${model.model_name} (${model.base_model}, ${model.model_type})`;
    return true;
  } catch (error) {
    if (error.status === 409) {
      button.textContent = "Added";
      note.textContent = "Already in the list.";
      return true;
    }
    button.disabled = false;
    button.textContent = "Add";
    note.textContent = errorText(error);
    note.classList.add("form-error");
    return false;
  }
}

async function scan(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const status = $("#search-status");
  const results = $("#search-results");
  const addAll = $("#search-add-all");
  const path = form.elements.namedItem("search_path").value.trim();
  results.replaceChildren();
  addAll.hidden = true;
  if (!path) {
    status.textContent = "Enter a folder on the server, as an absolute path.";
    return;
  }
  status.textContent = "Scanning…";
  try {
    const found = await api.get("/models/search", { query: { search_path: path } });
    status.textContent = found.length ? `${found.length} model${found.length === 1 ? "" : "s"} found.` : "No model files in that folder.";
    for (const item of found) {
      const added = isRegistered(item);
      const li = h(
        "li",
        { dataset: { path: item } },
        h("code", {}, item),
        h("span", { class: "search-note muted" }, added ? "Already in the list." : ""),
        h("button", { type: "button", class: "small", disabled: added, "aria-label": `Add ${item}` }, added ? "Added" : "Add"),
      );
      li.querySelector("button").addEventListener("click", async () => {
        await addFound(item, li);
        await loadModels();
      });
      results.append(li);
    }
    addAll.hidden = !found.some((item) => !isRegistered(item));
  } catch (error) {
    status.textContent = errorText(error);
  }
}

async function addAllFound() {
  const button = $("#search-add-all");
  button.disabled = true;
  let added = 0;
  const pending = [...$("#search-results").children].filter((li) => !li.querySelector("button").disabled);
  for (const li of pending) {
    if (await addFound(li.dataset.path, li)) added += 1;
  }
  $("#search-status").textContent = `Added ${added} of ${pending.length}.`;
  button.disabled = false;
  button.hidden = true;
  await loadModels();
}

// ---- wiring ---------------------------------------------------------------------------------------------------

export function initModels() {
  $("#models-sync").addEventListener("click", sync);
  $("#models-merge-open").addEventListener("click", merge);
  $("#import-form").addEventListener("submit", importModel);
  $("#search-form").addEventListener("submit", scan);
  $("#search-add-all").addEventListener("click", addAllFound);
  $("#models-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const model = store.models.find((m) => keyOf(m) === button.closest("[data-key]").dataset.key);
    if (!model) return;
    if (button.dataset.action === "edit") edit(model);
    else if (button.dataset.action === "convert") convert(model);
    else if (button.dataset.action === "delete") remove(model);
  });
  const yamlError = store.config?.models_yaml_error;
  if (yamlError) {
    const box = $("#models-yaml-error");
    box.textContent = `models.yaml could not be read, so it is left untouched until it is fixed: ${yamlError}`;
    box.hidden = false;
  }
  bus.on("models_changed", () => loadModels());
  bus.on("ready", () => loadModels());
}

// One control per literal input, chosen from the catalogue's description of it: a select for choices, a
// checkbox, a number (with a slider beside it when the range is small), a textarea for prompts, a model
// picker filtered by model type and base, an image picker (gallery or upload), a board picker, and JSON for
// anything else. Each control carries `data-field="<input name>"` (the contract's test hook).
//
// A control reports every keystroke with ctx.onInput(value) (the document follows at once, so Run always
// sends what is on screen) and a finished change with ctx.onCommit(value) (one undo step). `undefined`
// means "not given": the server's default applies.

import { withToken } from "../api.js";
import { h } from "../dom.js";
import { modelFilter } from "./catalogue.js";

let counter = 0;
const nextId = () => `wf-field-${++counter}`;

export const modelKey = (m) => `${m.base_model}/${m.model_type}/${m.model_name}`;

/** Which kind of control an input gets. */
export function widgetKind(spec) {
  if (spec.choices?.length) return "select";
  switch (spec.type) {
    case "boolean":
      return "checkbox";
    case "integer":
    case "float":
      return "number";
    case "string":
      return /prompt|style|text/.test(spec.name) ? "textarea" : "text";
    case "model":
      return "model";
    case "image":
      return "image";
    case "board":
      return "board";
    default:
      return "json";
  }
}

/**
 * The control for `spec` (an InputSpec) showing `value`. ctx: {nodeType, models, baseHint, boards,
 * pickImage(current) → Promise<name|null>, onInput(value), onCommit(value, {redraw})}: `redraw` when the
 * control does not show the new value itself. Returns {label, control, wide}.
 */
export function widget(spec, value, ctx) {
  const id = nextId();
  const shown = value === undefined ? spec.default : value;
  const kind = widgetKind(spec);
  const build = BUILDERS[kind];
  const control = build(spec, shown, ctx, id);
  const label = h("label", { for: id, title: spec.description ?? null, class: spec.required ? "wf-required" : null }, spec.name);
  return { label, control, wide: kind === "textarea" || kind === "json" || kind === "image" };
}

/**
 * What `widget()` will show, as plain text in a box of the same size: a big graph is drawn with these first
 * (a form control costs the browser many times a span's style, layout and paint) and each node gets its
 * real controls a moment later, or at once when it is touched (editor.js, "light" nodes).
 */
export function preview(spec, value) {
  const shown = value === undefined ? spec.default : value;
  const kind = widgetKind(spec);
  let text;
  if (shown === undefined || shown === null) text = "";
  else if (kind === "checkbox") text = shown ? "✓" : "";
  else if (kind === "model") text = `${shown.model_name ?? ""} (${shown.base_model ?? ""})`;
  else if (kind === "image") text = shown.image_name ?? "";
  else if (kind === "board") text = shown.board_id ?? "";
  else if (kind === "json") text = JSON.stringify(shown);
  else text = String(shown);
  const label = h("span", { class: `wf-label${spec.required ? " wf-required" : ""}` }, spec.name);
  const box = h("span", { class: `wf-light wf-light-${kind}`, dataset: { lightField: spec.name } }, text);
  return { label, control: box, wide: kind === "textarea" || kind === "json" || kind === "image" };
}

function numberValue(spec, text) {
  if (text.trim() === "") return undefined;
  const number = Number(text);
  return Number.isFinite(number) ? number : text;
}

function stepOf(spec) {
  if (spec.type === "integer") return spec.multiple_of ?? 1;
  const range = (spec.maximum ?? 0) - (spec.minimum ?? 0);
  return range > 0 && range <= 10 ? range / 100 : "any";
}

/** A slider goes beside the number when the range is small enough to drag through. */
function hasSlider(spec) {
  if (typeof spec.minimum !== "number" || typeof spec.maximum !== "number") return false;
  const range = spec.maximum - spec.minimum;
  return spec.type === "integer" ? range <= 100 : range <= 10;
}

const BUILDERS = {
  number(spec, shown, ctx, id) {
    const attrs = {
      id,
      type: "number",
      min: spec.minimum ?? null,
      max: spec.maximum ?? null,
      step: stepOf(spec),
      inputmode: spec.type === "integer" ? "numeric" : "decimal",
      "data-field": spec.name,
      value: shown ?? "",
      placeholder: spec.required ? "required" : "",
    };
    const input = h("input", attrs);
    if (!hasSlider(spec)) {
      input.addEventListener("input", () => ctx.onInput(numberValue(spec, input.value)));
      input.addEventListener("change", () => ctx.onCommit(numberValue(spec, input.value)));
      return input;
    }
    const slider = h("input", {
      type: "range",
      min: spec.minimum,
      max: spec.maximum,
      step: stepOf(spec),
      value: shown ?? spec.minimum,
      tabindex: "-1", // the number beside it is the keyboard's way in
      "aria-label": `${spec.name} (slider)`,
    });
    input.addEventListener("input", () => {
      if (input.value !== "") slider.value = input.value;
      ctx.onInput(numberValue(spec, input.value));
    });
    input.addEventListener("change", () => ctx.onCommit(numberValue(spec, input.value)));
    slider.addEventListener("input", () => {
      input.value = slider.value;
      ctx.onInput(numberValue(spec, slider.value));
    });
    slider.addEventListener("change", () => ctx.onCommit(numberValue(spec, slider.value)));
    return h("div", { class: "wf-slider" }, slider, input);
  },

  select(spec, shown, ctx, id) {
    const choices = spec.choices;
    const options = choices.map((choice, i) => h("option", { value: String(i), selected: choice === shown }, String(choice)));
    if (shown === undefined || shown === null || !choices.includes(shown)) {
      options.unshift(h("option", { value: "", selected: true }, shown == null ? "—" : `${shown} (unknown)`));
    }
    const select = h("select", { id, "data-field": spec.name }, options);
    const read = () => (select.value === "" ? undefined : choices[Number(select.value)]);
    select.addEventListener("change", () => ctx.onCommit(read()));
    return select;
  },

  checkbox(spec, shown, ctx, id) {
    const box = h("input", { id, type: "checkbox", "data-field": spec.name, checked: Boolean(shown) });
    box.addEventListener("change", () => ctx.onCommit(box.checked));
    return box;
  },

  text(spec, shown, ctx, id) {
    const input = h("input", { id, type: "text", "data-field": spec.name, value: shown ?? "", spellcheck: "false" });
    const read = () => (input.value === "" && shown == null && spec.nullable ? undefined : input.value);
    input.addEventListener("input", () => ctx.onInput(read()));
    input.addEventListener("change", () => ctx.onCommit(read()));
    return input;
  },

  textarea(spec, shown, ctx, id) {
    const area = h("textarea", { id, rows: 3, "data-field": spec.name, class: "wf-scroll" });
    area.value = shown ?? "";
    const read = () => (area.value === "" && spec.default == null && spec.nullable ? undefined : area.value);
    area.addEventListener("input", () => ctx.onInput(read()));
    area.addEventListener("change", () => ctx.onCommit(read()));
    return area;
  },

  model(spec, shown, ctx, id) {
    const filter = modelFilter(ctx.nodeType, spec.name);
    const bases = filter.bases ?? (filter.model_type === "main" ? null : ctx.baseHint ? [ctx.baseHint] : null);
    const fits = (m) => m.model_type === filter.model_type && (!bases || bases.includes(m.base_model));
    const models = ctx.models.filter(fits).sort((a, b) => a.model_name.localeCompare(b.model_name));
    const current = shown && typeof shown === "object" ? modelKey(shown) : "";
    const options = models.map((m) =>
      h(
        "option",
        { value: modelKey(m), selected: modelKey(m) === current, disabled: Boolean(m.error) },
        `${m.model_name} (${m.base_model})${m.error ? " — unusable" : ""}`,
      ),
    );
    if (current && !models.some((m) => modelKey(m) === current)) {
      options.unshift(h("option", { value: current, selected: true }, `${shown.model_name} (${shown.base_model}) — not installed`));
    }
    if (!current) options.unshift(h("option", { value: "", selected: true }, models.length ? "Choose a model" : `No ${filter.model_type} models`));
    const select = h("select", { id, "data-field": spec.name }, options);
    select.addEventListener("change", () => {
      if (!select.value) return ctx.onCommit(undefined);
      const [base_model, model_type, ...name] = select.value.split("/");
      ctx.onCommit({ model_name: name.join("/"), base_model, model_type });
    });
    return select;
  },

  image(spec, shown, ctx, id) {
    const name = shown && typeof shown === "object" ? shown.image_name : null;
    const face = name
      ? [h("img", { src: withToken(`/api/v1/images/${encodeURIComponent(name)}/thumbnail`), alt: "", loading: "lazy" }), h("span", {}, name.slice(0, 8))]
      : [h("span", {}, "Choose an image…")];
    const button = h("button", { id, type: "button", class: "wf-image-pick", "data-field": spec.name, title: name ?? "" }, face);
    button.addEventListener("click", async () => {
      const picked = await ctx.pickImage(name);
      // The button does not show the new image by itself: the node is redrawn.
      if (picked) ctx.onCommit({ image_name: picked }, { redraw: true });
    });
    if (!name || spec.required) return button;
    const clear = h("button", { type: "button", class: "icon-button small", "aria-label": `Clear ${spec.name}` }, "✕");
    clear.addEventListener("click", () => ctx.onCommit(undefined, { redraw: true }));
    return h("div", { class: "wf-image-field" }, button, clear);
  },

  board(spec, shown, ctx, id) {
    const current = shown && typeof shown === "object" ? shown.board_id : "";
    const options = [h("option", { value: "" }, "No board")];
    for (const board of ctx.boards ?? []) {
      options.push(h("option", { value: board.board_id, selected: board.board_id === current }, board.board_name));
    }
    if (current && !(ctx.boards ?? []).some((b) => b.board_id === current)) {
      options.push(h("option", { value: current, selected: true }, `${current.slice(0, 8)} (unknown board)`));
    }
    const select = h("select", { id, "data-field": spec.name }, options);
    select.addEventListener("change", () => ctx.onCommit(select.value ? { board_id: select.value } : undefined));
    return select;
  },

  json(spec, shown, ctx, id) {
    const area = h("textarea", { id, rows: 2, "data-field": spec.name, class: "wf-json wf-scroll", spellcheck: "false", placeholder: "JSON" });
    area.value = shown === undefined || shown === null ? "" : JSON.stringify(shown);
    const read = () => {
      if (area.value.trim() === "") return { ok: true, value: undefined };
      try {
        return { ok: true, value: JSON.parse(area.value) };
      } catch {
        return { ok: false };
      }
    };
    area.addEventListener("input", () => {
      const parsed = read();
      area.setAttribute("aria-invalid", String(!parsed.ok));
      if (parsed.ok) ctx.onInput(parsed.value);
    });
    area.addEventListener("change", () => {
      const parsed = read();
      if (parsed.ok) ctx.onCommit(parsed.value);
    });
    return area;
  },
};

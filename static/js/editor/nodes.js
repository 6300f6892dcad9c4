// One element per node: a header to drag it by, its outputs and inputs with typed connectors (buttons, so
// they can be reached with the keyboard), a control per literal input, and what a run or a validation says
// about it (data-state, messages, the step bar and preview, the images it made).
//
// A node's element is rebuilt only when what it shows changes (its values after an undo, its wiring, the
// model list); moving it only changes its transform.

import { withToken } from "../api.js";
import { h } from "../dom.js";
import { overlaps } from "./layout.js";
import { rectOf } from "./placement.js";
import { preview, widget, widgetKind } from "./widgets.js";

// Rarely changed: folded into "Options", built only when opened (fewer controls to lay out in a big graph),
// unless one of them is wired or set to something other than its default.
const OPTIONS = new Set(["is_intermediate", "board", "use_cache"]);

function isDefault(input, value) {
  return value === undefined || value === null || JSON.stringify(value) === JSON.stringify(input.default);
}

const UPGRADE_BUDGET_MS = 8;

export function emptyStatus() {
  return { state: "idle", messages: [], fieldErrors: new Map(), progress: null, images: [] };
}

export class NodeView {
  /** light: draw values as text first (see widgets.preview); `upgrade()` puts the real controls in. */
  constructor(editor, node, { light = false } = {}) {
    this.editor = editor;
    this.id = node.id;
    this.light = light;
    this.element = h("div", {
      class: "wf-node",
      tabindex: "0",
      role: "group",
      dataset: { nodeId: node.id, nodeType: node.type, state: "idle" },
    });
    this.ports = new Map(); // "in:<field>" / "out:<field>" → connector button
    this.rows = new Map(); // input name → its row
    this.offsets = null; // connector centres relative to the node's corner, in canvas units
    this.size = { width: 240, height: 120 };
    this.signature = null;
    this.status = emptyStatus();
    this.render(node);
  }

  /** Bring the element up to date with `node`; true when it was rebuilt. */
  render(node) {
    this.place(node.x, node.y);
    const signature = this.editor.signatureOf(node);
    if (signature === this.signature) return false;
    this.signature = signature;
    this.build(node);
    return true;
  }

  /** Swap the text previews for the real controls. */
  upgrade(node) {
    if (!this.light) return false;
    this.light = false;
    this.build(node);
    return true;
  }

  /** Accept the node as it is now without rebuilding (a control changed it: the control already shows it). */
  accept(node) {
    this.signature = this.editor.signatureOf(node);
  }

  place(x, y) {
    this.element.style.transform = `translate(${x}px, ${y}px)`;
  }

  build(node) {
    const { doc, catalogue } = this.editor;
    const spec = catalogue.spec(node.type, doc.usage(node.id));
    this.spec = spec;
    this.ports.clear();
    this.rows.clear();
    this.offsets = null;
    const wired = new Map();
    for (const edge of doc.edgesInto(node.id)) {
      if (!wired.has(edge.destination.field)) wired.set(edge.destination.field, []);
      wired.get(edge.destination.field).push(edge);
    }
    const label = `${spec.title} “${node.id}”`;
    this.element.setAttribute("aria-label", label);
    this.element.dataset.nodeType = node.type;
    this.element.classList.toggle("wf-unknown", !spec.known);
    this.element.classList.toggle("wf-is-light", this.light);
    this.element.dataset.category = spec.category ?? "";

    const head = h(
      "div",
      { class: "wf-node-head", title: spec.description || null },
      h("span", { class: "wf-node-title" }, spec.title),
      h("span", { class: "wf-node-id" }, node.id),
      h("button", { type: "button", class: "icon-button wf-node-delete", "data-action": "delete-node", "aria-label": `Delete ${label}` }, "✕"),
    );
    const body = h("div", { class: "wf-node-body" });
    if (!spec.known) body.append(h("p", { class: "wf-unknown-note" }, `Unknown node type “${node.type}”.`));
    for (const output of spec.outputs) body.append(this.#outputRow(node, output));
    const folded = [];
    for (const input of spec.inputs) {
      const edges = wired.get(input.name) ?? [];
      if (OPTIONS.has(input.name) && !edges.length && isDefault(input, node.values[input.name])) folded.push(input);
      else body.append(this.#inputRow(node, input, edges));
    }
    if (folded.length) body.append(this.#options(node, folded));
    // Values and edges for inputs the type does not have (a graph from elsewhere): shown, so nothing is
    // hidden and the edge has somewhere to end; validation names them.
    const strays = new Set([...Object.keys(node.values), ...wired.keys()].filter((name) => !spec.inputByName.has(name)));
    for (const name of strays) body.append(this.#strayRow(node, name, wired.get(name) ?? []));
    this.statusBox = h("div", { class: "wf-node-status" });
    this.element.replaceChildren(head, body, this.statusBox);
    this.applyStatus();
  }

  /** The folded inputs: a <details> whose rows are made the first time it opens. */
  #options(node, inputs) {
    const rows = h("div", { class: "wf-more-rows" });
    const summary = h("summary", {}, `Options (${inputs.map((i) => i.name).join(", ")})`);
    const more = h("details", { class: "wf-more", open: this.optionsOpen ?? false }, summary, rows);
    const fill = () => {
      if (rows.childElementCount || !more.open) return;
      rows.append(...inputs.map((input) => this.#inputRow(node, input, [])));
    };
    more.addEventListener("toggle", () => {
      this.optionsOpen = more.open;
      fill();
      if (this.measure()) this.editor.edges.redrawNodes([this.id]);
    });
    fill();
    return more;
  }

  /** A connector: a focusable span acting as a button (Enter or Space starts or ends a connection, Delete
   * disconnects an input). Not a <button>: hundreds of form controls cost a big graph its first frame. */
  #port(kind, name, type, extra = {}) {
    const attrs = {
      role: "button",
      tabindex: "0",
      class: `wf-port wf-port-${kind}`,
      "data-type": type,
      title: `${name}: ${type}`,
      ...extra,
    };
    attrs[kind === "in" ? "data-input" : "data-output"] = name;
    const port = h("span", attrs);
    this.ports.set(`${kind}:${name}`, port);
    return port;
  }

  #outputRow(node, output) {
    return h(
      "div",
      { class: "wf-row wf-out", dataset: { rowOutput: output.name }, title: `${output.name}: ${output.type}` },
      h("span", { class: "wf-out-label" }, output.name),
      this.#port("out", output.name, output.type, { "aria-label": `Output ${output.name} of ${node.id} (${output.type})` }),
    );
  }

  #inputRow(node, input, edges) {
    const row = h("div", { class: "wf-row wf-in", dataset: { rowInput: input.name } });
    this.rows.set(input.name, row);
    const wiredText = edges.map((e) => `${e.source.node_id}.${e.source.field}`).join(", ");
    if (input.input !== "direct") {
      const described = wiredText ? `, connected to ${wiredText} (Delete disconnects)` : "";
      row.append(this.#port("in", input.name, input.type, { "aria-label": `Input ${input.name} of ${node.id} (${input.type})${described}` }));
    }
    if (edges.length) {
      row.classList.add("wired");
      // Disconnect: drag the edge off the connector, or focus the connector and press Delete.
      row.append(h("span", { class: "wf-in-label" }, input.name), h("span", { class: "wf-wired", title: wiredText }, `← ${wiredText}`));
      return row;
    }
    if (input.input === "connection") {
      row.append(
        h("span", { class: `wf-in-label${input.required ? " wf-required" : ""}` }, input.name),
        h("small", { class: "wf-in-type" }, input.type),
      );
      return row;
    }
    const made = this.light
      ? preview(input, node.values[input.name])
      : widget(input, node.values[input.name], this.editor.widgetContext(node, input));
    row.classList.add(made.wide ? "wf-wide" : "wf-inline", `wf-kind-${widgetKind(input)}`);
    row.append(made.label, made.control);
    return row;
  }

  #strayRow(node, name, edges) {
    const row = h(
      "div",
      { class: "wf-row wf-in wf-stray wf-wide", dataset: { rowInput: name } },
      edges.length ? this.#port("in", name, "any", { "aria-label": `Input ${name} of ${node.id}, unknown to its type` }) : null,
      h("span", { class: "wf-in-label" }, name),
      name in node.values ? h("code", { class: "wf-stray-value" }, JSON.stringify(node.values[name])) : null,
    );
    this.rows.set(name, row);
    return row;
  }

  // ---- geometry --------------------------------------------------------------------------------------

  /** Re-read connector positions and the node's size (after a rebuild, a resize, the page being shown). */
  measure() {
    const base = this.element.getBoundingClientRect();
    if (!base.width) return false; // not on screen (the page is hidden): measure when it is
    const k = this.editor.view.k;
    this.offsets = new Map();
    for (const [key, port] of this.ports) {
      const r = port.getBoundingClientRect();
      this.offsets.set(key, { x: (r.left + r.width / 2 - base.left) / k, y: (r.top + r.height / 2 - base.top) / k });
    }
    this.size = { width: this.element.offsetWidth, height: this.element.offsetHeight };
    return true;
  }

  /** Where a connector is, relative to the node's corner; a fallback on the node's edge before measuring. */
  portOffset(kind, field) {
    if (!this.offsets) this.measure();
    return this.offsets?.get(`${kind}:${field}`) ?? { x: kind === "in" ? 0 : this.size.width, y: 16 };
  }

  // ---- run and validation status ---------------------------------------------------------------------

  applyStatus() {
    const status = this.status;
    this.element.dataset.state = status.state;
    for (const old of this.element.querySelectorAll(".wf-field-error")) old.remove();
    for (const row of this.rows.values()) row.querySelector("[data-field]")?.removeAttribute("aria-invalid");
    const general = [...status.messages];
    for (const [field, messages] of status.fieldErrors) {
      const row = this.rows.get(field);
      if (!row) {
        general.push(...messages.map((m) => `${field}: ${m}`));
        continue;
      }
      row.querySelector("[data-field]")?.setAttribute("aria-invalid", "true");
      for (const message of messages) row.after(h("p", { class: "wf-field-error", "data-error": field, role: "alert" }, message));
    }
    const parts = [];
    if (status.progress) {
      const { step, total, image } = status.progress;
      parts.push(
        h(
          "div",
          { class: "wf-progress" },
          h("progress", { max: total, value: step, "aria-label": `Step ${step} of ${total}` }),
          h("span", { class: "wf-progress-text" }, `${step}/${total}`),
        ),
      );
      if (image) parts.push(h("img", { class: "wf-preview", src: image, alt: `Preview at step ${step}` }));
    }
    if (status.images.length) {
      const name = status.images.at(-1);
      parts.push(
        h(
          "button",
          {
            type: "button",
            class: "wf-result-button",
            "data-action": "open-image",
            dataset: { imageName: name },
            "aria-label": "Open the image this node made",
          },
          h("img", { class: "wf-result", src: withToken(`/api/v1/images/${encodeURIComponent(name)}/thumbnail`), alt: "", dataset: { imageName: name } }),
          status.images.length > 1 ? h("span", { class: "tag" }, `${status.images.length} images`) : null,
        ),
      );
    }
    if (general.length) {
      parts.push(h("ul", { class: "wf-messages" }, general.map((message) => h("li", { "data-error": "", role: "alert" }, message))));
    }
    this.statusBox.replaceChildren(...parts);
  }

  setStatus(changes) {
    Object.assign(this.status, changes);
    this.applyStatus();
  }
}

/** Put the real controls into the editor's light nodes, those on screen first, a few milliseconds at a time
 * when the page is idle (so input and drawing go first). */
export function upgradeLightNodes(editor) {
  if (editor.upgrading) return;
  editor.upgrading = true;
  const later = (fn) => requestIdleCallback(fn, { timeout: 100 });
  const slice = () => {
    const visible = editor.view.visibleRect();
    const onScreen = (view) => overlaps(rectOf(editor, view.id), visible);
    const waiting = [...editor.views.values()].filter((view) => view.light).sort((a, b) => onScreen(b) - onScreen(a));
    const start = performance.now();
    const done = [];
    for (const view of waiting) {
      if (done.length && performance.now() - start > UPGRADE_BUDGET_MS) break;
      view.upgrade(editor.doc.node(view.id));
      done.push(view);
    }
    for (const view of done) view.measure();
    if (done.length) editor.edges.redrawNodes(done.map((view) => view.id));
    if (waiting.length > done.length) later(slice);
    else editor.upgrading = false;
  };
  later(slice);
}

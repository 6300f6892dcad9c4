// The Workflow page: the editor that ties the parts together. It owns the document, one NodeView per node
// and the edge layer, turns the parts' requests into edits (each one undoable), and keeps the page in step:
// the toolbar, the status line, the draft kept in this browser, the library's "current" workflow.
//
// Parts: view.js (pan, zoom, box select), nodes.js + widgets.js (node elements and their controls),
// edges.js + rules.js (drawing and making edges), selection.js (select, move, clipboard), history.js,
// layout.js + placement.js (where nodes go), menu.js (add a node), run.js, problems.js (422s on the nodes),
// library.js, files.js, draft.js, pickers.js, input.js + keys.js (pointer and keyboard).

import { api } from "../api.js";
import { $, errorText } from "../dom.js";
import { bus, store } from "../state.js";
import { Catalogue } from "./catalogue.js";
import { Connector, EdgeLayer } from "./edges.js";
import { restoreDraft, saveDraft } from "./draft.js";
import { downloadJson, fileNameFor, readGraphFile } from "./files.js";
import { edgeKey, GraphDoc } from "./graphdoc.js";
import { History } from "./history.js";
import { wireCanvas, wireFileDrop } from "./input.js";
import { Library } from "./library.js";
import { NodeMenu } from "./menu.js";
import { NodeView, upgradeLightNodes } from "./nodes.js";
import { pickImage } from "./pickers.js";
import { clearProblems, showProblems } from "./problems.js";
import { bounds, freeSpot, layOut, nextSpot, placeUnplaced, rectOf, reveal } from "./placement.js";
import { Runner } from "./run.js";
import { NodeMover, Selection } from "./selection.js";
import { View } from "./view.js";

// A refresh that makes this many nodes at once draws them "light" (values as text) and puts their controls
// in afterwards, so a big graph shows at once (bench/editor.py).
const LIGHT_FROM = 16;

class Editor {
  constructor() {
    this.page = $("#page-workflow");
    this.canvas = $("#wf-canvas");
    this.world = $("#wf-world");
    this.nodeLayer = $("#wf-nodes");
    this.doc = new GraphDoc();
    this.views = new Map();
    this.catalogue = new Catalogue([]);
    this.workflow = null; // the library entry this document is, {id, name, description}, or null
    this.savedSnapshot = null; // the document as last saved to (or loaded from) the library
    this.invalidEdges = new Set();
    this.modelsVersion = 0;
    this.boards = [];
    this.lastAdded = null;
    this.pointer = null; // the last pointer position over the canvas (for paste)
    this.ready = false;
    this.view = new View(this.canvas, this.world, $("#wf-marquee"), {
      onBackgroundClick: () => {
        this.connector.cancelPending();
        this.selection.clear();
      },
      onDoubleClick: (at, event) => this.openMenu({ at, client: { x: event.clientX, y: event.clientY } }),
      onMarquee: (rect, additive, done) => {
        if (!this.marqueeOn) {
          this.selection.beginBox();
          this.marqueeOn = true;
        }
        this.selection.box(rect, additive);
        if (done) this.marqueeOn = false;
      },
      onChange: () => {
        $("#wf-zoom").textContent = `${Math.round(this.view.k * 100)} %`;
        this.saveDraftSoon();
      },
    });
    this.edges = new EdgeLayer(this, $("#wf-edges"));
    this.connector = new Connector(this);
    this.selection = new Selection(this);
    this.mover = new NodeMover(this);
    this.menu = new NodeMenu(this.canvas);
    this.history = new History(this.doc.snapshot());
    this.runner = new Runner(this);
    this.library = new Library(this);
    // A node that changes size (a field grows, a thumbnail arrives, the page is shown) moves its connectors.
    this.resizes = new ResizeObserver((entries) => {
      const ids = [];
      for (const entry of entries) {
        const id = entry.target.dataset.nodeId;
        const view = this.views.get(id);
        if (view?.element !== entry.target) continue;
        // Every node is reported once when first observed, already measured: nothing to redo then.
        const box = entry.borderBoxSize?.[0];
        const same = box && view.offsets && Math.abs(box.inlineSize - view.size.width) < 1 && Math.abs(box.blockSize - view.size.height) < 1;
        if (!same && view.measure()) ids.push(id);
      }
      if (ids.length) this.edges.redrawNodes(ids);
    });
    this.#wire();
  }

  // ---- start-up ------------------------------------------------------------------------------------------

  async start() {
    try {
      this.catalogue = await Catalogue.load();
    } catch (error) {
      this.say(`Could not load the node types: ${errorText(error)}. Reload the page to try again.`, "error");
      return;
    }
    restoreDraft(this);
    this.ready = true;
    for (const request of this.queued ?? []) request();
    this.queued = null;
    this.library.refresh();
    this.#loadBoards();
  }

  /** Run `fn` once the catalogue is loaded and the page is on screen (sizes can be measured then). */
  whenReady(fn) {
    const visible = () => !this.page.hidden;
    const go = () => (visible() ? fn() : this.#onceShown(fn));
    if (this.ready) go();
    else (this.queued ??= []).push(go);
  }

  #onceShown(fn) {
    const off = bus.on("page-shown", (page) => {
      if (page !== "workflow") return;
      off();
      fn();
    });
  }

  async #loadBoards() {
    try {
      this.boards = await api.get("/boards/", { query: { all: true } });
      this.refresh();
    } catch (error) {
      console.warn("could not load the boards", error);
    }
  }

  // ---- drawing the document ------------------------------------------------------------------------------

  /** What a node's element shows; it is rebuilt when this changes. */
  signatureOf(node) {
    const spec = this.catalogue.spec(node.type, this.doc.usage(node.id));
    const wired = this.doc.edgesInto(node.id).map(edgeKey);
    const usesModels = spec.inputs.some((input) => input.type === "model");
    const usesBoards = spec.inputs.some((input) => input.type === "board");
    return JSON.stringify([
      node.type,
      spec.known,
      node.values,
      wired,
      usesModels ? [this.modelsVersion, this.baseHint()] : 0,
      usesBoards ? this.boards.length : 0,
    ]);
  }

  /** The base model of the graph's main model, so pickers for LoRAs, VAEs... offer the ones that fit. */
  baseHint() {
    for (const node of this.doc.nodes.values()) {
      const model = node.values.model;
      if (node.type.endsWith("model_loader") && model?.base_model) return model.base_model;
    }
    return null;
  }

  widgetContext(node, input) {
    return {
      nodeType: node.type,
      models: store.models,
      baseHint: this.baseHint(),
      boards: this.boards,
      pickImage: (current) => pickImage(current),
      onInput: (value) => this.setValue(node.id, input.name, value, false),
      onCommit: (value, { redraw = false } = {}) => this.setValue(node.id, input.name, value, true, redraw),
    };
  }

  /** Make the elements match the document: nodes added, removed, rebuilt or moved; every edge redrawn. */
  refresh() {
    for (const [id, view] of this.views) {
      if (!this.doc.node(id)) {
        this.resizes.unobserve(view.element);
        view.element.remove();
        this.views.delete(id);
      }
    }
    const rebuilt = [];
    let fresh = 0;
    for (const id of this.doc.nodes.keys()) if (!this.views.has(id)) fresh += 1;
    const light = fresh >= LIGHT_FROM;
    const added = document.createDocumentFragment();
    for (const node of this.doc.nodes.values()) {
      let view = this.views.get(node.id);
      if (!view) {
        view = new NodeView(this, node, { light });
        this.views.set(node.id, view);
        added.append(view.element);
        this.resizes.observe(view.element);
        rebuilt.push(view);
      } else if (view.render(node)) {
        rebuilt.push(view);
      }
    }
    this.nodeLayer.append(added);
    // Read every rebuilt node's connectors in one pass, after all of them are in place (one layout).
    for (const view of rebuilt) view.measure();
    this.selection.prune();
    this.edges.sync();
    this.selection.apply();
    this.page.classList.toggle("wf-is-empty", this.doc.nodes.size === 0);
    if (light) upgradeLightNodes(this);
  }

  /** A light node someone reaches for gets its controls now; true if it had to. */
  upgradeNow(id) {
    const view = this.views.get(id);
    if (!view?.light) return false;
    view.upgrade(this.doc.node(id));
    if (view.measure()) this.edges.redrawNodes([id]);
    return true;
  }

  // ---- edits ---------------------------------------------------------------------------------------------

  /** Record the document as it is now as one undoable edit. */
  commit(label) {
    if (!this.history.commit(this.doc.snapshot(), label)) return false;
    this.saveDraftSoon();
    this.updateToolbar();
    return true;
  }

  setValue(nodeId, field, value, commit, redraw = false) {
    const node = this.doc.node(nodeId);
    if (!node) return;
    if (value === undefined) delete node.values[field];
    else node.values[field] = value;
    const view = this.views.get(nodeId);
    if (view.status.fieldErrors.delete(field)) {
      if (!view.status.fieldErrors.size && !view.status.messages.length && view.status.state === "invalid") view.status.state = "idle";
      view.applyStatus();
    }
    if (!redraw) view.accept(node); // the control already shows it: no rebuild under the person's cursor
    if (commit) {
      // A value can change what other nodes show (a main model's base filters the LoRA pickers).
      this.refresh();
      this.commit(`Change ${nodeId}.${field}`);
    }
  }

  /** Add a node of `type` with its top-left at `at` (or beside the last one added); returns its id. */
  addNode(type, at = null, { label } = {}) {
    const spec = this.catalogue.spec(type);
    const spot = at ?? nextSpot(this);
    const free = freeSpot(this, spot.x, spot.y);
    const node = this.doc.addNode({ type, x: free.x, y: free.y });
    this.lastAdded = node.id;
    this.refresh();
    this.selection.set([node.id]);
    if (!at) reveal(this, node.id); // a node put where the person pointed is already in view
    if (label !== false) {
      this.commit(label ?? `Add ${spec.title}`);
      this.say(`Added ${spec.title} “${node.id}”.`);
    }
    return node.id;
  }

  deleteSelection() {
    const { nodes, edge } = this.selection;
    if (nodes.size) {
      const ids = [...nodes];
      this.doc.removeNodes(ids);
      this.refresh();
      this.commit(ids.length === 1 ? `Delete ${ids[0]}` : `Delete ${ids.length} nodes`);
      this.say(`Deleted ${ids.length === 1 ? `“${ids[0]}”` : `${ids.length} nodes`}. Ctrl+Z brings ${ids.length === 1 ? "it" : "them"} back.`);
    } else if (edge) {
      this.doc.disconnect([edge]);
      this.refresh();
      this.commit("Disconnect");
      this.say(`Disconnected ${edge}.`);
    }
  }

  deleteNode(id) {
    this.selection.set([id]);
    this.deleteSelection();
  }

  disconnectInput(nodeId, field) {
    const keys = this.doc.edgesInto(nodeId, field).map(edgeKey);
    if (!keys.length) return;
    this.doc.disconnect(keys);
    this.refresh();
    this.commit("Disconnect");
    this.say(`Disconnected ${keys.join(", ")}.`);
    this.views.get(nodeId)?.rows.get(field)?.querySelector(".wf-port, [data-field]")?.focus();
  }

  #restoreSnapshot(entry, verb) {
    this.doc.restore(entry.snapshot);
    this.refresh();
    this.saveDraftSoon();
    this.updateToolbar();
    this.say(`${verb}: ${entry.label}.`);
  }

  undo() {
    this.commit("Edit"); // a field being typed in is an edit of its own
    const entry = this.history.undo();
    if (entry) this.#restoreSnapshot(entry, "Undone");
  }

  redo() {
    const entry = this.history.redo();
    if (entry) this.#restoreSnapshot(entry, "Redone");
  }

  // ---- the add-node menu ---------------------------------------------------------------------------------

  openMenu({ at = null, client = null } = {}) {
    const where = client ?? this.#screenCentre();
    const point = at ?? this.view.toWorld(where.x, where.y);
    this.menu.open({
      specs: this.catalogue.all(),
      client: where,
      onPick: (type) => {
        this.addNode(type, at ? point : null);
        this.views.get(this.lastAdded)?.element.focus({ preventScroll: true });
      },
    });
  }

  #screenCentre() {
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + rect.width / 2 - 140, y: rect.top + 60 };
  }

  /** Where the pointer was last over the canvas, in canvas units (paste lands there); null if never. */
  pointerWorld() {
    return this.pointer ? this.view.toWorld(this.pointer.x, this.pointer.y) : null;
  }

  // ---- layout and view -----------------------------------------------------------------------------------

  rectOf(id) {
    return rectOf(this, id);
  }

  fit() {
    const box = bounds(this);
    if (box) this.view.fit(box);
    else this.view.setState({ x: 40, y: 40, k: 1 });
  }

  /** Lay out the whole graph, layered left to right, as one undoable edit. */
  autoLayout() {
    if (!this.doc.nodes.size) return;
    layOut(this, [...this.doc.nodes.keys()]);
    this.refresh();
    this.fit();
    this.commit("Auto-layout");
    this.say("Laid out left to right.");
  }

  // ---- opening and saving --------------------------------------------------------------------------------

  /**
   * Replace the document with `graph` (as one undoable edit). layout: {node_id: {x, y}} or null (laid out
   * here); workflow: the library entry it is ({id, name, description}) or null. Returns a sentence about what
   * could not be opened ("" when everything was), for the caller's message.
   */
  open({ graph, layout = null, workflow = null, label = "Open" }) {
    this.clearStatus();
    this.selection.clear();
    this.connector.cancelPending();
    const { unplaced, dropped } = this.doc.load(graph, layout);
    this.lastAdded = null;
    this.refresh();
    placeUnplaced(this, unplaced);
    this.refresh();
    this.fit();
    this.commit(label);
    this.workflow = workflow ? { id: workflow.id, name: workflow.name, description: workflow.description ?? "" } : null;
    this.savedSnapshot = workflow ? this.history.current : null;
    this.saveDraftSoon();
    this.updateToolbar();
    this.library.render();
    if (!dropped.length) return "";
    const many = dropped.length > 1;
    return ` ${dropped.length} edge${many ? "s" : ""} naming a node the graph does not have ${many ? "were" : "was"} left out: ${dropped.map(edgeKey).join(", ")}.`;
  }

  newWorkflow() {
    this.open({ graph: { nodes: {}, edges: [] }, label: "New workflow" });
    this.view.setState({ x: 40, y: 40, k: 1 });
    this.say("A new, empty workflow. Double-click the canvas or press N to add a node.");
  }

  /** The document was saved as (or is no longer) a library entry. */
  savedAs(workflow) {
    this.workflow = workflow ? { id: workflow.id, name: workflow.name, description: workflow.description ?? "" } : null;
    this.savedSnapshot = workflow ? this.history.current : null;
    this.saveDraftSoon();
    this.updateToolbar();
    this.library.render();
  }

  renamed(workflow) {
    this.workflow = { ...this.workflow, name: workflow.name, description: workflow.description ?? "" };
    this.saveDraftSoon();
    this.updateToolbar();
  }

  get dirty() {
    return this.workflow ? this.history.current !== this.savedSnapshot : this.doc.nodes.size > 0;
  }

  async openFile(file) {
    try {
      const found = await readGraphFile(file);
      const known = found.workflowId ? await this.#libraryEntry(found.workflowId) : null;
      const note = this.open({ graph: found.graph, layout: found.layout, label: `Open ${found.source}` });
      const from = found.name ? ` (drawn by the workflow “${found.name}”${known ? "" : ", no longer in the library"})` : "";
      this.say(`Opened the graph from ${found.source}${from}. Save it to keep it in the library.${note}`);
    } catch (error) {
      this.say(`Could not open ${file.name}: ${errorText(error)}`, "error");
    }
  }

  async #libraryEntry(id) {
    try {
      return await api.get(`/workflows/${encodeURIComponent(id)}`);
    } catch {
      return null;
    }
  }

  exportJson() {
    const name = this.workflow?.name ?? "Untitled";
    const workflow = { name, description: this.workflow?.description ?? "", graph: this.doc.toGraph(), layout: this.doc.toLayout() };
    downloadJson(workflow, fileNameFor(name));
    this.say(`Exported ${fileNameFor(name)}: a workflow (name, graph, layout) that Open or POST /api/v1/workflows/ takes back.`);
  }

  // ---- run and validation status -------------------------------------------------------------------------

  clearStatus() {
    clearProblems(this);
  }

  /** A 422's errors on the nodes and fields they name (problems.js); how many found a node. */
  showProblems(errors, prefix, edges) {
    return showProblems(this, errors, prefix, edges);
  }

  say(text, kind = "info") {
    const line = $("#wf-status");
    line.textContent = text;
    line.dataset.kind = kind;
    if (kind !== "error") $("#wf-problems").textContent = "";
  }

  moved() {
    this.saveDraftSoon();
  }

  updateToolbar() {
    const title = this.workflow?.name ?? "Untitled";
    $("#wf-name").textContent = title;
    const dirty = this.dirty;
    const mark = $("#wf-dirty");
    mark.hidden = !dirty;
    mark.title = "Unsaved changes";
    const set = (action, disabled, title) => {
      const button = this.page.querySelector(`[data-action="${action}"]`);
      if (!button) return;
      button.disabled = disabled;
      if (title !== undefined) button.title = title;
    };
    const undo = this.history.nextUndoLabel();
    const redo = this.history.nextRedoLabel();
    set("undo", !undo, undo ? `Undo ${undo} (Ctrl+Z)` : "Nothing to undo");
    set("redo", !redo, redo ? `Redo ${redo} (Ctrl+Shift+Z)` : "Nothing to redo");
    const running = this.runner?.running;
    set("invoke", Boolean(running));
    set("cancel", !running);
    set("save", false, this.workflow ? `Save over “${this.workflow.name}” (Ctrl+S)` : "Save to the library (Ctrl+S)");
    const invoke = this.page.querySelector('[data-action="invoke"]');
    if (invoke) invoke.textContent = running ? (this.runner.status === "validating" ? "Checking…" : "Running…") : "Run";
  }

  // ---- the draft kept in this browser --------------------------------------------------------------------

  saveDraftSoon() {
    if (!this.ready) return;
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => saveDraft(this), 250);
  }

  // ---- wiring --------------------------------------------------------------------------------------------

  #wire() {
    wireCanvas(this);
    wireFileDrop(this, (file) => this.ready && this.openFile(file));
    const actions = {
      new: () => this.newWorkflow(),
      "open-file": () => $("#wf-file-input").click(),
      save: () => this.library.save(),
      "save-as": () => this.library.saveAs(),
      export: () => this.exportJson(),
      "add-node": () => this.openMenu(),
      "auto-layout": () => this.autoLayout(),
      fit: () => this.fit(),
      undo: () => this.undo(),
      redo: () => this.redo(),
      invoke: () => this.runner.run(),
      cancel: () => this.runner.cancel(),
      "toggle-library": () => {
        const hidden = this.page.classList.toggle("wf-library-hidden");
        $("#wf-library-toggle").setAttribute("aria-expanded", String(!hidden));
      },
    };
    $("#wf-toolbar").addEventListener("click", (event) => {
      const button = event.target.closest("[data-action]");
      if (button && actions[button.dataset.action] && this.ready) actions[button.dataset.action]();
    });
    $("#wf-zoom").addEventListener("click", () => this.view.setZoom(1));
    const fileInput = $("#wf-file-input");
    fileInput.addEventListener("change", () => {
      const file = fileInput.files?.[0];
      if (file) this.openFile(file);
      fileInput.value = "";
    });

    bus.on("models-loaded", () => {
      this.modelsVersion += 1;
      if (this.ready) this.refresh();
    });
    bus.on("open-workflow", (request) => {
      location.hash = "#/workflow";
      this.whenReady(() => {
        const note = this.open({ graph: request.graph, layout: request.layout ?? null, label: `Open ${request.source ?? "graph"}` });
        const from = request.name ? ` (drawn by the workflow “${request.name}”)` : "";
        this.say(`Opened the graph of ${request.source ?? "a graph"}${from}. Change it and press Run, or save it to the library.${note}`);
      });
    });
    bus.on("page-shown", (page) => {
      if (page === "workflow" && this.ready) {
        this.library.refresh(); // saved meanwhile from another tab, or a script
        for (const view of this.views.values()) view.measure();
        this.edges.redraw(this.edges.items.keys());
      }
    });
  }

  async openImage(name) {
    try {
      bus.emit("open-image", await api.get(`/images/${encodeURIComponent(name)}`));
    } catch (error) {
      this.say(`Could not open the image: ${errorText(error)}`, "error");
    }
  }
}

export function initEditor() {
  const editor = new Editor();
  editor.start();
  return editor;
}

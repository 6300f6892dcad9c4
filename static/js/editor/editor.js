// The Workflow page: the editor that ties the parts together. It owns the document, one NodeView per node
// and the edge layer, turns the parts' requests into edits (each one undoable), and keeps the page in step:
// the toolbar, the status line, the draft kept in this browser, the library's "current" workflow.
//
// Parts: view.js (pan, zoom, box select), nodes.js + widgets.js (node elements and their controls),
// edges.js + rules.js (drawing and making edges), selection.js (select, move, clipboard), history.js,
// layout.js, menu.js (add a node), run.js, library.js, files.js, pickers.js, keys.js.

import { api } from "../api.js";
import { $, errorText } from "../dom.js";
import { bus, store } from "../state.js";
import { Catalogue } from "./catalogue.js";
import { Connector, EdgeLayer } from "./edges.js";
import { downloadJson, fileNameFor, readGraphFile } from "./files.js";
import { edgeKey, GraphDoc, makeEdge } from "./graphdoc.js";
import { History } from "./history.js";
import { handleKey } from "./keys.js";
import { layeredLayout, overlaps } from "./layout.js";
import { Library } from "./library.js";
import { NodeMenu } from "./menu.js";
import { emptyStatus, NodeView } from "./nodes.js";
import { pickImage } from "./pickers.js";
import { checkEdge, firstInputFor, firstOutputFor, inputSpec, outputType } from "./rules.js";
import { Runner } from "./run.js";
import { NodeMover, Selection } from "./selection.js";
import { View } from "./view.js";

const DRAFT_KEY = "imagegraph.workflow.draft";
const NODE_GAP = 60;
// A refresh that makes this many nodes at once draws them "light" (values as text) and puts their controls
// in over the next frames, so a big graph shows at once (bench/editor.py).
const LIGHT_FROM = 16;
const UPGRADE_BUDGET_MS = 8;

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
        this.#saveDraftSoon();
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
    this.#restoreDraft();
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
    if (light) this.#upgradeSoon();
  }

  /** Put the real controls into light nodes, those on screen first, a few milliseconds at a time when the
   * page is idle (so input and drawing go first). */
  #upgradeSoon() {
    if (this.upgrading) return;
    this.upgrading = true;
    const later = (fn) => requestIdleCallback(fn, { timeout: 100 });
    const slice = () => {
      const visible = this.view.visibleRect();
      const onScreen = (view) => overlaps(this.rectOf(view.id), visible);
      const waiting = [...this.views.values()].filter((view) => view.light).sort((a, b) => onScreen(b) - onScreen(a));
      const start = performance.now();
      const done = [];
      for (const view of waiting) {
        if (done.length && performance.now() - start > UPGRADE_BUDGET_MS) break;
        view.upgrade(this.doc.node(view.id));
        done.push(view);
      }
      for (const view of done) view.measure();
      if (done.length) this.edges.redrawNodes(done.map((view) => view.id));
      if (waiting.length > done.length) later(slice);
      else this.upgrading = false;
    };
    later(slice);
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
    this.#saveDraftSoon();
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
    const spot = at ?? this.#nextSpot();
    const free = this.#freeSpot(spot.x, spot.y);
    const node = this.doc.addNode({ type, x: free.x, y: free.y });
    this.lastAdded = node.id;
    this.refresh();
    this.selection.set([node.id]);
    if (!at) this.#reveal(node.id); // a node put where the person pointed is already in view
    if (label !== false) {
      this.commit(label ?? `Add ${spec.title}`);
      this.say(`Added ${spec.title} “${node.id}”.`);
    }
    return node.id;
  }

  #nextSpot() {
    const last = this.lastAdded && this.doc.node(this.lastAdded);
    const visible = this.view.visibleRect();
    if (!last) return { x: visible.x + 40, y: visible.y + 40 };
    const width = this.views.get(last.id)?.size.width ?? 240;
    const x = last.x + width + NODE_GAP;
    if (x + width <= visible.x + visible.width) return { x, y: last.y };
    // The row is full: start a new one under everything in view.
    let bottom = visible.y;
    for (const [id, view] of this.views) {
      const node = this.doc.node(id);
      if (node.x < visible.x + visible.width && node.x + view.size.width > visible.x) bottom = Math.max(bottom, node.y + view.size.height);
    }
    return { x: visible.x + 40, y: bottom + NODE_GAP / 2 };
  }

  /** Where a node is drawn, {x, y, width, height} in canvas units. */
  rectOf(id) {
    const node = this.doc.node(id);
    const size = this.views.get(id)?.size ?? { width: 240, height: 120 };
    return { x: node?.x ?? 0, y: node?.y ?? 0, width: size.width, height: size.height };
  }

  /** The first place at or below (x, y) where a new node overlaps no other. */
  #freeSpot(x, y, width = 240, height = 140) {
    for (let tries = 0; tries < 60; tries++) {
      const spot = { x, y, width, height };
      const hit = [...this.views.keys()].map((id) => this.rectOf(id)).find((rect) => overlaps(rect, spot));
      if (!hit) return { x, y };
      y = hit.y + hit.height + 24;
    }
    return { x, y };
  }

  /** Pan so the node is on screen (a node added off-screen, a problem found on one). */
  #reveal(id) {
    const node = this.doc.node(id);
    const view = this.views.get(id);
    if (!node || !view) return;
    const visible = this.view.visibleRect();
    // Its header in view is enough: a tall node need not fit whole.
    const inside =
      node.x >= visible.x && node.y >= visible.y && node.x + view.size.width <= visible.x + visible.width && node.y + 48 <= visible.y + visible.height;
    if (inside) return;
    const centre = this.view.centre();
    this.view.panBy((centre.x - (node.x + view.size.width / 2)) * this.view.k, (centre.y - (node.y + view.size.height / 2)) * this.view.k);
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
    this.#saveDraftSoon();
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

  /** A connection dropped into empty space: offer the node types that can take it, add one, connect it. */
  openMenuFor(from, at, client) {
    const giving = from.kind === "out";
    const type = giving
      ? outputType(this.doc, this.catalogue, from.nodeId, from.field)
      : (inputSpec(this.doc, this.catalogue, from.nodeId, from.field)?.type ?? "any");
    const fits = (spec) => (giving ? firstInputFor(spec, type) : firstOutputFor(spec, type));
    this.menu.open({
      specs: this.catalogue.all().filter(fits),
      client,
      title: `Add a node ${giving ? "taking" : "giving"} ${type}`,
      onPick: (picked) => {
        const spec = this.catalogue.spec(picked);
        // The new node goes right of an output it takes from, left of an input it feeds.
        const id = this.addNode(picked, giving ? { x: at.x + 20, y: at.y - 20 } : { x: at.x - 260, y: at.y - 20 }, { label: false });
        const field = fits(spec).name;
        const edge = giving ? makeEdge(from.nodeId, from.field, id, field) : makeEdge(id, field, from.nodeId, from.field);
        const check = checkEdge(this.doc, this.catalogue, edge);
        if (check.ok) this.doc.connect(edge, { many: check.many });
        this.refresh();
        this.commit(`Add ${spec.title}`);
        this.say(`Added ${spec.title} “${id}”${check.ok ? `, connected to ${from.nodeId}.${from.field}` : ""}.`);
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

  bounds(ids = this.doc.nodes.keys()) {
    let left = Infinity;
    let top = Infinity;
    let right = -Infinity;
    let bottom = -Infinity;
    for (const id of ids) {
      const node = this.doc.node(id);
      const size = this.views.get(id)?.size ?? { width: 240, height: 120 };
      left = Math.min(left, node.x);
      top = Math.min(top, node.y);
      right = Math.max(right, node.x + size.width);
      bottom = Math.max(bottom, node.y + size.height);
    }
    return Number.isFinite(left) ? { x: left, y: top, width: right - left, height: bottom - top } : null;
  }

  fit() {
    const bounds = this.bounds();
    if (bounds) this.view.fit(bounds);
    else this.view.setState({ x: 40, y: 40, k: 1 });
  }

  /** Lay out the whole graph, layered left to right, as one undoable edit. */
  autoLayout() {
    if (!this.doc.nodes.size) return;
    this.#layOut([...this.doc.nodes.keys()]);
    this.refresh();
    this.fit();
    this.commit("Auto-layout");
    this.say("Laid out left to right.");
  }

  #layOut(ids) {
    const items = ids.map((id) => ({ id, ...(this.views.get(id)?.size ?? { width: 240, height: 120 }) }));
    const links = this.doc.edges.map((e) => ({ from: e.source.node_id, to: e.destination.node_id }));
    for (const [id, { x, y }] of layeredLayout(items, links)) {
      const node = this.doc.node(id);
      node.x = x;
      node.y = y;
    }
  }

  /** Give nodes a drawing had no place for a place: all of them laid out, or each beside what feeds it. */
  #placeUnplaced(unplaced) {
    if (!unplaced.length) return;
    if (unplaced.length === this.doc.nodes.size) {
      this.#layOut(unplaced);
      return;
    }
    const placed = new Set([...this.doc.nodes.keys()].filter((id) => !unplaced.includes(id)));
    for (const id of unplaced) {
      const feeders = this.doc.edgesInto(id).map((e) => e.source.node_id).filter((source) => placed.has(source));
      const node = this.doc.node(id);
      if (feeders.length) {
        node.x = Math.max(...feeders.map((f) => this.doc.node(f).x + (this.views.get(f)?.size.width ?? 240))) + NODE_GAP;
        node.y = Math.min(...feeders.map((f) => this.doc.node(f).y));
      } else {
        const all = this.bounds(placed) ?? { x: 0, y: 0, height: 0 };
        node.x = all.x;
        node.y = all.y + all.height + NODE_GAP;
      }
      const free = this.#freeSpot(node.x, node.y, this.views.get(id)?.size.width, this.views.get(id)?.size.height);
      node.x = free.x;
      node.y = free.y;
      placed.add(id);
    }
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
    this.#placeUnplaced(unplaced);
    this.refresh();
    this.fit();
    this.commit(label);
    this.workflow = workflow ? { id: workflow.id, name: workflow.name, description: workflow.description ?? "" } : null;
    this.savedSnapshot = workflow ? this.history.current : null;
    this.#saveDraftSoon();
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
    this.#saveDraftSoon();
    this.updateToolbar();
    this.library.render();
  }

  renamed(workflow) {
    this.workflow = { ...this.workflow, name: workflow.name, description: workflow.description ?? "" };
    this.#saveDraftSoon();
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
    for (const view of this.views.values()) {
      view.status = emptyStatus();
      view.applyStatus();
    }
    if (this.invalidEdges.size) {
      this.invalidEdges.clear();
      this.edges.sync();
    }
  }

  /**
   * Put each 422 error on the node and field its `loc` names (`prefix` is where the graph sits in the
   * request; `edges` the edges in the order they were sent). Returns how many found a node.
   */
  showProblems(errors, prefix, edges) {
    let shown = 0;
    const general = [];
    const touched = new Set();
    const onNode = (id, field, msg) => {
      const view = this.views.get(id);
      if (!view) return false;
      if (field === undefined || field === "id" || field === "type" || !view.rows.has(field)) {
        view.status.messages.push(field === undefined || field === "type" || view.rows.has(field) ? msg : `${field}: ${msg}`);
      } else {
        if (!view.status.fieldErrors.has(field)) view.status.fieldErrors.set(field, []);
        view.status.fieldErrors.get(field).push(msg);
      }
      view.status.state = "invalid";
      touched.add(id);
      return true;
    };
    for (const { loc = [], msg } of errors) {
      const inGraph = prefix.every((part, i) => loc[i] === part);
      const rest = inGraph ? loc.slice(prefix.length) : [];
      let placed = false;
      if (rest[0] === "nodes") placed = onNode(String(rest[1]), rest[2] === undefined ? undefined : String(rest[2]), msg);
      else if (rest[0] === "edges" && edges[rest[1]]) {
        const edge = edges[rest[1]];
        this.invalidEdges.add(edgeKey(edge));
        placed = onNode(edge.destination.node_id, edge.destination.field, msg);
      }
      if (placed) shown += 1;
      else general.push(msg);
    }
    for (const id of touched) this.views.get(id).applyStatus();
    this.edges.sync();
    if (general.length) $("#wf-problems").textContent = general.join(" · ");
    const first = [...touched][0];
    if (first) this.#reveal(first);
    return shown;
  }

  say(text, kind = "info") {
    const line = $("#wf-status");
    line.textContent = text;
    line.dataset.kind = kind;
    if (kind !== "error") $("#wf-problems").textContent = "";
  }

  moved() {
    this.#saveDraftSoon();
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

  #saveDraftSoon() {
    if (!this.ready) return;
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => {
      const draft = { doc: this.doc.snapshot(), workflow: this.workflow, saved: this.savedSnapshot, view: this.view.state() };
      try {
        localStorage.setItem(DRAFT_KEY, JSON.stringify(draft));
      } catch (error) {
        console.warn("could not keep the workflow draft", error);
      }
    }, 250);
  }

  #restoreDraft() {
    let draft = null;
    try {
      draft = JSON.parse(localStorage.getItem(DRAFT_KEY) ?? "null");
    } catch {
      draft = null;
    }
    if (!draft?.doc) {
      this.refresh();
      this.updateToolbar();
      return;
    }
    try {
      this.doc.restore(draft.doc);
    } catch {
      this.doc = new GraphDoc();
    }
    this.history.reset(this.doc.snapshot());
    this.workflow = draft.workflow ?? null;
    this.savedSnapshot = draft.saved === draft.doc ? this.history.current : (draft.saved ?? null);
    this.refresh();
    if (draft.view) this.view.setState(draft.view);
    this.updateToolbar();
  }

  // ---- wiring --------------------------------------------------------------------------------------------

  #wire() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => {
      const port = event.target.closest(".wf-port");
      if (port) {
        const node = port.closest(".wf-node");
        const kind = port.dataset.output !== undefined ? "out" : "in";
        const field = kind === "out" ? port.dataset.output : port.dataset.input;
        this.connector.pointerDown(event, { kind, nodeId: node.dataset.nodeId, field, element: port });
        return;
      }
      const nodeElement = event.target.closest(".wf-node");
      if (nodeElement) {
        const id = nodeElement.dataset.nodeId;
        const lightField = event.target.closest("[data-light-field]")?.dataset.lightField;
        if (this.upgradeNow(id) && lightField) {
          event.preventDefault();
          this.views.get(id).rows.get(lightField)?.querySelector("[data-field]")?.focus();
          this.selection.set([id]);
          return;
        }
        if (event.target.closest("input, textarea, select, button, a, label, .wf-stray-value")) {
          if (!this.selection.has(id) && !(event.shiftKey || event.ctrlKey || event.metaKey)) this.selection.set([id]);
          return;
        }
        this.mover.pointerDown(event, id);
        return;
      }
      const edge = event.target.closest(".wf-edge");
      if (edge) this.selection.selectEdge(edge.dataset.edge);
    });
    canvas.addEventListener("pointermove", (event) => {
      this.pointer = { x: event.clientX, y: event.clientY };
      this.connector.pointerMove(event);
      this.mover.pointerMove(event);
    });
    const up = (event) => {
      this.connector.pointerUp(event);
      this.mover.pointerUp(event);
    };
    canvas.addEventListener("pointerup", up);
    canvas.addEventListener("pointercancel", up);
    canvas.addEventListener("click", (event) => {
      const port = event.target.closest(".wf-port");
      if (port) {
        const node = port.closest(".wf-node");
        const kind = port.dataset.output !== undefined ? "out" : "in";
        this.connector.click({ kind, nodeId: node.dataset.nodeId, field: kind === "out" ? port.dataset.output : port.dataset.input, element: port });
        return;
      }
      const action = event.target.closest("[data-action]");
      const nodeId = action?.closest(".wf-node")?.dataset.nodeId;
      if (!action || !nodeId) return;
      if (action.dataset.action === "delete-node") this.deleteNode(nodeId);
      else if (action.dataset.action === "open-image") this.#openImage(action.dataset.imageName);
    });
    canvas.addEventListener("focusin", (event) => {
      const node = event.target.closest(".wf-node");
      // Tab onto a light node gives it its fields (not a connector's focus: rebuilding would remove it).
      if (node && event.target === node) this.upgradeNow(node.dataset.nodeId);
      if (node && event.target === node && !this.selection.has(node.dataset.nodeId)) this.selection.set([node.dataset.nodeId]);
    });
    document.addEventListener("keydown", (event) => {
      if (this.page.hidden || !this.ready || document.querySelector("dialog[open]") || this.menu.isOpen) return;
      handleKey(this, event);
    });

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
    this.#wireDrop();

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

  #wireDrop() {
    const zone = this.page;
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
    zone.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth += 1;
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      if (file && this.ready) this.openFile(file);
    });
  }

  async #openImage(name) {
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

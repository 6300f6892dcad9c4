// Edges: drawn as SVG curves under the nodes (each `<g>` carries data-edge="<src>.<field>-><dst>.<field>"),
// and made by dragging from a connector to another (or clicking one connector, then another: the keyboard
// way). While a connection is being made every connector that could take it is marked, and the others are
// refused visibly with the reason; dropping into empty space offers the node types that fit.

import { edgeKey, makeEdge } from "./graphdoc.js";
import { checkEdge, firstInputFor, firstOutputFor, inputSpec, outputType } from "./rules.js";

const SVG = "http://www.w3.org/2000/svg";
const DRAG_SLOP = 4;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return el;
}

/** A horizontal S-curve from an output (left) to an input (right). */
export function curve(x1, y1, x2, y2) {
  const dx = Math.max(40, Math.abs(x2 - x1) / 2);
  const p = (x, y) => `${x.toFixed(1)},${y.toFixed(1)}`;
  return `M${p(x1, y1)} C${p(x1 + dx, y1)} ${p(x2 - dx, y2)} ${p(x2, y2)}`;
}

export class EdgeLayer {
  constructor(editor, element) {
    this.editor = editor;
    this.svg = element;
    this.items = new Map(); // key → {group, line, hit, edge}
    this.byNode = new Map(); // node id → keys of the edges touching it
    this.draft = svg("path", { class: "wf-edge-draft" });
    this.draft.style.display = "none";
    this.svg.append(this.draft);
  }

  /** Match the drawn edges to the document's, then draw them all. */
  sync() {
    const { doc, catalogue } = this.editor;
    const wanted = new Map(doc.edges.map((edge) => [edgeKey(edge), edge]));
    for (const [key, item] of this.items) {
      if (!wanted.has(key)) {
        item.group.remove();
        this.items.delete(key);
      }
    }
    this.byNode = new Map();
    for (const [key, edge] of wanted) {
      let item = this.items.get(key);
      if (!item) {
        const hit = svg("path", { class: "wf-edge-hit" });
        const line = svg("path", { class: "wf-edge-line" });
        const group = svg("g", { class: "wf-edge", "data-edge": key });
        group.append(hit, line);
        this.svg.insertBefore(group, this.draft);
        item = { group, line, hit, edge };
        this.items.set(key, item);
      }
      item.edge = edge;
      item.group.setAttribute("data-type", outputType(doc, catalogue, edge.source.node_id, edge.source.field));
      item.group.classList.toggle("selected", this.editor.selection.edge === key);
      item.group.classList.toggle("invalid", this.editor.invalidEdges.has(key));
      for (const id of [edge.source.node_id, edge.destination.node_id]) {
        if (!this.byNode.has(id)) this.byNode.set(id, []);
        this.byNode.get(id).push(key);
      }
    }
    this.redraw(this.items.keys());
  }

  redraw(keys) {
    const { doc, views } = this.editor;
    for (const key of keys) {
      const item = this.items.get(key);
      if (!item) continue;
      const { source, destination } = item.edge;
      const from = doc.node(source.node_id);
      const to = doc.node(destination.node_id);
      const fromView = views.get(source.node_id);
      const toView = views.get(destination.node_id);
      if (!from || !to || !fromView || !toView) continue;
      const a = fromView.portOffset("out", source.field);
      const b = toView.portOffset("in", destination.field);
      const d = curve(from.x + a.x, from.y + a.y, to.x + b.x, to.y + b.y);
      item.line.setAttribute("d", d);
      item.hit.setAttribute("d", d);
    }
  }

  /** Redraw only the edges touching these nodes (a drag moves a few nodes, not the graph). */
  redrawNodes(ids) {
    const keys = new Set();
    for (const id of ids) for (const key of this.byNode.get(id) ?? []) keys.add(key);
    this.redraw(keys);
  }

  showDraft(from, to) {
    const [a, b] = from.kind === "out" ? [from.point, to] : [to, from.point];
    this.draft.setAttribute("d", curve(a.x, a.y, b.x, b.y));
    this.draft.style.display = "";
  }

  hideDraft() {
    this.draft.style.display = "none";
  }
}

/** What a connector element is: {kind: "in" | "out", nodeId, field, element}. */
export function connectorOf(element) {
  const port = element?.closest?.(".wf-port");
  const node = port?.closest(".wf-node");
  if (!port || !node) return null;
  const kind = port.dataset.output !== undefined ? "out" : "in";
  return { kind, nodeId: node.dataset.nodeId, field: kind === "out" ? port.dataset.output : port.dataset.input, element: port };
}

/** The connector under a point: the connector itself, or the row it sits on (a bigger target). */
function connectorAt(x, y) {
  const target = document.elementFromPoint(x, y);
  const direct = connectorOf(target);
  if (direct) return direct;
  const row = target?.closest?.(".wf-row");
  return row ? connectorOf(row.querySelector(".wf-port")) : null;
}

/** Connection-making, by drag or by two clicks. */
export class Connector {
  constructor(editor) {
    this.editor = editor;
    this.drag = null; // {from, pointerId, startX, startY, moved, detached}
    this.pending = null; // the connector clicked first, in click-to-connect
  }

  edgeBetween(a, b) {
    const [out, inp] = a.kind === "out" ? [a, b] : [b, a];
    return makeEdge(out.nodeId, out.field, inp.nodeId, inp.field);
  }

  /** Mark every connector of the other kind as a fit or not for `from`. */
  markCandidates(from) {
    const { doc, catalogue, canvas } = this.editor;
    canvas.classList.add("wf-connecting");
    from.element.classList.add("wf-source");
    const other = from.kind === "out" ? ".wf-port-in" : ".wf-port-out";
    for (const port of canvas.querySelectorAll(other)) {
      const to = connectorOf(port);
      const check = checkEdge(doc, catalogue, this.edgeBetween(from, to));
      port.dataset.compat = check.ok ? "yes" : "no";
    }
  }

  clearCandidates() {
    const canvas = this.editor.canvas;
    canvas.classList.remove("wf-connecting");
    for (const port of canvas.querySelectorAll("[data-compat], .wf-source, .wf-hover")) {
      delete port.dataset.compat;
      port.classList.remove("wf-source", "wf-hover");
    }
  }

  #point(connector) {
    const node = this.editor.doc.node(connector.nodeId);
    const offset = this.editor.views.get(connector.nodeId).portOffset(connector.kind, connector.field);
    return { x: node.x + offset.x, y: node.y + offset.y };
  }

  // ---- dragging ----------------------------------------------------------------------------------------

  pointerDown(event, from) {
    if (event.button !== 0) return;
    event.preventDefault(); // no text selection, no focus jump while dragging
    from.element.setPointerCapture(event.pointerId);
    this.drag = { from, pointerId: event.pointerId, startX: event.clientX, startY: event.clientY, moved: false, detached: null };
  }

  pointerMove(event) {
    const drag = this.drag;
    if (!drag || event.pointerId !== drag.pointerId) return;
    if (!drag.moved) {
      if (Math.hypot(event.clientX - drag.startX, event.clientY - drag.startY) < DRAG_SLOP) return;
      drag.moved = true;
      this.cancelPending();
      this.#startDrag(drag);
    }
    const at = this.editor.view.toWorld(event.clientX, event.clientY);
    this.editor.edges.showDraft({ kind: drag.from.kind, point: this.#point(drag.from) }, at);
    for (const hovered of this.editor.canvas.querySelectorAll(".wf-hover")) hovered.classList.remove("wf-hover");
    connectorAt(event.clientX, event.clientY)?.element.classList.add("wf-hover");
  }

  #startDrag(drag) {
    const { doc } = this.editor;
    // Dragging away from an input that has an edge picks that edge up: it moves with the pointer from its
    // source, and goes where it is dropped (nowhere: it is removed).
    if (drag.from.kind === "in") {
      const edge = doc.edgesInto(drag.from.nodeId, drag.from.field).at(-1);
      if (edge) {
        drag.detached = edge;
        doc.disconnect([edgeKey(edge)]);
        this.editor.refresh();
        const source = this.editor.views.get(edge.source.node_id);
        drag.from = { kind: "out", nodeId: edge.source.node_id, field: edge.source.field, element: source.ports.get(`out:${edge.source.field}`) };
      }
    }
    this.markCandidates(drag.from);
  }

  pointerUp(event) {
    const drag = this.drag;
    if (!drag || event.pointerId !== drag.pointerId) return;
    this.drag = null;
    if (!drag.moved) return; // a click: handled by click()
    // The browser follows a captured pointer's release with a click on the connector it started from.
    this.ignoreClickUntil = performance.now() + 300;
    this.editor.edges.hideDraft();
    const target = connectorAt(event.clientX, event.clientY);
    this.clearCandidates();
    if (target && target.kind !== drag.from.kind) {
      if (!this.connect(drag.from, target, drag.detached ? "Reconnect" : "Connect")) this.#restore(drag);
      return;
    }
    if (drag.detached) {
      this.editor.commit("Disconnect");
      this.editor.say(`Disconnected ${edgeKey(drag.detached)}.`);
      return;
    }
    const under = document.elementFromPoint(event.clientX, event.clientY);
    if (!target && this.editor.canvas.contains(under) && !under.closest(".wf-node, .wf-menu, .wf-zoom")) {
      const at = this.editor.view.toWorld(event.clientX, event.clientY);
      this.offerNodes(drag.from, at, { x: event.clientX, y: event.clientY });
    }
  }

  /** A connection dropped into empty space: offer the node types that can take it, add one, connect it. */
  offerNodes(from, at, client) {
    const editor = this.editor;
    const giving = from.kind === "out";
    const type = giving
      ? outputType(editor.doc, editor.catalogue, from.nodeId, from.field)
      : (inputSpec(editor.doc, editor.catalogue, from.nodeId, from.field)?.type ?? "any");
    const fits = (spec) => (giving ? firstInputFor(spec, type) : firstOutputFor(spec, type));
    editor.menu.open({
      specs: editor.catalogue.all().filter(fits),
      client,
      title: `Add a node ${giving ? "taking" : "giving"} ${type}`,
      onPick: (picked) => {
        const spec = editor.catalogue.spec(picked);
        // The new node goes right of an output it takes from, left of an input it feeds.
        const id = editor.addNode(picked, giving ? { x: at.x + 20, y: at.y - 20 } : { x: at.x - 260, y: at.y - 20 }, { label: false });
        const field = fits(spec).name;
        const edge = giving ? makeEdge(from.nodeId, from.field, id, field) : makeEdge(id, field, from.nodeId, from.field);
        const check = checkEdge(editor.doc, editor.catalogue, edge);
        if (check.ok) editor.doc.connect(edge, { many: check.many });
        editor.refresh();
        editor.commit(`Add ${spec.title}`);
        editor.say(`Added ${spec.title} “${id}”${check.ok ? `, connected to ${from.nodeId}.${from.field}` : ""}.`);
      },
    });
  }

  /** A dropped-back detached edge that could not go where it was dropped returns to where it was. */
  #restore(drag) {
    if (!drag.detached) return;
    this.editor.doc.connect(drag.detached);
    this.editor.refresh();
  }

  /** Add the edge between two connectors if the rules allow it; otherwise refuse it visibly. */
  connect(a, b, label = "Connect") {
    const { doc, catalogue } = this.editor;
    const edge = this.edgeBetween(a, b);
    const check = checkEdge(doc, catalogue, edge);
    if (!check.ok) {
      this.refuse(b.kind === "in" ? b : a, check.reason);
      return false;
    }
    const { added, replaced } = doc.connect(edge, { many: check.many });
    this.editor.refresh();
    this.editor.commit(label);
    const note = replaced.length ? ` (replacing ${replaced.map(edgeKey).join(", ")})` : "";
    if (added) this.editor.say(`Connected ${edgeKey(edge)}${note}.`);
    return true;
  }

  refuse(connector, reason) {
    const port = this.editor.views.get(connector.nodeId)?.ports.get(`${connector.kind}:${connector.field}`);
    if (port) {
      port.classList.remove("wf-refused");
      void port.offsetWidth; // restart the animation when the same connector is refused twice
      port.classList.add("wf-refused");
      setTimeout(() => port.classList.remove("wf-refused"), 1500);
    }
    this.editor.say(`Not connected: ${reason}`, "error");
  }

  // ---- click, click (and the keyboard) -----------------------------------------------------------------

  click(connector) {
    if (performance.now() < (this.ignoreClickUntil ?? 0)) return;
    const pending = this.pending;
    if (!pending) {
      this.pending = connector;
      this.markCandidates(connector);
      const wanted = connector.kind === "out" ? "an input" : "an output";
      this.editor.say(`Connecting from ${connector.nodeId}.${connector.field}: choose ${wanted} (Escape cancels).`);
      return;
    }
    this.cancelPending();
    if (pending.element === connector.element) return;
    if (pending.kind === connector.kind) {
      this.click(connector);
      return;
    }
    this.connect(pending, connector);
  }

  cancelPending() {
    if (!this.pending) return false;
    this.pending = null;
    this.clearCandidates();
    return true;
  }
}

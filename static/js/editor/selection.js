// What is selected (nodes, or one edge), moving the selected nodes (drag, arrow keys), box select, and the
// clipboard (copy, paste, duplicate). A drag moves nodes once per animation frame, however many pointer
// events arrive, and touches only the moved nodes and their edges.

import { overlaps } from "./layout.js";

const CLIPBOARD_KEY = "imagegraph.workflow.clipboard";
const PASTE_OFFSET = 40;

export class Selection {
  constructor(editor) {
    this.editor = editor;
    this.nodes = new Set();
    this.edge = null;
  }

  has(id) {
    return this.nodes.has(id);
  }

  set(ids) {
    this.nodes = new Set(ids);
    this.edge = null;
    this.apply();
  }

  toggle(id) {
    if (this.nodes.has(id)) this.nodes.delete(id);
    else this.nodes.add(id);
    this.edge = null;
    this.apply();
  }

  selectEdge(key) {
    this.nodes.clear();
    this.edge = key;
    this.apply();
  }

  clear() {
    if (!this.nodes.size && !this.edge) return;
    this.nodes.clear();
    this.edge = null;
    this.apply();
  }

  /** Forget what no longer exists (after an undo or a delete). */
  prune() {
    const { doc } = this.editor;
    for (const id of this.nodes) if (!doc.node(id)) this.nodes.delete(id);
    if (this.edge && !doc.hasEdge(this.edge)) this.edge = null;
  }

  apply() {
    for (const [id, view] of this.editor.views) {
      const on = this.nodes.has(id);
      view.element.classList.toggle("selected", on);
      view.element.setAttribute("aria-selected", String(on));
    }
    for (const [key, item] of this.editor.edges.items) item.group.classList.toggle("selected", key === this.edge);
    this.editor.updateToolbar();
  }

  /** Select the nodes whose box meets `rect` (canvas units); `additive` keeps what was selected. */
  box(rect, additive) {
    const hits = [...this.editor.views.keys()].filter((id) => overlaps(this.editor.rectOf(id), rect));
    this.nodes = new Set(additive ? [...this.base, ...hits] : hits);
    this.edge = null;
    this.apply();
  }

  /** Remember the selection a box select adds to. */
  beginBox() {
    this.base = new Set(this.nodes);
  }
}

export class NodeMover {
  constructor(editor) {
    this.editor = editor;
    this.drag = null;
    this.frame = 0;
  }

  pointerDown(event, id) {
    if (event.button !== 0) return;
    const { selection } = this.editor;
    const additive = event.shiftKey || event.ctrlKey || event.metaKey;
    const wasSelected = selection.has(id);
    if (!wasSelected) {
      if (additive) selection.toggle(id);
      else selection.set([id]);
    }
    const ids = [...selection.nodes];
    const starts = new Map(ids.map((nodeId) => [nodeId, { x: this.editor.doc.node(nodeId).x, y: this.editor.doc.node(nodeId).y }]));
    this.editor.canvas.setPointerCapture(event.pointerId);
    const [x, y] = [event.clientX, event.clientY];
    this.drag = { id, pointerId: event.pointerId, x0: x, y0: y, x, y, starts, moved: false, additive, wasSelected };
  }

  pointerMove(event) {
    const drag = this.drag;
    if (!drag || event.pointerId !== drag.pointerId) return false;
    drag.x = event.clientX;
    drag.y = event.clientY;
    if (!drag.moved && Math.hypot(drag.x - drag.x0, drag.y - drag.y0) < 3) return true;
    if (!drag.moved) {
      // Their own compositing layers while they move: a frame repaints nothing else.
      for (const id of drag.starts.keys()) this.editor.views.get(id)?.element.classList.add("wf-moving");
    }
    drag.moved = true;
    this.frame ||= requestAnimationFrame(() => this.#step());
    return true;
  }

  #step() {
    this.frame = 0;
    const drag = this.drag;
    if (!drag) return;
    const k = this.editor.view.k;
    const dx = (drag.x - drag.x0) / k;
    const dy = (drag.y - drag.y0) / k;
    for (const [id, start] of drag.starts) {
      const node = this.editor.doc.node(id);
      if (!node) continue;
      node.x = start.x + dx;
      node.y = start.y + dy;
      this.editor.views.get(id)?.place(node.x, node.y);
    }
    this.editor.edges.redrawNodes(drag.starts.keys());
    this.editor.moved?.(drag.starts.size);
  }

  pointerUp(event) {
    const drag = this.drag;
    if (!drag || event.pointerId !== drag.pointerId) return false;
    if (this.frame) {
      cancelAnimationFrame(this.frame);
      this.#step();
    }
    this.drag = null;
    for (const id of drag.starts.keys()) this.editor.views.get(id)?.element.classList.remove("wf-moving");
    if (drag.moved) this.editor.commit(drag.starts.size > 1 ? `Move ${drag.starts.size} nodes` : "Move node");
    else if (drag.additive && drag.wasSelected) this.editor.selection.toggle(drag.id);
    return true;
  }

  /** Arrow keys: move the selection by (dx, dy) canvas units, one undo step per press. */
  nudge(dx, dy) {
    const { doc, selection, views, edges } = this.editor;
    for (const id of selection.nodes) {
      const node = doc.node(id);
      node.x += dx;
      node.y += dy;
      views.get(id).place(node.x, node.y);
    }
    edges.redrawNodes(selection.nodes);
    this.editor.commit("Move node");
  }
}

// ---- the clipboard ---------------------------------------------------------------------------------------

/** Copy the selected nodes and the edges among them (kept in this browser, so another tab can paste). */
export function copySelection(editor) {
  const ids = [...editor.selection.nodes];
  if (!ids.length) return 0;
  localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(editor.doc.fragment(ids)));
  return ids.length;
}

function readClipboard() {
  try {
    const fragment = JSON.parse(localStorage.getItem(CLIPBOARD_KEY) ?? "null");
    return Array.isArray(fragment?.nodes) && Array.isArray(fragment?.edges) ? fragment : null;
  } catch {
    return null;
  }
}

/** Paste the clipboard with new ids: at `at` (its top-left corner there) or beside the originals. */
export function pasteClipboard(editor, at = null) {
  const fragment = readClipboard();
  if (!fragment?.nodes.length) return [];
  return pasteFragment(editor, fragment, at, "Paste");
}

export function duplicateSelection(editor) {
  const ids = [...editor.selection.nodes];
  if (!ids.length) return [];
  return pasteFragment(editor, editor.doc.fragment(ids), null, "Duplicate");
}

function pasteFragment(editor, fragment, at, label) {
  const left = Math.min(...fragment.nodes.map((n) => n.x));
  const top = Math.min(...fragment.nodes.map((n) => n.y));
  const dx = at ? at.x - left : PASTE_OFFSET;
  const dy = at ? at.y - top : PASTE_OFFSET;
  const ids = editor.doc.paste(fragment, dx, dy);
  editor.refresh();
  editor.selection.set(ids);
  editor.commit(label);
  return ids;
}

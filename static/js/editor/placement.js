// Where nodes go: a new node beside the last one added (or where the person pointed) without covering
// another, a graph that comes without a drawing laid out (all of it, or each new node beside what feeds it),
// the bounds that Fit shows, and panning a node into view.

import { layeredLayout, overlaps } from "./layout.js";

const NODE_GAP = 60;
const DEFAULT_SIZE = { width: 240, height: 120 };

/** Where a node is drawn, {x, y, width, height} in canvas units. */
export function rectOf(editor, id) {
  const node = editor.doc.node(id);
  const size = editor.views.get(id)?.size ?? DEFAULT_SIZE;
  return { x: node?.x ?? 0, y: node?.y ?? 0, width: size.width, height: size.height };
}

/** The box around `ids` (every node by default), or null when there are none. */
export function bounds(editor, ids = editor.doc.nodes.keys()) {
  let [left, top, right, bottom] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const id of ids) {
    const rect = rectOf(editor, id);
    left = Math.min(left, rect.x);
    top = Math.min(top, rect.y);
    right = Math.max(right, rect.x + rect.width);
    bottom = Math.max(bottom, rect.y + rect.height);
  }
  return Number.isFinite(left) ? { x: left, y: top, width: right - left, height: bottom - top } : null;
}

/** Right of the node added last, or at the start of a new row under what is in view when that one is full. */
export function nextSpot(editor) {
  const last = editor.lastAdded && editor.doc.node(editor.lastAdded);
  const visible = editor.view.visibleRect();
  if (!last) return { x: visible.x + 40, y: visible.y + 40 };
  const width = rectOf(editor, last.id).width;
  const x = last.x + width + NODE_GAP;
  if (x + width <= visible.x + visible.width) return { x, y: last.y };
  let bottom = visible.y;
  for (const id of editor.views.keys()) {
    const rect = rectOf(editor, id);
    if (rect.x < visible.x + visible.width && rect.x + rect.width > visible.x) bottom = Math.max(bottom, rect.y + rect.height);
  }
  return { x: visible.x + 40, y: bottom + NODE_GAP / 2 };
}

/** The first place at or below (x, y) where a node of that size covers no other. */
export function freeSpot(editor, x, y, width = 240, height = 140) {
  for (let tries = 0; tries < 60; tries++) {
    const spot = { x, y, width, height };
    const hit = [...editor.views.keys()].map((id) => rectOf(editor, id)).find((rect) => overlaps(rect, spot));
    if (!hit) return { x, y };
    y = hit.y + hit.height + 24;
  }
  return { x, y };
}

/** Pan so the node is on screen (a node added off-screen, a problem found on one); its header is enough. */
export function reveal(editor, id) {
  if (!editor.doc.node(id)) return;
  const rect = rectOf(editor, id);
  const visible = editor.view.visibleRect();
  const inside =
    rect.x >= visible.x && rect.y >= visible.y && rect.x + rect.width <= visible.x + visible.width && rect.y + 48 <= visible.y + visible.height;
  if (inside) return;
  const centre = editor.view.centre();
  const k = editor.view.k;
  editor.view.panBy((centre.x - (rect.x + rect.width / 2)) * k, (centre.y - (rect.y + rect.height / 2)) * k);
}

/** Lay `ids` out, layered left to right (layout.js), with the sizes the nodes are drawn at. */
export function layOut(editor, ids) {
  const items = ids.map((id) => ({ id, ...rectOf(editor, id) }));
  const links = editor.doc.edges.map((e) => ({ from: e.source.node_id, to: e.destination.node_id }));
  for (const [id, { x, y }] of layeredLayout(items, links)) {
    const node = editor.doc.node(id);
    node.x = x;
    node.y = y;
  }
}

/** Give the nodes a drawing had no place for a place: all of them laid out, or each beside what feeds it. */
export function placeUnplaced(editor, unplaced) {
  if (!unplaced.length) return;
  const { doc } = editor;
  if (unplaced.length === doc.nodes.size) {
    layOut(editor, unplaced);
    return;
  }
  const placed = new Set([...doc.nodes.keys()].filter((id) => !unplaced.includes(id)));
  for (const id of unplaced) {
    const feeders = doc.edgesInto(id).map((e) => e.source.node_id).filter((source) => placed.has(source));
    const node = doc.node(id);
    if (feeders.length) {
      node.x = Math.max(...feeders.map((f) => rectOf(editor, f).x + rectOf(editor, f).width)) + NODE_GAP;
      node.y = Math.min(...feeders.map((f) => doc.node(f).y));
    } else {
      const all = bounds(editor, placed) ?? { x: 0, y: 0, height: 0 };
      node.x = all.x;
      node.y = all.y + all.height + NODE_GAP;
    }
    const { width, height } = rectOf(editor, id);
    Object.assign(node, freeSpot(editor, node.x, node.y, width, height));
    placed.add(id);
  }
}

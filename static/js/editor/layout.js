// Auto-layout for graphs that come without a drawing: layered, left to right (a Sugiyama-style layout kept
// small): each node goes one column right of the furthest node that feeds it, nodes in a column are ordered
// by the average row of their neighbours (a few sweeps each way, which removes most crossings), then
// columns are stacked and centred on each other.

/** Whether two rectangles {x, y, width, height} overlap. */
export function overlaps(a, b) {
  return a.x < b.x + b.width && a.x + a.width > b.x && a.y < b.y + b.height && a.y + a.height > b.y;
}

const GAP_X = 80;
const GAP_Y = 32;
const SWEEPS = 4;

/**
 * items: [{id, width, height}] in the order to prefer; links: [{from, to}] by id.
 * Returns Map id → {x, y}, the top-left corners, with the drawing's top-left at (0, 0).
 */
export function layeredLayout(items, links) {
  const ids = items.map((item) => item.id);
  const known = new Set(ids);
  const preds = new Map(ids.map((id) => [id, []]));
  const succs = new Map(ids.map((id) => [id, []]));
  for (const { from, to } of links) {
    if (!known.has(from) || !known.has(to) || from === to) continue;
    preds.get(to).push(from);
    succs.get(from).push(to);
  }

  // Columns: longest path from a source, in topological order (a node on a loop, which a valid graph never
  // has, is placed after the others rather than looping for ever).
  const column = new Map();
  const indegree = new Map(ids.map((id) => [id, preds.get(id).length]));
  const ready = ids.filter((id) => indegree.get(id) === 0);
  const order = [];
  while (ready.length) {
    const id = ready.shift();
    order.push(id);
    column.set(id, Math.max(0, ...preds.get(id).map((p) => column.get(p) + 1)));
    for (const next of succs.get(id)) {
      indegree.set(next, indegree.get(next) - 1);
      if (indegree.get(next) === 0) ready.push(next);
    }
  }
  for (const id of ids) if (!column.has(id)) column.set(id, Math.max(0, ...column.values()) + 1);

  // A source that feeds only later columns sits just left of its first consumer (a loader feeding the last
  // node would otherwise hang in column 0 with long edges across everything).
  for (const id of [...order].reverse()) {
    if (preds.get(id).length || !succs.get(id).length) continue;
    column.set(id, Math.max(column.get(id), Math.min(...succs.get(id).map((s) => column.get(s))) - 1));
  }

  const columns = [];
  for (const id of ids) (columns[column.get(id)] ??= []).push(id);
  const rows = columns.filter(Boolean);
  const position = new Map();
  const renumber = () => rows.forEach((col) => col.forEach((id, i) => position.set(id, i)));
  renumber();
  const barycentre = (id, neighbours) => {
    const placed = neighbours.get(id).filter((n) => position.has(n));
    return placed.length ? placed.reduce((sum, n) => sum + position.get(n), 0) / placed.length : position.get(id);
  };
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    const down = sweep % 2 === 0;
    const sequence = down ? rows.slice(1) : rows.slice(0, -1).reverse();
    for (const col of sequence) {
      const keys = new Map(col.map((id) => [id, barycentre(id, down ? preds : succs)]));
      col.sort((a, b) => keys.get(a) - keys.get(b));
      col.forEach((id, i) => position.set(id, i));
    }
  }

  const size = new Map(items.map((item) => [item.id, item]));
  const heights = rows.map((col) => col.reduce((sum, id) => sum + size.get(id).height, 0) + GAP_Y * (col.length - 1));
  const tallest = Math.max(0, ...heights);
  const placed = new Map();
  let x = 0;
  rows.forEach((col, c) => {
    let y = (tallest - heights[c]) / 2;
    const width = Math.max(...col.map((id) => size.get(id).width));
    for (const id of col) {
      placed.set(id, { x, y });
      y += size.get(id).height + GAP_Y;
    }
    x += width + GAP_X;
  });
  return placed;
}

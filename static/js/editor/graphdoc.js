// The document the editor edits: nodes (id, type, position, the literal values given), edges in the API's own
// shape, and the conversions to and from a Graph and a workflow layout. Pure data: no DOM here, so history
// can snapshot it and the tests of the page read it back as JSON.

export function edgeKey(edge) {
  return `${edge.source.node_id}.${edge.source.field}->${edge.destination.node_id}.${edge.destination.field}`;
}

export function makeEdge(sourceNode, sourceField, destinationNode, destinationField) {
  return {
    source: { node_id: sourceNode, field: sourceField },
    destination: { node_id: destinationNode, field: destinationField },
  };
}

/** The fields a graph node carries that are not inputs. */
const NOT_VALUES = new Set(["id", "type"]);
// Short ids for the common node types, the ones the contract's standard graph uses.
const SHORT_IDS = {
  main_model_loader: "model",
  sdxl_model_loader: "model",
  compel: "prompt",
  denoise_latents: "denoise",
  t2l: "denoise",
  l2i: "decode",
  i2l: "encode",
  metadata_accumulator: "meta",
};

export class GraphDoc {
  constructor() {
    this.graphId = null;
    this.nodes = new Map(); // id → {id, type, x, y, values}
    this.edges = [];
  }

  node(id) {
    return this.nodes.get(id);
  }

  /** An id not in use yet, made from the type: `noise`, `noise_2`, `decode` for an l2i... */
  newId(type) {
    const base = SHORT_IDS[type] ?? (type.replace(/[^A-Za-z0-9_-]+/g, "_") || "node");
    if (!this.nodes.has(base)) return base;
    for (let i = 2; ; i++) if (!this.nodes.has(`${base}_${i}`)) return `${base}_${i}`;
  }

  addNode({ id, type, x = 0, y = 0, values = {} }) {
    const node = { id: id ?? this.newId(type), type, x, y, values: structuredClone(values) };
    this.nodes.set(node.id, node);
    return node;
  }

  removeNodes(ids) {
    const gone = new Set(ids);
    for (const id of gone) this.nodes.delete(id);
    this.edges = this.edges.filter((e) => !gone.has(e.source.node_id) && !gone.has(e.destination.node_id));
  }

  edgesInto(nodeId, field) {
    return this.edges.filter((e) => e.destination.node_id === nodeId && (field === undefined || e.destination.field === field));
  }

  edgesFrom(nodeId) {
    return this.edges.filter((e) => e.source.node_id === nodeId);
  }

  hasEdge(key) {
    return this.edges.some((e) => edgeKey(e) === key);
  }

  /** Add an edge; unless `many` (collect.item), an edge already into that input is replaced. */
  connect(edge, { many = false } = {}) {
    const key = edgeKey(edge);
    if (this.hasEdge(key)) return { added: false, replaced: [] };
    const replaced = many ? [] : this.edgesInto(edge.destination.node_id, edge.destination.field);
    const gone = new Set(replaced.map(edgeKey));
    this.edges = this.edges.filter((e) => !gone.has(edgeKey(e)));
    this.edges.push(structuredClone(edge));
    return { added: true, replaced };
  }

  disconnect(keys) {
    const gone = new Set(keys);
    const before = this.edges.length;
    this.edges = this.edges.filter((e) => !gone.has(edgeKey(e)));
    return before !== this.edges.length;
  }

  /** The Graph to send to the server (POST /sessions/, a workflow's `graph`). */
  toGraph() {
    const nodes = {};
    for (const node of this.nodes.values()) nodes[node.id] = { id: node.id, type: node.type, ...structuredClone(node.values) };
    const graph = { nodes, edges: structuredClone(this.edges) };
    if (this.graphId) graph.id = this.graphId;
    return graph;
  }

  toLayout() {
    const layout = {};
    for (const node of this.nodes.values()) layout[node.id] = { x: Math.round(node.x), y: Math.round(node.y) };
    return layout;
  }

  /**
   * Replace everything with `graph`. Returns {unplaced: ids of the nodes `layout` does not place (they need
   * a place), dropped: edges left out because a node they name is not in the graph (nothing could draw them)}.
   */
  load(graph, layout = null) {
    this.graphId = typeof graph.id === "string" ? graph.id : null;
    this.nodes = new Map();
    const unplaced = [];
    for (const [key, raw] of Object.entries(graph.nodes ?? {})) {
      const values = {};
      for (const [name, value] of Object.entries(raw ?? {})) if (!NOT_VALUES.has(name)) values[name] = value;
      const at = layout?.[key];
      const placed = at && Number.isFinite(at.x) && Number.isFinite(at.y);
      this.nodes.set(key, { id: key, type: String(raw?.type ?? "unknown"), x: placed ? at.x : 0, y: placed ? at.y : 0, values });
      if (!placed) unplaced.push(key);
    }
    this.edges = [];
    const dropped = [];
    for (const e of Array.isArray(graph.edges) ? graph.edges : []) {
      const edge = makeEdge(String(e?.source?.node_id), String(e?.source?.field), String(e?.destination?.node_id), String(e?.destination?.field));
      if (this.nodes.has(edge.source.node_id) && this.nodes.has(edge.destination.node_id)) this.edges.push(edge);
      else dropped.push(edge);
    }
    return { unplaced, dropped };
  }

  /** How a node is wired and given values, for drawing a node of a type the catalogue does not have. */
  usage(nodeId) {
    const node = this.nodes.get(nodeId);
    return {
      inputs: new Set(this.edgesInto(nodeId).map((e) => e.destination.field)),
      outputs: new Set(this.edgesFrom(nodeId).map((e) => e.source.field)),
      values: node?.values ?? {},
    };
  }

  snapshot() {
    return JSON.stringify({ graphId: this.graphId, nodes: [...this.nodes.values()], edges: this.edges });
  }

  restore(snapshot) {
    const data = JSON.parse(snapshot);
    this.graphId = data.graphId;
    this.nodes = new Map(data.nodes.map((node) => [node.id, node]));
    this.edges = data.edges;
  }

  /** Nodes `ids` and the edges among them, as a fragment to paste (positions kept). */
  fragment(ids) {
    const keep = new Set(ids);
    return {
      nodes: [...keep].map((id) => this.nodes.get(id)).filter(Boolean).map((node) => structuredClone(node)),
      edges: this.edges.filter((e) => keep.has(e.source.node_id) && keep.has(e.destination.node_id)).map((e) => structuredClone(e)),
    };
  }

  /** Add a fragment with fresh ids, moved by (dx, dy); returns the new ids. */
  paste(fragment, dx, dy) {
    const renamed = new Map();
    for (const node of fragment.nodes) {
      const added = this.addNode({ type: node.type, x: node.x + dx, y: node.y + dy, values: node.values });
      renamed.set(node.id, added.id);
    }
    for (const e of fragment.edges) {
      this.edges.push(makeEdge(renamed.get(e.source.node_id), e.source.field, renamed.get(e.destination.node_id), e.destination.field));
    }
    return [...renamed.values()];
  }
}

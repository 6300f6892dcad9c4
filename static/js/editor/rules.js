// What may be wired to what: the same rules the server applies (server/graph/registry.py `compatible()` and
// the output types of `iterate` / `collect` in server/graph/graph.py), so the editor refuses an edge the
// server would refuse, and says why in the same words.

/** Whether an output of type `source` may feed an input of type `destination` (registry.compatible). */
export function compatible(source, destination) {
  if (source === destination || source === "any" || destination === "any") return true;
  if (source === "integer" && destination === "float") return true;
  // A collection of unknown items fits any collection, and any collection fits one of unknown items.
  return (
    (source === "collection" && destination.startsWith("collection")) ||
    (source.startsWith("collection") && destination === "collection")
  );
}

/** Whether edges into this input may be several (only collect.item gathers them). */
export function takesMany(nodeType, field) {
  return nodeType === "collect" && field === "item";
}

/** The type an output gives, following iterate.item and collect.collection through their inputs. */
export function outputType(doc, catalogue, nodeId, field, seen = new Set()) {
  const node = doc.node(nodeId);
  if (!node) return "any";
  if (seen.has(nodeId)) return "any";
  seen.add(nodeId);
  if (node.type === "iterate" && field === "item") {
    const wired = doc.edgesInto(nodeId, "collection")[0];
    if (!wired) return "any";
    const kind = outputType(doc, catalogue, wired.source.node_id, wired.source.field, seen);
    return kind.startsWith("collection[") ? kind.slice("collection[".length, -1) : "any";
  }
  if (node.type === "collect" && field === "collection") {
    const kinds = new Set(doc.edgesInto(nodeId, "item").map((e) => outputType(doc, catalogue, e.source.node_id, e.source.field, new Set(seen))));
    return kinds.size === 1 && !kinds.has("any") ? `collection[${[...kinds][0]}]` : "collection";
  }
  return catalogue.spec(node.type, doc.usage(nodeId)).outputByName.get(field)?.type ?? "any";
}

export function inputSpec(doc, catalogue, nodeId, field) {
  const node = doc.node(nodeId);
  return node ? catalogue.spec(node.type, doc.usage(nodeId)).inputByName.get(field) : undefined;
}

/** Whether `to` can be reached from `from` along edges (so an edge to → from would close a loop). */
function reaches(doc, from, to) {
  const stack = [from];
  const seen = new Set();
  while (stack.length) {
    const id = stack.pop();
    if (id === to) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    for (const e of doc.edgesFrom(id)) stack.push(e.destination.node_id);
  }
  return false;
}

/**
 * May this edge be added? {ok: true, replaces: [edge...]} or {ok: false, reason}. The reason is a sentence
 * a person can act on, worded like the server's.
 */
export function checkEdge(doc, catalogue, edge) {
  const { source, destination } = edge;
  if (source.node_id === destination.node_id) return { ok: false, reason: "A node cannot feed itself." };
  const input = inputSpec(doc, catalogue, destination.node_id, destination.field);
  if (!input) return { ok: false, reason: `\`${destination.node_id}\` has no input \`${destination.field}\`.` };
  if (input.input === "direct") {
    return { ok: false, reason: `\`${destination.node_id}.${destination.field}\` takes a value, not an edge.` };
  }
  const given = outputType(doc, catalogue, source.node_id, source.field);
  if (!compatible(given, input.type)) {
    return {
      ok: false,
      reason: `\`${source.node_id}.${source.field}\` gives ${given} but \`${destination.node_id}.${destination.field}\` takes ${input.type}.`,
    };
  }
  if (reaches(doc, destination.node_id, source.node_id)) {
    return { ok: false, reason: "That edge would close a loop; a graph must not loop." };
  }
  const many = takesMany(doc.node(destination.node_id).type, destination.field);
  const replaces = many ? [] : doc.edgesInto(destination.node_id, destination.field);
  return { ok: true, many, replaces };
}

/** For the add-node menu after a drag into empty space: the first input of `spec` an output of `type` fits. */
export function firstInputFor(spec, type) {
  return spec.inputs.find((input) => input.input !== "direct" && compatible(type, input.type));
}

/** ...and the first output of `spec` that fits an input of `type`. */
export function firstOutputFor(spec, type) {
  return spec.outputs.find((output) => compatible(output.type, type));
}

// What a 422 says, put where it belongs: each error on the node and field its `loc` names (data-error, the
// node's data-state "invalid"), an edge's error on the edge and on the input it goes into, the rest in the
// status line. Shared by Run (the graph at ["body"]) and the library (at ["body", "graph"]).

import { $ } from "../dom.js";
import { edgeKey } from "./graphdoc.js";
import { emptyStatus } from "./nodes.js";
import { reveal } from "./placement.js";

export function clearProblems(editor) {
  for (const view of editor.views.values()) {
    view.status = emptyStatus();
    view.applyStatus();
  }
  if (editor.invalidEdges.size) {
    editor.invalidEdges.clear();
    editor.edges.sync();
  }
}

/**
 * Put each 422 error on the node and field its `loc` names (`prefix` is where the graph sits in the
 * request; `edges` the edges in the order they were sent). Returns how many found a node.
 */
export function showProblems(editor, errors, prefix, edges) {
  let shown = 0;
  const general = [];
  const touched = new Set();
  const onNode = (id, field, msg) => {
    const view = editor.views.get(id);
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
      editor.invalidEdges.add(edgeKey(edge));
      placed = onNode(edge.destination.node_id, edge.destination.field, msg);
    }
    if (placed) shown += 1;
    else general.push(msg);
  }
  for (const id of touched) editor.views.get(id).applyStatus();
  editor.edges.sync();
  if (general.length) $("#wf-problems").textContent = general.join(" · ");
  const first = [...touched][0];
  if (first) reveal(editor, first);
  return shown;
}

// The canvas's pointer, click, focus and keyboard events, sent to the part they are for: a connector to
// edges.js, a node to selection.js (select, drag), a light node's value to its real control, an edge to
// the selection; keys to keys.js. And files dropped on the page.

import { handleKey } from "./keys.js";

function connectorFrom(port) {
  const kind = port.dataset.output !== undefined ? "out" : "in";
  const field = kind === "out" ? port.dataset.output : port.dataset.input;
  return { kind, nodeId: port.closest(".wf-node").dataset.nodeId, field, element: port };
}

export function wireCanvas(editor) {
  const canvas = editor.canvas;
  canvas.addEventListener("pointerdown", (event) => {
    const port = event.target.closest(".wf-port");
    if (port) {
      editor.connector.pointerDown(event, connectorFrom(port));
      return;
    }
    const nodeElement = event.target.closest(".wf-node");
    if (nodeElement) {
      const id = nodeElement.dataset.nodeId;
      const lightField = event.target.closest("[data-light-field]")?.dataset.lightField;
      if (editor.upgradeNow(id) && lightField) {
        // A press on a value drawn as text: the control is there now, and takes the focus.
        event.preventDefault();
        editor.views.get(id).rows.get(lightField)?.querySelector("[data-field]")?.focus();
        editor.selection.set([id]);
        return;
      }
      if (event.target.closest("input, textarea, select, button, a, label, .wf-stray-value")) {
        if (!editor.selection.has(id) && !(event.shiftKey || event.ctrlKey || event.metaKey)) editor.selection.set([id]);
        return;
      }
      editor.mover.pointerDown(event, id);
      return;
    }
    const edge = event.target.closest(".wf-edge");
    if (edge) editor.selection.selectEdge(edge.dataset.edge);
  });
  canvas.addEventListener("pointermove", (event) => {
    editor.pointer = { x: event.clientX, y: event.clientY };
    editor.connector.pointerMove(event);
    editor.mover.pointerMove(event);
  });
  const up = (event) => {
    editor.connector.pointerUp(event);
    editor.mover.pointerUp(event);
  };
  canvas.addEventListener("pointerup", up);
  canvas.addEventListener("pointercancel", up);
  canvas.addEventListener("click", (event) => {
    const port = event.target.closest(".wf-port");
    if (port) {
      editor.connector.click(connectorFrom(port));
      return;
    }
    const action = event.target.closest("[data-action]");
    const nodeId = action?.closest(".wf-node")?.dataset.nodeId;
    if (!action || !nodeId) return;
    if (action.dataset.action === "delete-node") editor.deleteNode(nodeId);
    else if (action.dataset.action === "open-image") editor.openImage(action.dataset.imageName);
  });
  canvas.addEventListener("focusin", (event) => {
    const node = event.target.closest(".wf-node");
    if (!node || event.target !== node) return; // a field or connector inside keeps its own focus
    // Tab onto a light node gives it its fields.
    editor.upgradeNow(node.dataset.nodeId);
    if (!editor.selection.has(node.dataset.nodeId)) editor.selection.set([node.dataset.nodeId]);
  });
  document.addEventListener("keydown", (event) => {
    if (editor.page.hidden || !editor.ready || document.querySelector("dialog[open]") || editor.menu.isOpen) return;
    handleKey(editor, event);
  });
}

/** Files dragged over the page show the drop overlay; the first one dropped goes to `open(file)`. */
export function wireFileDrop(editor, open) {
  const zone = editor.page;
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
    if (file) open(file);
  });
}

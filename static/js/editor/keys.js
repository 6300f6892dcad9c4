// Keyboard access to the editor. In a text field the field keeps its keys (its own undo too), except the
// few that act on the whole page: Ctrl+S saves, Ctrl+Enter runs.
//
//   Ctrl+Z / Ctrl+Shift+Z (or Ctrl+Y)   undo / redo          Delete, Backspace   delete the selection
//   Ctrl+C / Ctrl+V / Ctrl+D            copy, paste, duplicate   Ctrl+A          select every node
//   Shift+A or N                        add a node (searchable menu)
//   arrows                              move the selection (Shift: further), or pan when nothing is selected
//   + / - / 0 / F                       zoom in, out, to 100 %, fit the graph     L   auto-layout
//   Enter on a node                     into its first field     Escape   cancel a connection, clear selection
//   Enter or Space on a connector       start a connection, or finish it on a second connector
//   Delete on an input's connector      disconnect it

import { copySelection, duplicateSelection, pasteClipboard } from "./selection.js";

const PAN_STEP = 60;

export function handleKey(editor, event) {
  const target = event.target;
  const inField = Boolean(target.closest?.("input, textarea, select, [contenteditable='true']"));
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key;

  if (mod && key.toLowerCase() === "s") {
    event.preventDefault();
    if (event.shiftKey) editor.library.saveAs();
    else editor.library.save();
    return;
  }
  if (mod && key === "Enter") {
    event.preventDefault();
    editor.runner.run();
    return;
  }
  if (inField) {
    if (key === "Escape") target.closest(".wf-node")?.focus();
    return;
  }
  if (mod && key.toLowerCase() === "z") {
    event.preventDefault();
    if (event.shiftKey) editor.redo();
    else editor.undo();
    return;
  }
  if (mod && key.toLowerCase() === "y") {
    event.preventDefault();
    editor.redo();
    return;
  }
  if (mod && key.toLowerCase() === "c") {
    const count = copySelection(editor);
    if (count) editor.say(`Copied ${count} node${count === 1 ? "" : "s"}.`);
    return;
  }
  if (mod && key.toLowerCase() === "v") {
    event.preventDefault();
    const ids = pasteClipboard(editor, editor.pointerWorld());
    if (ids.length) editor.say(`Pasted ${ids.length} node${ids.length === 1 ? "" : "s"}.`);
    return;
  }
  if (mod && key.toLowerCase() === "d") {
    event.preventDefault();
    duplicateSelection(editor);
    return;
  }
  if (mod && key.toLowerCase() === "a") {
    event.preventDefault();
    editor.selection.set([...editor.doc.nodes.keys()]);
    return;
  }
  if (mod || event.altKey) return;

  const port = target.closest?.(".wf-port");
  if (port && (key === "Enter" || key === " ")) {
    event.preventDefault();
    port.click(); // the connector's click: start or finish a connection
    return;
  }
  switch (key) {
    case "Delete":
    case "Backspace":
      event.preventDefault();
      if (port?.dataset.input !== undefined) editor.disconnectInput(port.closest(".wf-node").dataset.nodeId, port.dataset.input);
      else editor.deleteSelection();
      return;
    case "Escape":
      if (!editor.connector.cancelPending()) editor.selection.clear();
      return;
    case "Enter": {
      const node = target.closest?.(".wf-node");
      if (node === target) {
        event.preventDefault();
        node.querySelector("input, textarea, select, .wf-node-body button")?.focus();
      }
      return;
    }
    case "ArrowLeft":
    case "ArrowRight":
    case "ArrowUp":
    case "ArrowDown": {
      if (target.closest?.(".wf-port")) return; // let a connector keep its own focus behaviour
      event.preventDefault();
      const step = event.shiftKey ? 50 : 10;
      const dx = key === "ArrowLeft" ? -1 : key === "ArrowRight" ? 1 : 0;
      const dy = key === "ArrowUp" ? -1 : key === "ArrowDown" ? 1 : 0;
      if (editor.selection.nodes.size) editor.mover.nudge(dx * step, dy * step);
      else editor.view.panBy(-dx * PAN_STEP, -dy * PAN_STEP);
      return;
    }
    case "+":
    case "=":
      editor.view.zoomAt(1.2);
      return;
    case "-":
    case "_":
      editor.view.zoomAt(1 / 1.2);
      return;
    case "0":
      editor.view.setZoom(1);
      return;
    default:
      break;
  }
  const letter = key.toLowerCase();
  if (letter === "f") editor.fit();
  else if (letter === "l") editor.autoLayout();
  else if (letter === "n" || (letter === "a" && event.shiftKey)) {
    event.preventDefault();
    editor.openMenu();
  }
}

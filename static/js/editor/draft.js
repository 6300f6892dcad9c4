// The open document kept in this browser (localStorage): what is on the canvas, which library entry it is,
// and the view, so a reload or a closed tab loses nothing.

import { GraphDoc } from "./graphdoc.js";

const DRAFT_KEY = "imagegraph.workflow.draft";

export function saveDraft(editor) {
  const draft = { doc: editor.doc.snapshot(), workflow: editor.workflow, saved: editor.savedSnapshot, view: editor.view.state() };
  try {
    localStorage.setItem(DRAFT_KEY, JSON.stringify(draft));
  } catch (error) {
    console.warn("could not keep the workflow draft", error);
  }
}

/** Put the kept draft back on the canvas (with nothing to undo), or draw the empty document. */
export function restoreDraft(editor) {
  let draft = null;
  try {
    draft = JSON.parse(localStorage.getItem(DRAFT_KEY) ?? "null");
  } catch {
    draft = null;
  }
  if (draft?.doc) {
    try {
      editor.doc.restore(draft.doc);
    } catch {
      editor.doc = new GraphDoc(); // a draft from an older page that no longer reads: start empty
    }
    editor.history.reset(editor.doc.snapshot());
    editor.workflow = draft.workflow ?? null;
    editor.savedSnapshot = draft.saved === draft.doc ? editor.history.current : (draft.saved ?? null);
  }
  editor.refresh();
  if (draft?.view) editor.view.setState(draft.view);
  editor.updateToolbar();
}

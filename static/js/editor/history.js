// Undo and redo of every edit, as whole-document snapshots: an edit is committed once it is complete (a drag
// when it ends, a field when it changes), and undo puts back the snapshot from before it. Snapshots of a
// 60-node graph are a few tens of kilobytes, so keeping a couple of hundred costs little and can never get
// out of step the way hand-written inverse operations can.

const LIMIT = 200;

export class History {
  constructor(snapshot) {
    this.undoStack = []; // [{snapshot, label}] states before each edit
    this.redoStack = [];
    this.current = snapshot; // the state after the last commit
  }

  /** Record that the document is now `snapshot` after an edit called `label`; false if nothing changed. */
  commit(snapshot, label) {
    if (snapshot === this.current) return false;
    this.undoStack.push({ snapshot: this.current, label });
    if (this.undoStack.length > LIMIT) this.undoStack.shift();
    this.redoStack = [];
    this.current = snapshot;
    return true;
  }

  /** Start over from `snapshot` with nothing to undo (a page load). */
  reset(snapshot) {
    this.undoStack = [];
    this.redoStack = [];
    this.current = snapshot;
  }

  canUndo() {
    return this.undoStack.length > 0;
  }

  canRedo() {
    return this.redoStack.length > 0;
  }

  /** The snapshot to go back to, and the label of the edit undone; null when there is none. */
  undo() {
    const entry = this.undoStack.pop();
    if (!entry) return null;
    this.redoStack.push({ snapshot: this.current, label: entry.label });
    this.current = entry.snapshot;
    return entry;
  }

  redo() {
    const entry = this.redoStack.pop();
    if (!entry) return null;
    this.undoStack.push({ snapshot: this.current, label: entry.label });
    this.current = entry.snapshot;
    return { snapshot: this.current, label: entry.label };
  }

  nextUndoLabel() {
    return this.undoStack.at(-1)?.label ?? null;
  }

  nextRedoLabel() {
    return this.redoStack.at(-1)?.label ?? null;
  }
}

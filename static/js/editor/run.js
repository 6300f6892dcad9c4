// Running the graph: Run validates it and queues it as a session (POST /sessions/, PUT .../invoke); each
// node then shows what the WebSocket says about it: queued, running (with the step bar and preview on a
// denoise node), completed (with a thumbnail on a node that made an image), failed (with the error).
// A 422 puts each of its messages on the node and field it names, and changes nothing in the graph.

import { api } from "../api.js";
import { errorText } from "../dom.js";
import { bus } from "../state.js";

const ACTIVE = new Set(["validating", "queued", "running"]);

export class Runner {
  constructor(editor) {
    this.editor = editor;
    this.sessionId = null;
    this.status = null;
    this.edgeOrder = [];
    bus.on("session_started", (e) => this.#mine(e) && this.#setRunStatus("running"));
    bus.on("invocation_started", (e) => this.#mine(e) && this.#node(e, { state: "running", progress: null }));
    bus.on("generator_progress", (e) => this.#mine(e) && this.#progress(e));
    bus.on("invocation_complete", (e) => this.#mine(e) && this.#complete(e));
    bus.on("invocation_error", (e) => this.#mine(e) && this.#node(e, { state: "failed", progress: null, messages: [this.#errorText(e)] }));
    bus.on("session_complete", (e) => this.#mine(e) && this.#finished(e.status));
    bus.on("session_canceled", (e) => this.#mine(e) && this.#finished("canceled"));
    bus.on("ready", ({ first }) => {
      if (!first) this.#catchUp();
    });
  }

  get running() {
    return ACTIVE.has(this.status);
  }

  #mine(event) {
    return event.session_id && event.session_id === this.sessionId;
  }

  #errorText(event) {
    return event.error_type ? `${event.error_type}: ${event.error}` : event.error;
  }

  async run() {
    const editor = this.editor;
    if (this.running) return;
    editor.commit("Edit"); // whatever is being typed belongs to what runs
    editor.clearStatus();
    const graph = editor.doc.toGraph();
    if (!Object.keys(graph.nodes).length) {
      editor.say("Add a node first: the graph is empty.", "error");
      return;
    }
    this.edgeOrder = graph.edges;
    this.#setRunStatus("validating");
    let session;
    try {
      session = await api.post("/sessions/", graph, { query: { workflow_id: editor.workflow?.id } });
    } catch (error) {
      this.#setRunStatus(null);
      if (error.status === 422 && error.errors?.length) {
        const shown = editor.showProblems(error.errors, ["body"], this.edgeOrder);
        editor.say(`The graph was not run: ${error.errors.length} problem${error.errors.length === 1 ? "" : "s"} (${shown} shown on the nodes).`, "error");
      } else {
        editor.say(`The graph was not run: ${errorText(error)}`, "error");
      }
      return;
    }
    this.sessionId = session.id;
    for (const view of editor.views.values()) view.setStatus({ state: "queued" });
    this.#setRunStatus("queued");
    try {
      await api.put(`/sessions/${encodeURIComponent(session.id)}/invoke`);
      if (this.status === "queued") editor.say("Queued. Nodes light up as they run.");
    } catch (error) {
      this.#finished("failed");
      editor.say(`Could not queue the session: ${errorText(error)}`, "error");
    }
  }

  async cancel() {
    if (!this.running) return;
    try {
      await api.delete(`/sessions/${encodeURIComponent(this.sessionId)}/invoke`);
      this.editor.say("Canceling…");
    } catch (error) {
      this.editor.say(`Could not cancel: ${errorText(error)}`, "error");
    }
  }

  #setRunStatus(status) {
    this.status = status;
    this.editor.updateToolbar();
  }

  #view(event) {
    return this.editor.views.get(event.source_node_id || event.node_id);
  }

  #node(event, changes) {
    this.#view(event)?.setStatus(changes);
  }

  #progress(event) {
    const view = this.#view(event);
    if (!view) return;
    const image = event.progress_image?.dataURL ?? view.status.progress?.image ?? null;
    view.setStatus({ state: "running", progress: { step: event.step, total: event.total_steps, image } });
  }

  #complete(event) {
    const view = this.#view(event);
    if (!view) return;
    const name = event.result?.image?.image_name;
    const images = name && !view.status.images.includes(name) ? [...view.status.images, name] : view.status.images;
    view.setStatus({ state: "completed", progress: null, images });
  }

  #finished(status) {
    // The nodes a canceled or failed run never finished go back to idle.
    for (const view of this.editor.views.values()) {
      if (view.status.state === "queued" || view.status.state === "running") view.setStatus({ state: "idle", progress: null });
    }
    this.#setRunStatus(status);
    const words = { completed: "Done.", failed: "The run failed; the node that failed says why.", canceled: "Canceled." };
    this.editor.say(words[status] ?? `Finished: ${status}.`, status === "failed" ? "error" : "info");
  }

  /** After a reconnect: ask the server how our session stands, and show that. */
  async #catchUp() {
    if (!this.running) return;
    try {
      const session = await api.get(`/sessions/${encodeURIComponent(this.sessionId)}`);
      for (const executed of session.executed ?? []) {
        const id = executed.split("#")[0];
        const result = session.results?.[executed];
        this.#complete({ source_node_id: id, result });
      }
      for (const [id, error] of Object.entries(session.errors ?? {})) {
        this.#node({ source_node_id: id.split("#")[0] }, { state: "failed", messages: [error] });
      }
      if (!ACTIVE.has(session.status) && session.status !== "pending") this.#finished(session.status);
    } catch (error) {
      console.warn("could not catch up with the running session", error);
    }
  }
}

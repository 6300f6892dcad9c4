// The workflow library (/api/v1/workflows/): the list with search, and save, save as, rename, delete, load.
// Saving sends the graph and the drawing; the server validates the graph as it does for a run, so a 422 is
// shown on the nodes exactly like one from Run, and a name already taken (ignoring case) is said in the
// name dialog, which stays open.

import { api } from "../api.js";
import { $, confirmDialog, errorText, formatDate, h } from "../dom.js";

const PAGE = 50;

export class Library {
  constructor(editor) {
    this.editor = editor;
    this.list = $("#wf-library-list");
    this.search = $("#wf-library-search");
    this.more = $("#wf-library-more");
    this.count = $("#wf-library-count");
    this.items = [];
    this.total = 0;
    this.generation = 0;
    let timer = 0;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), 200);
    });
    this.more.addEventListener("click", () => this.refresh({ append: true }));
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("[data-action]");
      const id = button?.closest("[data-workflow-id]")?.dataset.workflowId;
      if (!id) return;
      const action = button.dataset.action;
      if (action === "load-workflow") this.load(id);
      else if (action === "rename-workflow") this.rename(id);
      else if (action === "delete-workflow") this.remove(id);
    });
  }

  async refresh({ append = false } = {}) {
    const generation = ++this.generation;
    const offset = append ? this.items.length : 0;
    try {
      const page = await api.get("/workflows/", { query: { q: this.search.value.trim(), offset, limit: PAGE } });
      if (generation !== this.generation) return;
      this.items = append ? [...this.items, ...page.items] : page.items;
      this.total = page.total;
      this.render();
    } catch (error) {
      if (generation === this.generation) this.count.textContent = `Could not load the library: ${errorText(error)}`;
    }
  }

  render() {
    const current = this.editor.workflow?.id;
    this.list.replaceChildren(
      ...this.items.map((item) =>
        h(
          "li",
          { class: `wf-lib-item${item.id === current ? " current" : ""}`, dataset: { workflowId: item.id } },
          h("button", { type: "button", class: "wf-lib-open", "data-action": "load-workflow", title: item.description || `Open ${item.name}` }, item.name),
          h("span", { class: "wf-lib-meta muted" }, `${item.node_count} node${item.node_count === 1 ? "" : "s"} · ${formatDate(item.updated_at)}`),
          h(
            "span",
            { class: "wf-lib-actions" },
            h("button", { type: "button", class: "small", "data-action": "rename-workflow", "aria-label": `Rename ${item.name}` }, "Rename"),
            h("button", { type: "button", class: "small danger", "data-action": "delete-workflow", "aria-label": `Delete ${item.name}` }, "Delete"),
          ),
        ),
      ),
    );
    const query = this.search.value.trim();
    this.count.textContent = this.total
      ? `${this.total} workflow${this.total === 1 ? "" : "s"}${query ? ` matching “${query}”` : ""}`
      : query
        ? `No workflow matches “${query}”.`
        : "No saved workflows yet. Save this one with Save.";
    this.more.hidden = this.items.length >= this.total;
  }

  body(name, description) {
    const { doc } = this.editor;
    return { name, description, graph: doc.toGraph(), layout: doc.toLayout() };
  }

  /** A 422 from a save: the graph's problems go on the nodes; true when there were any. */
  #showGraphProblems(error) {
    const problems = (error.errors ?? []).filter((e) => e.loc?.[1] === "graph");
    if (!problems.length) return false;
    const shown = this.editor.showProblems(problems, ["body", "graph"], this.editor.doc.edges);
    this.editor.say(`Not saved: the graph has ${problems.length} problem${problems.length === 1 ? "" : "s"} (${shown} shown on the nodes).`, "error");
    return true;
  }

  /** Save over the open workflow, or ask for a name if there is none. */
  async save() {
    const current = this.editor.workflow;
    if (!current?.id) return this.saveAs();
    this.editor.commit("Edit");
    this.editor.clearStatus();
    try {
      const saved = await api.put(`/workflows/${encodeURIComponent(current.id)}`, this.body(current.name, current.description ?? ""));
      this.editor.savedAs(saved);
      this.editor.say(`Saved “${saved.name}”.`);
      this.refresh();
    } catch (error) {
      if (error.status === 404) {
        this.editor.say("This workflow was deleted from the library; save it under a name again.", "error");
        this.editor.savedAs(null);
      } else if (!(error.status === 422 && this.#showGraphProblems(error))) {
        this.editor.say(`Not saved: ${errorText(error)}`, "error");
      }
    }
  }

  async saveAs() {
    this.editor.commit("Edit");
    const current = this.editor.workflow;
    await askName({
      title: "Save workflow as",
      name: current?.name ? `${current.name} (copy)` : "",
      description: current?.description ?? "",
      submit: async (name, description) => {
        this.editor.clearStatus();
        try {
          const saved = await api.post("/workflows/", this.body(name, description));
          this.editor.savedAs(saved);
          this.editor.say(`Saved “${saved.name}” to the library.`);
          this.refresh();
          return null;
        } catch (error) {
          if (error.status === 422 && this.#showGraphProblems(error)) return "The graph has problems; they are shown on the nodes.";
          return errorText(error);
        }
      },
    });
  }

  async load(id) {
    try {
      const workflow = await api.get(`/workflows/${encodeURIComponent(id)}`);
      const note = this.editor.open({ graph: workflow.graph, layout: workflow.layout, workflow, label: `Open “${workflow.name}”` });
      this.editor.say(`Opened “${workflow.name}”.${note}`);
      this.render();
    } catch (error) {
      this.editor.say(`Could not open the workflow: ${errorText(error)}`, "error");
      if (error.status === 404) this.refresh();
    }
  }

  async rename(id) {
    let workflow;
    try {
      workflow = await api.get(`/workflows/${encodeURIComponent(id)}`);
    } catch (error) {
      this.editor.say(`Could not rename: ${errorText(error)}`, "error");
      return;
    }
    await askName({
      title: `Rename “${workflow.name}”`,
      name: workflow.name,
      description: workflow.description,
      submit: async (name, description) => {
        try {
          const saved = await api.put(`/workflows/${encodeURIComponent(id)}`, { name, description, graph: workflow.graph, layout: workflow.layout });
          if (this.editor.workflow?.id === id) this.editor.renamed(saved);
          this.editor.say(`Renamed to “${saved.name}”.`);
          this.refresh();
          return null;
        } catch (error) {
          return errorText(error);
        }
      },
    });
  }

  async remove(id) {
    const item = this.items.find((i) => i.id === id);
    const ok = await confirmDialog({
      title: `Delete “${item?.name ?? "this workflow"}”?`,
      message: "It leaves the library. Images it made keep their copy of the graph and its layout.",
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    try {
      await api.delete(`/workflows/${encodeURIComponent(id)}`);
      if (this.editor.workflow?.id === id) this.editor.savedAs(null);
      this.editor.say(`Deleted “${item?.name ?? id}” from the library.`);
    } catch (error) {
      this.editor.say(`Could not delete: ${errorText(error)}`, "error");
    }
    this.refresh();
  }
}

/**
 * The name dialog: submit(name, description) resolves to null when done, or to a message to show (the
 * dialog then stays open, so nothing typed is lost).
 */
function askName({ title, name, description, submit }) {
  const dialog = $("#wf-name-dialog");
  const form = $("#wf-name-form");
  const nameInput = $("#wf-name-input");
  const descriptionInput = $("#wf-description-input");
  const error = $("#wf-name-error");
  $("#wf-name-title").textContent = title;
  nameInput.value = name;
  descriptionInput.value = description ?? "";
  error.textContent = "";
  return new Promise((resolve) => {
    const onSubmit = async (event) => {
      event.preventDefault();
      if (event.submitter?.value === "cancel") {
        dialog.close();
        return;
      }
      const chosen = nameInput.value.trim();
      if (!chosen) {
        error.textContent = "Give the workflow a name.";
        nameInput.focus();
        return;
      }
      const problem = await submit(chosen, descriptionInput.value);
      if (problem) {
        error.textContent = problem;
        nameInput.focus();
        return;
      }
      dialog.close();
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener(
      "close",
      () => {
        form.removeEventListener("submit", onSubmit);
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
    nameInput.select();
  });
}

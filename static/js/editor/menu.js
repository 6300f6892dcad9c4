// The searchable add-node menu: from the toolbar, a double-click on the canvas, Shift+A, or a connection
// dropped into empty space (then it lists only the node types that can take it). Type to filter, arrows to
// move, Enter to add, Escape to close.

import { h } from "../dom.js";

let counter = 0;

function score(spec, words) {
  if (!words.length) return 1;
  const title = spec.title.toLowerCase();
  const haystack = `${title} ${spec.type} ${spec.category} ${spec.description ?? ""}`.toLowerCase();
  if (!words.every((word) => haystack.includes(word))) return 0;
  const first = words[0];
  if (spec.type === first || title === first) return 4;
  if (spec.type.startsWith(first) || title.startsWith(first)) return 3;
  return title.includes(first) || spec.type.includes(first) ? 2 : 1;
}

export class NodeMenu {
  constructor(container) {
    this.container = container;
    this.listId = `wf-menu-list-${++counter}`;
    this.search = h("input", {
      type: "search",
      class: "wf-menu-search",
      placeholder: "Search node types…",
      "aria-label": "Search node types",
      role: "combobox",
      "aria-expanded": "true",
      "aria-controls": this.listId,
      autocomplete: "off",
      spellcheck: "false",
    });
    this.heading = h("p", { class: "wf-menu-title" });
    this.list = h("ul", { id: this.listId, class: "wf-menu-list", role: "listbox", "aria-label": "Node types" });
    this.element = h("div", { class: "wf-menu", role: "dialog", "aria-label": "Add a node", hidden: true }, this.heading, this.search, this.list);
    container.append(this.element);
    this.options = [];
    this.active = -1;
    this.request = null;
    this.search.addEventListener("input", () => this.#fill());
    this.search.addEventListener("keydown", (event) => this.#key(event));
    this.list.addEventListener("pointerdown", (event) => event.preventDefault()); // keep focus in the search
    this.list.addEventListener("click", (event) => {
      const option = event.target.closest("[data-add-type]");
      if (option) this.#pick(option.dataset.addType);
    });
    this.list.addEventListener("pointermove", (event) => {
      const option = event.target.closest("[data-add-type]");
      if (option) this.#activate(this.options.indexOf(option));
    });
    document.addEventListener("pointerdown", (event) => {
      if (!this.element.hidden && !this.element.contains(event.target)) this.close();
    });
  }

  get isOpen() {
    return !this.element.hidden;
  }

  /**
   * specs: the node types to offer; client: {x, y} where to show it; title: what it is for;
   * onPick(type), onClose() when it closes without a pick.
   */
  open({ specs, client, title = "Add a node", onPick, onClose }) {
    if (this.isOpen) this.close();
    this.request = { specs, onPick, onClose };
    this.heading.textContent = title;
    this.search.value = "";
    this.element.hidden = false;
    this.#fill();
    const box = this.container.getBoundingClientRect();
    const width = this.element.offsetWidth;
    const height = this.element.offsetHeight;
    const left = Math.max(4, Math.min(client.x - box.left, box.width - width - 4));
    const top = Math.max(4, Math.min(client.y - box.top, box.height - height - 4));
    this.element.style.left = `${left}px`;
    this.element.style.top = `${top}px`;
    this.search.focus();
  }

  close() {
    if (!this.isOpen) return;
    const request = this.request;
    this.element.hidden = true;
    this.request = null;
    request?.onClose?.();
  }

  #fill() {
    const words = this.search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const ranked = this.request.specs
      .map((spec, index) => ({ spec, index, score: score(spec, words) }))
      .filter((item) => item.score > 0)
      .sort((a, b) => (words.length ? b.score - a.score : 0) || a.spec.category.localeCompare(b.spec.category) || a.index - b.index);
    const items = [];
    this.options = [];
    let category = null;
    for (const { spec } of ranked) {
      if (!words.length && spec.category !== category) {
        category = spec.category;
        items.push(h("li", { class: "wf-menu-group", role: "presentation" }, category));
      }
      const option = h(
        "li",
        {
          id: `${this.listId}-${spec.type}`,
          role: "option",
          class: "wf-menu-option",
          dataset: { addType: spec.type },
          "aria-selected": "false",
          title: spec.description || null,
        },
        h("span", {}, spec.title),
        h("small", {}, spec.type),
      );
      this.options.push(option);
      items.push(option);
    }
    if (!this.options.length) items.push(h("li", { class: "wf-menu-empty", role: "presentation" }, "No node type matches."));
    this.list.replaceChildren(...items);
    this.#activate(this.options.length ? 0 : -1);
  }

  #activate(index) {
    this.options[this.active]?.setAttribute("aria-selected", "false");
    this.active = index;
    const option = this.options[index];
    if (!option) {
      this.search.removeAttribute("aria-activedescendant");
      return;
    }
    option.setAttribute("aria-selected", "true");
    this.search.setAttribute("aria-activedescendant", option.id);
    option.scrollIntoView({ block: "nearest" });
  }

  #key(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      const count = this.options.length;
      if (count) this.#activate((this.active + step + count) % count);
    } else if (event.key === "Enter") {
      event.preventDefault();
      const option = this.options[this.active];
      if (option) this.#pick(option.dataset.addType);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.close();
    }
  }

  #pick(type) {
    const request = this.request;
    this.element.hidden = true;
    this.request = null;
    request?.onPick(type);
  }
}

// A searchable picker (the ARIA 1.2 combobox pattern): a text input and, under it, a listbox of the items
// whose name contains what was typed. Arrow keys move, Enter or a click picks, Escape closes. Used for LoRAs
// and embeddings, where a long list of files would make a <select> hard to use.

import { h } from "./dom.js";

/**
 * input: the <input role="combobox">; listbox: its <ul role="listbox">.
 * items(): [{value, label, detail?}], asked afresh each time the list opens (models come and go).
 * onPick(item): called with the picked item; the input is then cleared.
 * empty(): the text shown when nothing is offered at all (no items before any filtering).
 */
export function combobox({ input, listbox, items, onPick, empty }) {
  let shown = []; // the items in the open list, in order
  let active = -1; // index into `shown` of the highlighted one

  const optionId = (index) => `${listbox.id}-${index}`;

  function highlight(index) {
    active = index;
    for (const [i, option] of [...listbox.querySelectorAll("[role=option]")].entries()) {
      option.setAttribute("aria-selected", String(i === active));
      if (i === active) option.scrollIntoView({ block: "nearest" });
    }
    if (active >= 0) input.setAttribute("aria-activedescendant", optionId(active));
    else input.removeAttribute("aria-activedescendant");
  }

  function open() {
    const all = items();
    const query = input.value.trim().toLowerCase();
    shown = query ? all.filter((item) => item.label.toLowerCase().includes(query)) : all;
    const options = shown.map((item, index) =>
      h(
        "li",
        { role: "option", id: optionId(index), "aria-selected": "false", dataset: { value: item.value } },
        h("span", { class: "combobox-label" }, item.label),
        item.detail ? h("span", { class: "combobox-detail" }, item.detail) : null,
      ),
    );
    const note = all.length ? `Nothing matches “${input.value.trim()}”.` : empty();
    listbox.replaceChildren(...(options.length ? options : [h("li", { class: "combobox-empty", role: "presentation" }, note)]));
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
    highlight(shown.length ? 0 : -1);
  }

  function close() {
    listbox.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  }

  function pick(index) {
    const item = shown[index];
    if (!item) return;
    input.value = "";
    close();
    onPick(item);
  }

  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", listbox.id);
  input.setAttribute("aria-expanded", "false");
  input.addEventListener("input", open);
  input.addEventListener("focus", open);
  input.addEventListener("blur", close);
  input.addEventListener("keydown", (event) => {
    const isOpen = !listbox.hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!isOpen) return open();
      if (!shown.length) return;
      const step = event.key === "ArrowDown" ? 1 : -1;
      highlight((active + step + shown.length) % shown.length);
    } else if (event.key === "Enter" && isOpen && active >= 0) {
      // Enter picks; it must not also submit the form.
      event.preventDefault();
      pick(active);
    } else if (event.key === "Escape" && isOpen) {
      event.preventDefault();
      event.stopPropagation(); // inside a dialog, the first Escape closes the list only
      close();
    }
  });
  // Pressing on the list must not take the focus from the input (its blur would close the list first).
  listbox.addEventListener("pointerdown", (event) => event.preventDefault());
  listbox.addEventListener("click", (event) => {
    const option = event.target.closest("[role=option]");
    if (option) pick([...listbox.querySelectorAll("[role=option]")].indexOf(option));
  });
  return { open, close };
}

// DOM helpers: element building, notices, and the one confirm dialog every page shares.

export const $ = (selector, root = document) => root.querySelector(selector);

// Properties that must be set on the element (not as attributes), after its children exist.
const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "hidden", "indeterminate"]);

/** h("button", {class: "x", onclick: fn, "aria-label": "Close"}, "✕") */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  const late = [];
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null) continue;
    if (PROPERTIES.has(key)) late.push([key, value]);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === false) continue;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
  for (const [key, value] of late) el[key] = value;
  return el;
}

const notices = () => document.getElementById("notices");

/** A dismissable message at the top of the page; errors stay until closed, the rest fade. */
export function notify(message, { kind = "info", timeout } = {}) {
  const close = () => item.remove();
  const item = h(
    "div",
    { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message),
    h("button", { type: "button", class: "icon-button", "aria-label": "Dismiss", onclick: close }, "✕"),
  );
  notices().append(item);
  const ms = timeout ?? (kind === "error" ? 0 : 4000);
  if (ms > 0) setTimeout(close, ms);
  return item;
}

/** The text a person should read for any thrown error (ApiError carries the server's `detail`). */
export function errorText(error) {
  if (error?.detail) return error.detail;
  if (error instanceof TypeError) return "The server could not be reached. Is it running?";
  return error?.message ?? String(error);
}

/**
 * Ask a yes/no question in a modal dialog. Enter confirms, Escape cancels. `extra` is an optional element
 * (e.g. a checkbox) shown under the message; resolves to true or false.
 */
export function confirmDialog({ title, message, confirmLabel = "OK", danger = false, extra = null }) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-message").textContent = message;
  const slot = document.getElementById("confirm-extra");
  slot.replaceChildren(...(extra ? [extra] : []));
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel;
  ok.classList.toggle("danger", danger);
  ok.classList.toggle("primary", !danger);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    ok.focus();
  });
}

export function formatCount(n) {
  return new Intl.NumberFormat().format(n);
}

export function formatDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

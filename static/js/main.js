// Start-up: the access token (if the server wants one), the public config, the pages, the hash router, and
// the WebSocket whose events every page listens to through the bus.

import { api, getToken, setTokenPrompt } from "./api.js";
import { $, errorText, notify } from "./dom.js";
import { initEditor } from "./editor/editor.js";
import { initGallery } from "./gallery.js";
import { initGenerate } from "./generate.js";
import { initModels } from "./models.js";
import { bus, store } from "./state.js";
import { initViewer } from "./viewer.js";
import { initWorkers } from "./workers.js";
import { LiveSocket } from "./ws.js";

const PAGES = ["generate", "gallery", "workflow", "models"];
const CONNECTION_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

/** Ask for the token in a modal dialog; resolves to the token, or null if the person closes it. */
function askForToken(message) {
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  $("#token-message").textContent = message
    ? `${message}. Enter the right token; it is kept in this browser.`
    : "This server needs an access token (the one it was started with). It is kept in this browser.";
  input.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null),
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

function showPage(fromNavigation) {
  const name = location.hash.replace(/^#\/?/, "") || "generate";
  const page = PAGES.includes(name) ? name : "generate";
  for (const other of PAGES) $(`#page-${other}`).hidden = other !== page;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · imagegraph`;
  document.body.dataset.page = page; // the Workflow page takes the whole width
  // Move focus to the page's heading on navigation, so keyboard and screen-reader users land on it.
  if (fromNavigation) $(`#page-${page} h1`)?.focus({ preventScroll: true });
  bus.emit("page-shown", page);
}

function setConnection(state) {
  const el = $("#connection");
  el.dataset.state = state;
  el.textContent = CONNECTION_TEXT[state] ?? state;
  bus.emit("connection", state);
}

async function boot() {
  setTokenPrompt(askForToken);
  showPage(false);
  window.addEventListener("hashchange", () => showPage(true));
  try {
    store.config = await api.get("/app/config");
  } catch (error) {
    notify(`The server did not answer: ${errorText(error)}. Reload the page to try again.`, { kind: "error" });
    setConnection("reconnecting");
    return;
  }
  initViewer();
  initGallery();
  initGenerate();
  initModels();
  initWorkers();
  const editor = initEditor();
  // Pages load their lists once the subscription is in place (nothing slips between list and events). If the
  // socket is slow to come up, they load anyway; the socket's own first "ready" then only catches up.
  let loaded = false;
  const ready = (info) => {
    bus.emit("ready", loaded && info.first ? { first: false, resync: false } : info);
    loaded = true;
  };
  const socket = new LiveSocket({ onEvent: (event) => bus.emit(event.type, event), onState: setConnection, onReady: ready });
  socket.start();
  setTimeout(() => loaded || ready({ first: true, resync: false }), 3000);
  // Handy for people poking at the page from devtools, and for the browser tests.
  window.imagegraph = { socket, store, bus, editor, hasToken: () => Boolean(getToken()) };
  window.addEventListener("pagehide", () => socket.stop());
  // Back from the back/forward cache: reconnect, and `since` replays what happened meanwhile.
  window.addEventListener("pageshow", (event) => event.persisted && socket.start());
}

boot();

// The Gallery page: thumbnails newest first, fetched a page at a time as the end of the grid scrolls into
// view; live changes (image_created / image_updated / image_deleted) touch one tile each, never the whole
// grid; filters; upload by file picker or drag-and-drop. The grid is one tab stop: arrow keys move inside it.

import { request, api, withToken } from "./api.js";
import { $, errorText, formatCount, formatDate, h, notify } from "./dom.js";
import { bus, store } from "./state.js";

const PAGE_SIZE = 100;
const THUMB_MAX = 256; // the server's thumbnails: longest side ≤ 256, aspect kept

const tiles = new Map(); // image_name → {image, el}
const filter = { category: "", starred: false };
let nextOffset = 0; // the server-side offset of the next page, kept right as images come and go
let total = 0;
let done = false;
let loading = false;
let generation = 0; // bumps on every reset, so a page that arrives for an old filter is dropped
let current = null; // the tile that holds the grid's one tab stop

const grid = () => $("#gallery-grid");

export function matches(image) {
  if (image.is_intermediate) return false;
  if (filter.category && image.image_category !== filter.category) return false;
  return !filter.starred || image.starred;
}

function thumbSize(image) {
  const scale = Math.min(1, THUMB_MAX / Math.max(image.width, image.height, 1));
  return [Math.max(1, Math.round(image.width * scale)), Math.max(1, Math.round(image.height * scale))];
}

function tileLabel(image) {
  const star = image.starred ? ", starred" : "";
  return `${image.width}×${image.height} image from ${formatDate(image.created_at)}${star}`;
}

function buildTile(image) {
  const [width, height] = thumbSize(image);
  const button = h(
    "button",
    { type: "button", class: "thumb", tabindex: "-1", "aria-label": tileLabel(image) },
    h("img", { src: withToken(image.thumbnail_url), alt: "", width, height, loading: "lazy", decoding: "async" }),
  );
  return h(
    "li",
    { class: `tile${image.starred ? " starred" : ""}`, dataset: { name: image.image_name } },
    button,
    h("span", { class: "star-badge", "aria-hidden": "true" }, "★"),
  );
}

function refreshTile(entry, image) {
  entry.image = image;
  entry.el.classList.toggle("starred", image.starred);
  entry.el.querySelector("button").setAttribute("aria-label", tileLabel(image));
}

function renderTotal() {
  $("#gallery-total").textContent = `${formatCount(total)} image${total === 1 ? "" : "s"}`;
  $("#nav-image-count").textContent = filter.category || filter.starred ? "" : formatCount(total);
  $("#gallery-empty").hidden = tiles.size > 0 || loading;
}

function setTabStop(el) {
  if (current && current !== el) current.querySelector("button").tabIndex = -1;
  current = el;
  if (el) el.querySelector("button").tabIndex = 0;
}

function ensureTabStop() {
  if (!current || !current.isConnected) setTabStop(grid().firstElementChild);
}

/** Put a tile where newest-first order wants it; images older than everything loaded wait for their page. */
function insert(image) {
  const entry = { image, el: buildTile(image) };
  const first = grid().firstElementChild;
  if (!first || image.created_at >= tiles.get(first.dataset.name).image.created_at) {
    grid().prepend(entry.el);
  } else {
    let before = null;
    for (const el of grid().children) {
      if (tiles.get(el.dataset.name).image.created_at < image.created_at) {
        before = el;
        break;
      }
    }
    if (!before && !done) return false;
    grid().insertBefore(entry.el, before);
  }
  tiles.set(image.image_name, entry);
  return true;
}

function remove(name) {
  const entry = tiles.get(name);
  if (!entry) return;
  const hadFocus = entry.el.contains(document.activeElement);
  const neighbour = entry.el.nextElementSibling ?? entry.el.previousElementSibling;
  if (current === entry.el) setTabStop(neighbour);
  entry.el.remove();
  tiles.delete(name);
  if (hadFocus) neighbour?.querySelector("button").focus();
  ensureTabStop();
}

// ---- paging ---------------------------------------------------------------------------------------------

function query(offset, limit) {
  return {
    categories: filter.category || undefined,
    starred: filter.starred ? true : undefined,
    is_intermediate: false,
    offset,
    limit,
  };
}

async function loadMore() {
  // Nothing loads before the first reload(), which waits for the WebSocket subscription to be in place.
  if (loading || done || !generation) return;
  loading = true;
  const mine = generation;
  $("#gallery-loading").hidden = false;
  try {
    const page = await api.get("/images/", { query: query(nextOffset, PAGE_SIZE) });
    if (mine !== generation) return;
    const fragment = document.createDocumentFragment();
    for (const image of page.items) {
      if (tiles.has(image.image_name)) continue; // shifted into this page by a newer image
      const entry = { image, el: buildTile(image) };
      tiles.set(image.image_name, entry);
      fragment.append(entry.el);
    }
    grid().append(fragment);
    nextOffset += page.items.length;
    total = page.total;
    done = page.items.length === 0 || nextOffset >= page.total;
    ensureTabStop();
  } catch (error) {
    if (mine === generation) notify(`Could not load images: ${errorText(error)}`, { kind: "error" });
    done = true; // stop the observer from hammering a failing server; a filter change or resync retries
  } finally {
    if (mine === generation) {
      loading = false;
      $("#gallery-loading").hidden = true;
      renderTotal();
      // The end of the grid may still be in view (a tall window, a short page): keep filling. Measured now,
      // after this page's tiles are in, not from the observer's last report, which predates them.
      if (!done) requestAnimationFrame(() => nearEnd() && loadMore());
    }
  }
}

export function reload() {
  generation += 1;
  tiles.clear();
  grid().replaceChildren();
  current = null;
  nextOffset = 0;
  total = 0;
  done = false;
  loading = false;
  return loadMore();
}

/** After a reconnect: add whatever arrived while we were away, without losing the scroll position. */
async function catchUp() {
  try {
    const page = await api.get("/images/", { query: query(0, PAGE_SIZE) });
    const unknown = page.items.filter((image) => !tiles.has(image.image_name));
    if (unknown.length === page.items.length && tiles.size > 0 && page.items.length === PAGE_SIZE) {
      await reload(); // too much happened: start over
      return;
    }
    for (const image of unknown.reverse()) {
      if (insert(image)) nextOffset += 1;
    }
    total = page.total;
    ensureTabStop();
    renderTotal();
  } catch (error) {
    console.warn("could not catch up on images", error);
  }
}

const LOOKAHEAD_PX = 800; // start fetching the next page this far before the end of the grid comes into view

function nearEnd() {
  if ($("#page-gallery").hidden) return false;
  return $("#gallery-sentinel").getBoundingClientRect().top < window.innerHeight + LOOKAHEAD_PX;
}

function observe() {
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting) && !$("#page-gallery").hidden) loadMore();
    },
    { rootMargin: `${LOOKAHEAD_PX}px 0px` },
  );
  observer.observe($("#gallery-sentinel"));
}

// ---- live changes -----------------------------------------------------------------------------------------

function onCreated(image) {
  if (tiles.has(image.image_name)) {
    refreshTile(tiles.get(image.image_name), image);
    return;
  }
  if (!matches(image)) return;
  if (insert(image)) nextOffset += 1;
  total += 1;
  ensureTabStop();
  renderTotal();
}

let totalTimer = null;

/** Ask the server for the count when an event alone cannot tell (an image we never loaded changed). */
function refreshTotalSoon() {
  clearTimeout(totalTimer);
  const mine = generation;
  totalTimer = setTimeout(async () => {
    try {
      const page = await api.get("/images/", { query: query(0, 1) });
      if (mine !== generation) return;
      total = page.total;
      renderTotal();
    } catch (error) {
      console.warn("could not count images", error);
    }
  }, 300);
}

function onUpdated(image) {
  const entry = tiles.get(image.image_name);
  if (entry && matches(image)) refreshTile(entry, image);
  else if (entry) {
    remove(image.image_name);
    nextOffset -= 1;
    total -= 1;
  } else if (matches(image)) {
    // New to this filter (starred just now), or simply further down than we have loaded: only the server
    // knows which, so it places the tile if its spot is loaded and lets the server count.
    if (insert(image)) nextOffset += 1;
    refreshTotalSoon();
  }
  ensureTabStop();
  renderTotal();
}

function onDeleted(name) {
  if (!tiles.has(name)) {
    refreshTotalSoon(); // one we had not loaded, or one the filter hides: the count may still change
    return;
  }
  remove(name);
  nextOffset -= 1;
  total -= 1;
  renderTotal();
}

/** The image `step` places after (1) or before (-1) `name` in the grid, for the viewer's arrows. */
export function neighbour(name, step) {
  const el = tiles.get(name)?.el;
  const next = step > 0 ? el?.nextElementSibling : el?.previousElementSibling;
  return next ? tiles.get(next.dataset.name).image : null;
}

export function knownImage(name) {
  return tiles.get(name)?.image ?? null;
}

// ---- keyboard ---------------------------------------------------------------------------------------------

function columns() {
  const children = grid().children;
  const top = children[0]?.offsetTop;
  let count = 0;
  while (count < children.length && children[count].offsetTop === top) count++;
  return Math.max(1, count);
}

function onKeydown(event) {
  const tile = event.target.closest(".tile");
  if (!tile) return;
  const all = grid().children;
  const index = Array.prototype.indexOf.call(all, tile);
  const perRow = columns();
  const moves = {
    ArrowRight: 1,
    ArrowLeft: -1,
    ArrowDown: perRow,
    ArrowUp: -perRow,
    PageDown: perRow * 4,
    PageUp: -perRow * 4,
    Home: -index,
    End: all.length - 1 - index,
  };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const target = all[Math.max(0, Math.min(all.length - 1, index + moves[event.key]))];
  setTabStop(target);
  target.querySelector("button").focus();
  target.scrollIntoView({ block: "nearest" });
}

// ---- upload ---------------------------------------------------------------------------------------------

async function upload(files) {
  const list = [...files];
  if (!list.length) return;
  const status = $("#gallery-upload-status");
  const limit = store.config?.upload_max_bytes;
  let uploaded = 0;
  for (const [i, file] of list.entries()) {
    status.textContent = `Uploading ${i + 1} of ${list.length}: ${file.name}…`;
    if (limit && file.size > limit) {
      notify(`${file.name}: ${Math.ceil(file.size / 2 ** 20)} MiB is over the server's ${Math.floor(limit / 2 ** 20)} MiB upload limit.`, { kind: "error" });
      continue;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const image = await request("POST", "/images/upload", { form, query: { image_category: "user" } });
      onCreated(image); // the image_created event may come first or later; either way one tile
      uploaded += 1;
    } catch (error) {
      notify(`${file.name}: ${errorText(error)}`, { kind: "error" });
    }
  }
  status.textContent = `Uploaded ${uploaded} of ${list.length} file${list.length === 1 ? "" : "s"}.`;
}

function setUpDrop() {
  const zone = $("#page-gallery");
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
    upload(event.dataTransfer.files);
  });
}

// ---- wiring ------------------------------------------------------------------------------------------------

export function initGallery() {
  const category = $("#gallery-category");
  const starred = $("#gallery-starred");
  category.addEventListener("change", () => {
    filter.category = category.value;
    reload();
  });
  starred.addEventListener("change", () => {
    filter.starred = starred.checked;
    reload();
  });
  const input = $("#gallery-upload-input");
  input.addEventListener("change", async () => {
    await upload(input.files);
    input.value = "";
  });
  setUpDrop();
  grid().addEventListener("keydown", onKeydown);
  grid().addEventListener("focusin", (event) => {
    const tile = event.target.closest(".tile");
    if (tile) setTabStop(tile);
  });
  grid().addEventListener("click", (event) => {
    const tile = event.target.closest(".tile");
    if (tile) bus.emit("open-image", tiles.get(tile.dataset.name).image);
  });
  observe();

  bus.on("image_created", (event) => onCreated(event.image));
  bus.on("image_updated", (event) => onUpdated(event.image));
  bus.on("image_deleted", (event) => onDeleted(event.image_name));
  bus.on("page-shown", (page) => {
    if (page === "gallery" && nearEnd()) loadMore();
  });
  bus.on("ready", ({ first, resync }) => {
    if (first) reload();
    else if (resync) reload();
    else catchUp();
  });
}

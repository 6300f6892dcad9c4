// The WebSocket to /ws: connect, subscribe to everything, reconnect with `since` after a drop, and tell the
// pages when what they show may be stale (resync_required, or a server that restarted and counts anew).

import { getToken } from "./api.js";

const PING_EVERY_MS = 25_000;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export class LiveSocket {
  /**
   * onEvent(event): every server event, in order, each once.
   * onState("connecting" | "live" | "reconnecting"): for the header's indicator.
   * onReady({first, resync}): after each (re)subscription is in place; `resync` true when events were lost.
   */
  constructor({ onEvent, onState, onReady }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onReady = onReady;
    this.lastSeq = 0;
    this.connections = 0;
    this.failures = 0;
    this.ws = null;
    this.pingTimer = null;
    this.retryTimer = null;
    this.awaitingReady = false;
    this.lostEvents = false;
    this.states = []; // every state shown, in order (the reconnect tests read it)
  }

  #setState(state) {
    this.states.push(state);
    this.onState(state);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = getToken();
    return `${scheme}//${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  }

  start() {
    this.#setState(this.connections ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("open", () => this.#opened(ws));
    ws.addEventListener("message", (message) => this.#received(ws, message));
    ws.addEventListener("close", () => this.#closed(ws));
    // An "error" is always followed by "close"; the reconnect happens there.
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  /** Drop the connection now (the page is going away, or a test wants to see the reconnect). */
  stop() {
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }

  #opened(ws) {
    if (ws !== this.ws) return;
    const first = this.connections === 0;
    this.connections += 1;
    // Replay what happened while we were away; on the first connection there is nothing to replay, the
    // pages load their lists right after the subscription is in place.
    const subscribe = { type: "subscribe", sessions: "*" };
    if (!first) subscribe.since = this.lastSeq;
    this.awaitingReady = true;
    this.lostEvents = false;
    ws.send(JSON.stringify(subscribe));
    // The server handles messages in order: its pong means the subscription (and any replay) is done.
    ws.send(JSON.stringify({ type: "ping" }));
    this.readyFirst = first;
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
  }

  #received(ws, message) {
    if (ws !== this.ws) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      console.warn("ignored a WebSocket frame that is not JSON");
      return;
    }
    if (event.type === "pong") {
      // A pong carries the seq of the last event published before it: everything up to there that we cover
      // has been sent to us, so a later `since` starts from it (and never replays the whole ring).
      if (typeof event.seq === "number" && event.seq > this.lastSeq) this.lastSeq = event.seq;
      if (this.awaitingReady) {
        this.awaitingReady = false;
        this.failures = 0;
        this.#setState("live");
        this.onReady({ first: this.readyFirst, resync: this.lostEvents });
      }
      return;
    }
    if (event.type === "resync_required") {
      // The events since our last seq are gone (or this is a new run of the server): start counting from
      // where the server is now, and have the pages reload.
      this.lostEvents = true;
      if (typeof event.seq === "number") this.lastSeq = event.seq;
      return;
    }
    if (typeof event.seq === "number" && event.seq > 0) {
      // The server never sends a seq twice in one run: a lower one means it restarted and counts from the
      // start again, so what happened in between is unknown and the pages reload. (A gap above lastSeq is
      // fine: progress events may be coalesced.)
      if (event.seq <= this.lastSeq) this.lostEvents = true;
      this.lastSeq = event.seq;
    }
    this.onEvent(event);
    if (this.lostEvents && !this.awaitingReady) {
      // A restart noticed on a live connection (after the ready pong): resync now.
      this.lostEvents = false;
      this.onReady({ first: false, resync: true });
    }
  }

  #closed(ws) {
    if (ws !== this.ws) return;
    clearInterval(this.pingTimer);
    this.ws = null;
    this.failures += 1;
    this.#setState("reconnecting");
    const base = BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)];
    this.retryTimer = setTimeout(() => this.start(), base + Math.random() * base * 0.5);
  }
}

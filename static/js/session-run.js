// Small graphs the page runs for itself (a ControlNet's edge-map preview, an upscale from the viewer): queue
// the graph as a session and wait for it to end. The WebSocket says when (session_complete); after a
// reconnect that may have lost that event, the session is asked for instead.

import { api } from "./api.js";
import { bus } from "./state.js";

const TERMINAL = new Set(["completed", "failed", "canceled"]);
const waiting = new Map(); // session id → {finish(status), onEvent(event)}
let listening = false;

function listen() {
  if (listening) return;
  listening = true;
  const forward = (event) => waiting.get(event.session_id)?.onEvent(event);
  for (const type of ["session_started", "invocation_started", "generator_progress", "invocation_error"]) bus.on(type, forward);
  bus.on("session_complete", (event) => waiting.get(event.session_id)?.finish(event.status));
  bus.on("session_canceled", (event) => waiting.get(event.session_id)?.finish("canceled"));
  bus.on("ready", async ({ first }) => {
    if (first) return;
    for (const [id, entry] of waiting) {
      try {
        const session = await api.get(`/sessions/${encodeURIComponent(id)}`);
        if (TERMINAL.has(session.status)) entry.finish(session.status);
      } catch (error) {
        console.warn("could not ask how a session ended", error);
      }
    }
  });
}

/**
 * POST /sessions/ and PUT .../invoke `graph`, then resolve to the finished Session (GET /sessions/{id}: its
 * `status`, `results` and `errors`). `onEvent` sees the session's events while it runs (progress, errors).
 * A 422 or a failed invoke rejects with the ApiError.
 */
export async function runGraph(graph, { onEvent = () => {} } = {}) {
  listen();
  const session = await api.post("/sessions/", graph);
  const id = session.id;
  // Registered before the invoke: the session cannot end before we listen for its end.
  const ended = new Promise((resolve) => {
    waiting.set(id, { finish: resolve, onEvent });
  });
  try {
    await api.put(`/sessions/${encodeURIComponent(id)}/invoke`);
    await ended;
  } finally {
    waiting.delete(id);
  }
  return api.get(`/sessions/${encodeURIComponent(id)}`);
}

/** The image a node of a finished session made ({image_name} of its result), or null. */
export function resultImage(session, nodeId) {
  return session.results?.[nodeId]?.image?.image_name ?? null;
}

/** Why a finished session did not complete, in words. */
export function sessionProblem(session) {
  const errors = Object.entries(session.errors ?? {}).map(([node, error]) => `${node}: ${error}`);
  if (errors.length) return errors.join(" ");
  return session.status === "canceled" ? "it was canceled" : `it ended ${session.status}`;
}

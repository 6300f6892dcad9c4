// A tiny event bus and the few pieces of state several pages read. Pages subscribe to server events by type
// (`bus.on("image_created", fn)`) and to UI events ("ready", "connection", "use-settings", "models-loaded", ...).

export class Emitter {
  #handlers = new Map();

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.#handlers.get(type)?.delete(handler);
  }

  emit(type, detail) {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(detail);
      } catch (error) {
        // One broken handler must not stop the others (or the WebSocket loop that called us).
        console.warn(`handler for "${type}" failed`, error);
      }
    }
  }
}

export const bus = new Emitter();

export const store = {
  config: null, // GET /app/config
  models: [], // every ModelConfig, as GET /models/ answers
  queue: { running: null, pending: [] },
};

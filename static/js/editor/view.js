// The canvas and how it is viewed: pan and zoom (wheel, pinch, drag on the background, keys), fit to view,
// box select, and the conversions between screen and canvas coordinates. Everything on the canvas lives in
// one "world" element moved by a single CSS transform, so panning and zooming never touch the nodes.

const MIN_ZOOM = 0.15;
const MAX_ZOOM = 2.5;
const CLICK_SLOP = 4; // pixels a press may wander and still be a click

export class View {
  /**
   * canvas: the element that receives input; world: the transformed element inside it.
   * handlers: {onBackgroundClick(event), onDoubleClick(worldPoint, event), onMarquee(rect, additive, done),
   *   onChange()}
   */
  constructor(canvas, world, marquee, handlers) {
    this.canvas = canvas;
    this.world = world;
    this.marquee = marquee;
    this.handlers = handlers;
    this.x = 0;
    this.y = 0;
    this.k = 1;
    this.pointers = new Map(); // touch and pen pointers on the background, for pinch
    this.gesture = null;
    canvas.addEventListener("wheel", (event) => this.#wheel(event), { passive: false });
    canvas.addEventListener("pointerdown", (event) => this.#down(event));
    canvas.addEventListener("pointermove", (event) => this.#move(event));
    canvas.addEventListener("pointerup", (event) => this.#up(event));
    canvas.addEventListener("pointercancel", (event) => this.#up(event, true));
    canvas.addEventListener("dblclick", (event) => {
      if (this.isBackground(event.target)) handlers.onDoubleClick(this.toWorld(event.clientX, event.clientY), event);
    });
    this.#render();
  }

  /** The background: the canvas itself, the world and the edge layer, not a node, port or edge. */
  isBackground(target) {
    return target === this.canvas || target === this.world || target.classList?.contains("wf-background");
  }

  apply() {
    this.#render();
    this.handlers.onChange?.();
  }

  #render() {
    this.world.style.transform = `translate(${this.x}px, ${this.y}px) scale(${this.k})`;
    // The dot grid moves and scales with the canvas, down to 40 %; further out it would be thousands of dots
    // to paint per frame. Plain properties, not custom ones: a custom property changed here would be
    // inherited by every node and restyle them all on every pan.
    const style = this.canvas.style;
    style.backgroundSize = `${24 * this.k}px ${24 * this.k}px`;
    style.backgroundPosition = `${this.x}px ${this.y}px`;
    this.canvas.classList.toggle("wf-far", this.k < 0.4);
  }

  toWorld(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: (clientX - rect.left - this.x) / this.k, y: (clientY - rect.top - this.y) / this.k };
  }

  /** The canvas point at the centre of what is on screen. */
  centre() {
    const rect = this.canvas.getBoundingClientRect();
    return this.toWorld(rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  /** The part of the canvas on screen, in canvas units. */
  visibleRect() {
    const rect = this.canvas.getBoundingClientRect();
    const a = this.toWorld(rect.left, rect.top);
    const b = this.toWorld(rect.right, rect.bottom);
    return { x: a.x, y: a.y, width: b.x - a.x, height: b.y - a.y };
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  /** Zoom by `factor` keeping the canvas point under (clientX, clientY) where it is. */
  zoomAt(factor, clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const cx = clientX ?? rect.left + rect.width / 2;
    const cy = clientY ?? rect.top + rect.height / 2;
    const k = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.k * factor));
    const px = cx - rect.left;
    const py = cy - rect.top;
    this.x = px - ((px - this.x) * k) / this.k;
    this.y = py - ((py - this.y) * k) / this.k;
    this.k = k;
    this.apply();
  }

  setZoom(k) {
    this.zoomAt(k / this.k);
  }

  /** Show all of `bounds` ({x, y, width, height} in canvas units), at most at 100%. */
  fit(bounds, padding = 40) {
    const rect = this.canvas.getBoundingClientRect();
    if (!bounds || bounds.width <= 0 || rect.width <= 0) return;
    const k = Math.min(1, (rect.width - 2 * padding) / bounds.width, (rect.height - 2 * padding) / bounds.height);
    this.k = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, k));
    this.x = (rect.width - bounds.width * this.k) / 2 - bounds.x * this.k;
    this.y = (rect.height - bounds.height * this.k) / 2 - bounds.y * this.k;
    this.apply();
  }

  state() {
    return { x: this.x, y: this.y, k: this.k };
  }

  setState({ x, y, k }) {
    if (![x, y, k].every(Number.isFinite)) return;
    Object.assign(this, { x, y, k: Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, k)) });
    this.apply();
  }

  #wheel(event) {
    // Inside a scrolled field (a long prompt), the wheel scrolls the field.
    const field = event.target.closest?.("textarea, select, .wf-scroll");
    if (field && field.scrollHeight > field.clientHeight) return;
    event.preventDefault();
    if (event.ctrlKey || event.metaKey || !event.shiftKey) {
      // A trackpad pinch arrives as a wheel with ctrlKey and small deltas; a mouse wheel as steps of ~100.
      const delta = event.deltaMode === 1 ? event.deltaY * 33 : event.deltaY;
      this.zoomAt(Math.exp(-delta * (event.ctrlKey ? 0.01 : 0.0015)), event.clientX, event.clientY);
    } else {
      // Shift turns the wheel sideways, as in any scrolled page (Chromium reports it as deltaX).
      this.panBy(-(event.deltaX || event.deltaY), 0);
    }
  }

  #down(event) {
    if (!this.isBackground(event.target)) return;
    if (event.pointerType !== "mouse") {
      this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (this.pointers.size === 2) {
        this.gesture = { kind: "pinch", ...this.#pinchState() };
        return;
      }
    }
    if (event.button !== 0 && event.button !== 1) return;
    this.canvas.setPointerCapture(event.pointerId);
    const boxSelect = event.button === 0 && (event.shiftKey || event.ctrlKey || event.metaKey);
    this.gesture = {
      kind: boxSelect ? "marquee" : "pan",
      id: event.pointerId,
      startX: event.clientX,
      startY: event.clientY,
      lastX: event.clientX,
      lastY: event.clientY,
      moved: false,
      additive: event.shiftKey || event.ctrlKey || event.metaKey,
    };
    if (boxSelect) event.preventDefault();
  }

  #pinchState() {
    const [a, b] = [...this.pointers.values()];
    return { distance: Math.hypot(a.x - b.x, a.y - b.y), cx: (a.x + b.x) / 2, cy: (a.y + b.y) / 2 };
  }

  #move(event) {
    if (this.pointers.has(event.pointerId)) this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    const gesture = this.gesture;
    if (!gesture) return;
    if (gesture.kind === "pinch") {
      if (this.pointers.size < 2) return;
      const now = this.#pinchState();
      this.panBy(now.cx - gesture.cx, now.cy - gesture.cy);
      if (gesture.distance > 0) this.zoomAt(now.distance / gesture.distance, now.cx, now.cy);
      Object.assign(gesture, now);
      return;
    }
    if (event.pointerId !== gesture.id) return;
    if (Math.hypot(event.clientX - gesture.startX, event.clientY - gesture.startY) > CLICK_SLOP) gesture.moved = true;
    if (gesture.kind === "pan") {
      this.panBy(event.clientX - gesture.lastX, event.clientY - gesture.lastY);
    } else if (gesture.moved) {
      this.handlers.onMarquee(this.#marqueeRect(gesture, event), gesture.additive, false);
    }
    gesture.lastX = event.clientX;
    gesture.lastY = event.clientY;
  }

  #marqueeRect(gesture, event) {
    const canvasRect = this.canvas.getBoundingClientRect();
    const left = Math.min(gesture.startX, event.clientX);
    const top = Math.min(gesture.startY, event.clientY);
    const width = Math.abs(event.clientX - gesture.startX);
    const height = Math.abs(event.clientY - gesture.startY);
    Object.assign(this.marquee.style, {
      left: `${left - canvasRect.left}px`,
      top: `${top - canvasRect.top}px`,
      width: `${width}px`,
      height: `${height}px`,
    });
    this.marquee.hidden = false;
    const a = this.toWorld(left, top);
    return { x: a.x, y: a.y, width: width / this.k, height: height / this.k };
  }

  #up(event, canceled = false) {
    this.pointers.delete(event.pointerId);
    const gesture = this.gesture;
    if (!gesture) return;
    if (gesture.kind === "pinch") {
      if (this.pointers.size < 2) this.gesture = null;
      return;
    }
    if (event.pointerId !== gesture.id) return;
    this.gesture = null;
    if (gesture.kind === "marquee" && gesture.moved && !canceled) {
      this.handlers.onMarquee(this.#marqueeRect(gesture, event), gesture.additive, true);
    } else if (!gesture.moved && !canceled) {
      this.handlers.onBackgroundClick(event);
    }
    this.marquee.hidden = true;
  }
}

// The inpaint mask, painted on a canvas laid over the init image: brush and eraser, brush size, invert, clear.
// The canvas has the image's own size (one canvas pixel per image pixel, however large it is shown), so the
// mask fits the image exactly. What is painted is the area to repaint; toBlob() gives the mask the server
// takes, white there and black elsewhere.

const PAINT = [255, 64, 96]; // shown half see-through over the image (the canvas's CSS opacity)

export class MaskEditor {
  /** canvas: the <canvas> over the image; cursor: an element drawn as the brush outline; onChange() after each edit. */
  constructor({ canvas, cursor, onChange = () => {} }) {
    this.canvas = canvas;
    this.cursor = cursor;
    this.onChange = onChange;
    this.tool = "brush";
    this.size = 32;
    this.version = 0; // bumps on every edit: an uploaded mask is current while its version is
    this.stroke = null; // {x, y} of the last point while painting
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    canvas.addEventListener("pointerdown", (event) => this.#down(event));
    canvas.addEventListener("pointermove", (event) => this.#move(event));
    canvas.addEventListener("pointerup", (event) => this.#up(event));
    canvas.addEventListener("pointercancel", (event) => this.#up(event));
    canvas.addEventListener("pointerleave", () => {
      if (!this.stroke) this.cursor.hidden = true;
    });
  }

  /** Size the canvas to the image (a new size clears it). */
  setSize(width, height) {
    if (this.canvas.width === width && this.canvas.height === height) return;
    this.canvas.width = width;
    this.canvas.height = height;
    this.#changed();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.#changed();
  }

  /** What was repainted is kept and the other way round. */
  invert() {
    const data = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    const pixels = data.data;
    for (let i = 0; i < pixels.length; i += 4) {
      pixels[i] = PAINT[0];
      pixels[i + 1] = PAINT[1];
      pixels[i + 2] = PAINT[2];
      pixels[i + 3] = 255 - pixels[i + 3];
    }
    this.ctx.putImageData(data, 0, 0);
    this.#changed();
  }

  isEmpty() {
    if (!this.canvas.width || !this.canvas.height) return true;
    const pixels = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) return false;
    return true;
  }

  /** The mask as a PNG: white where painted (grey on the brush's soft edge), black elsewhere. */
  toBlob() {
    const out = document.createElement("canvas");
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const ctx = out.getContext("2d");
    ctx.drawImage(this.canvas, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.globalCompositeOperation = "destination-over";
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    return new Promise((resolve, reject) => {
      out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the mask could not be encoded"))), "image/png");
    });
  }

  /** The painting as a data URL, to keep with the form; load() puts it back. */
  toDataURL() {
    return this.canvas.toDataURL("image/png");
  }

  load(dataURL) {
    const image = new Image();
    image.addEventListener("load", () => {
      if (image.naturalWidth !== this.canvas.width || image.naturalHeight !== this.canvas.height) return;
      this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      this.ctx.drawImage(image, 0, 0);
      this.version += 1;
    });
    image.src = dataURL;
  }

  // ---- painting ---------------------------------------------------------------------------------------

  #point(event) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * this.canvas.width) / box.width,
      y: ((event.clientY - box.top) * this.canvas.height) / box.height,
      scale: box.width / this.canvas.width,
      left: event.clientX - box.left,
      top: event.clientY - box.top,
    };
  }

  #showCursor(point) {
    const diameter = Math.max(4, this.size * point.scale);
    Object.assign(this.cursor.style, {
      width: `${diameter}px`,
      height: `${diameter}px`,
      left: `${point.left - diameter / 2}px`,
      top: `${point.top - diameter / 2}px`,
    });
    this.cursor.dataset.tool = this.tool;
    this.cursor.hidden = false;
  }

  #paint(from, to) {
    const ctx = this.ctx;
    ctx.save();
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = `rgb(${PAINT.join(",")})`;
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (from.x === to.x && from.y === to.y) {
      ctx.beginPath();
      ctx.arc(to.x, to.y, this.size / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.restore();
  }

  #down(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    const point = this.#point(event);
    this.stroke = point;
    this.#paint(point, point);
    this.#showCursor(point);
  }

  #move(event) {
    const point = this.#point(event);
    this.#showCursor(point);
    if (!this.stroke) return;
    this.#paint(this.stroke, point);
    this.stroke = point;
  }

  #up(event) {
    if (!this.stroke) return;
    if (this.canvas.hasPointerCapture(event.pointerId)) this.canvas.releasePointerCapture(event.pointerId);
    this.stroke = null;
    this.#changed();
  }

  #changed() {
    this.version += 1;
    this.onChange();
  }
}

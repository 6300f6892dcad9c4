"""Screenshots of every page for the README: `python -m tests.browser.screenshots [--out docs/screenshots]`.

Starts a server on a temporary root with the tiny models (SD-1, SDXL and its refiner; their images are
coloured noise: random weights) and tiny LoRAs, embeddings and a VAE, makes a few images, and saves each page
at 1280×800, plus the gallery, the generate page and the workflow editor at 390 px. Generate is shown mid-run
with a LoRA and an embedding, and once more with an SDXL model, a LoRA and the refiner (a taller window, so
the whole form shows); the viewer shows that SDXL image's settings. The workflow editor is shown with a saved
workflow just run, and once more with a 422 on its nodes. Last, Generate with a ControlNet (Canny, with its
edge-map preview) and the inpaint canvas with a mask painted over an image; and the header's workers list as a
shared PostgreSQL with three workers answers it (the page is handed those answers)."""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw
from playwright.sync_api import sync_playwright

from server.graph.standard import txt2img_graph
from server.models.tiny_adapters import (
    write_tiny_controlnet,
    write_tiny_embedding,
    write_tiny_lora,
    write_tiny_upscaler,
    write_tiny_vae,
)
from server.models.tiny_sdxl import write_tiny_model_of_base
from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    WAIT_MS,
    ServerProcess,
    free_port,
    import_models,
    make_root,
    wait_for_model,
)
from tests.browser.images import A1111_PARAMETERS, png_bytes, upload

PROMPTS = [
    "a lighthouse at dusk, oil painting",
    "a red fox in fresh snow, watercolor",
    "an old tram in Lisbon, morning light",
    "a bowl of ramen, studio photo",
    "a glass greenhouse full of ferns",
    "isometric pixel-art harbour town",
]


def fill(page, prompt: str, size: int, steps: int, seed: int, count: int = 1, model: str = "sd-1/main/tiny") -> None:
    page.wait_for_selector(f'#gen-model option[value="{model}"]', state="attached")
    page.select_option("#gen-model", model)
    page.fill("#gen-prompt", prompt)
    page.fill("#gen-negative", "blurry, low quality")
    page.fill("#gen-width", str(size))
    page.fill("#gen-height", str(size))
    page.fill("#gen-steps", str(steps))
    page.uncheck("#gen-randomize")
    page.fill("#gen-seed", str(seed))
    page.fill("#gen-count", str(count))


def pick(page, picker: str, text: str, value: str) -> None:
    page.fill(f"#gen-{picker}-search", text)
    page.click(f'#gen-{picker}-options [role="option"][data-value="{value}"]')


def adapters(folder: Path) -> list[Path]:
    """The files a person moving over from A1111 would have: LoRAs, embeddings, a VAE, an SDXL and its refiner."""
    return [
        write_tiny_lora(folder / "watercolor-style.safetensors", "kohya", seed=4),
        write_tiny_lora(folder / "film-grain.safetensors", "loha", seed=5),
        write_tiny_lora(folder / "xl-ink-sketch.safetensors", "kohya", base="sdxl", seed=6),
        write_tiny_embedding(folder / "bad-hands.safetensors"),
        write_tiny_embedding(folder / "xl-detail.safetensors", sdxl=True),
        write_tiny_vae(folder / "sharp-vae"),
        write_tiny_model_of_base(folder / "tiny-xl", "sdxl"),
        write_tiny_model_of_base(folder / "tiny-xl-refiner", "sdxl-refiner"),
        write_tiny_controlnet(folder / "canny-control"),
        write_tiny_upscaler(folder / "esrgan-x2.safetensors"),
    ]


def take(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(root=make_root(Path(tmp) / "root"), port=free_port())
        server.start()
        try:
            with server.api() as api:
                api.post("/models/sync")
                wait_for_model(api, "tiny")
                upload(api, png_bytes(96, 128, (70, 110, 160), text={"parameters": A1111_PARAMETERS}), "fox.png")
                import_models(api, *adapters(Path(tmp) / "files"))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(WAIT_MS)
                page.goto(f"{server.url}/#/generate")
                page.wait_for_selector('#connection[data-state="live"]')
                for i, prompt in enumerate(PROMPTS):
                    fill(page, prompt, 128, 8, 1000 + i)
                    page.click("#gen-invoke")
                    page.wait_for_selector(f"#gen-status:has-text('seed {1000 + i}')")
                    page.wait_for_selector("#gen-status:has-text('Done')")

                # Generate, caught mid-run: preview, step bar, queue with one waiting; a LoRA in the form and
                # an embedding in the negative prompt.
                fill(page, PROMPTS[0], 192, 400, 4242, count=2)
                pick(page, "lora", "water", "sd-1/lora/watercolor-style")
                page.fill('#gen-loras li[data-lora="sd-1/lora/watercolor-style"] [data-weight]', "0.8")
                page.check("#gen-embedding-into-negative")
                pick(page, "embedding", "bad", "sd-1/embedding/bad-hands")
                page.click("#gen-invoke")
                # Progress may be coalesced (latest wins), so wait for "far enough", not for one exact step.
                page.wait_for_function(
                    "document.getElementById('gen-status').textContent.endsWith(' of 400')"
                    " && document.getElementById('gen-progress').value >= 12 / 400"
                )
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(out / "generate.png"))
                page.set_viewport_size({"width": 390, "height": 844})
                page.evaluate("document.querySelector('.run-panel').scrollIntoView()")
                page.screenshot(path=str(out / "generate-phone.png"))
                page.set_viewport_size({"width": 1280, "height": 800})
                page.click("#gen-cancel-all")
                page.wait_for_selector("#queue-empty", state="visible")
                sdxl_image = generate_sdxl(page, out)

                page.click('nav a[data-page="gallery"]')
                page.wait_for_selector("#gallery-grid .tile")
                page.wait_for_function(
                    "[...document.querySelectorAll('#gallery-grid img')].every(i => i.complete && i.naturalWidth)"
                )
                page.mouse.move(0, 0)
                page.screenshot(path=str(out / "gallery.png"))
                page.set_viewport_size({"width": 390, "height": 844})
                page.screenshot(path=str(out / "gallery-phone.png"))
                page.set_viewport_size({"width": 1280, "height": 800})

                page.click(f'#gallery-grid .tile[data-name="{sdxl_image}"] button')
                page.wait_for_selector("#viewer-source:has-text('metadata')")
                page.wait_for_function("document.getElementById('viewer-image').naturalWidth > 0")
                page.screenshot(path=str(out / "image.png"))
                page.keyboard.press("Escape")

                page.click('nav a[data-page="models"]')
                page.wait_for_selector(".model-card")
                page.fill("#search-path", str(server.root / "autoimport"))
                page.click("#search-form button[type=submit]")
                page.wait_for_selector("#search-results li")
                page.screenshot(path=str(out / "models.png"))

                workflow(page, server, out)
                control_and_inpaint(page, server, out)
                workers(page, out)
                browser.close()
        finally:
            server.stop()


def generate_sdxl(page, out: Path) -> str:
    """The whole Generate form with an SDXL model, a LoRA and the refiner, after its run; → the image's name."""
    page.click('nav a[data-page="generate"]')
    fill(page, PROMPTS[4], 128, 12, 77, model="sdxl/main/tiny-xl")
    # The SD-1 LoRA of the last run is marked as not fitting (and would stop the form): out with it.
    page.click('#gen-loras button[aria-label="Remove the LoRA watercolor-style"]')
    pick(page, "lora", "ink", "sdxl/lora/xl-ink-sketch")
    page.fill('#gen-loras li[data-lora="sdxl/lora/xl-ink-sketch"] [data-weight]', "0.6")
    page.select_option("#gen-refiner", "sdxl-refiner/main/tiny-xl-refiner")
    page.fill("#gen-refiner-switch", "0.7")
    page.click("#gen-refiner-advanced summary")
    page.click("#gen-invoke")
    page.wait_for_selector("#gen-status:has-text('seed 77')")
    page.wait_for_selector("#gen-status:has-text('Done')")
    page.wait_for_function("document.getElementById('gen-preview-image').naturalWidth > 0")
    name = page.get_attribute("#gen-results li", "data-name")
    whole_form(page)
    page.screenshot(path=str(out / "generate-sdxl.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    return name


def workflow(page, server: ServerProcess, out: Path) -> None:
    """The editor: a saved workflow from the library, run (states, the step preview, the result on l2i)."""
    model = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
    graph = txt2img_graph(model, PROMPTS[0], negative="blurry, low quality", seed=31, width=128, height=128, steps=8)
    with server.api() as api:
        for name in ("Lighthouse at dusk", "Portrait, soft light", "Hires fix sketch"):
            api.post("/workflows/", json={"name": name, "graph": graph}).raise_for_status()
    page.click('nav a[data-page="workflow"]')
    page.wait_for_function("window.imagegraph?.editor?.ready")
    page.wait_for_selector("#wf-library-list [data-workflow-id]")
    page.click('#wf-library-list li:has-text("Lighthouse at dusk") [data-action="load-workflow"]')
    page.wait_for_selector('[data-node-id="decode"]')
    page.click('[data-action="invoke"]')
    page.wait_for_selector('[data-node-id="decode"][data-state="completed"] img.wf-result')
    page.wait_for_function("document.querySelector('[data-node-id=decode] img.wf-result').naturalWidth > 0")
    page.click('[data-node-id="denoise"] .wf-node-head')
    page.mouse.move(0, 0)
    page.screenshot(path=str(out / "workflow.png"))

    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.imagegraph.editor.fit()")
    page.screenshot(path=str(out / "workflow-phone.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.imagegraph.editor.fit()")

    # A 422: each message on the node and field it names.
    page.fill('[data-node-id="denoise"] [data-field="steps"]', "0")
    page.fill('[data-node-id="noise"] [data-field="width"]', "100")
    page.click('[data-action="invoke"]')
    page.wait_for_selector('[data-node-id="denoise"][data-state="invalid"]')
    page.screenshot(path=str(out / "workflow-invalid.png"))


# What GET /workers and the config's `database` say on a shared PostgreSQL with three workers.
SHARED_WORKERS = [
    {
        "name": "gpu-box:0",
        "device": "cuda",
        "state": "busy",
        "session_id": "3f2c9a4e-8d1b-4c6f-9a2e-5b7d1c0e4f31",
        "models_loaded": ["sd-1/main/tiny"],
        "last_seen": "2025-06-01T12:00:00Z",
    },
    {
        "name": "gpu-box:1",
        "device": "cuda",
        "state": "idle",
        "session_id": None,
        "models_loaded": ["sdxl/main/tiny-xl"],
        "last_seen": "2025-06-01T12:00:00Z",
    },
    {
        "name": "laptop",
        "device": "mps",
        "state": "lost",
        "session_id": "9b7e0c12-4a5d-4f3e-8c21-6d0f9e8a7b54",
        "models_loaded": [],
        "last_seen": "2025-06-01T11:58:30Z",
    },
]
SHARED_DATABASE = "postgresql (postgresql://imagegraph@db.lan:5432/imagegraph)"


def workers(page, out: Path) -> None:
    """The header's workers list as a shared PostgreSQL shows it. This server is one process on SQLite, so
    the browser is handed that deployment's answers (routes), and the page is otherwise this server's."""

    def config(route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "database": SHARED_DATABASE})

    page.route("**/api/v1/app/config", config)
    page.route("**/api/v1/workers", lambda route: route.fulfill(json={"workers": SHARED_WORKERS}))
    page.reload()  # the config is read once, at start-up
    page.wait_for_selector('#workers[data-count="3"]')
    page.click("#workers summary")
    page.wait_for_selector("#workers-list", state="visible")
    page.mouse.move(0, 0)
    panel = page.locator(".workers-panel").bounding_box()
    top_right = {
        "x": panel["x"] - 24,
        "y": 0,
        "width": 1280 - panel["x"] + 24,
        "height": panel["y"] + panel["height"] + 16,
    }
    page.screenshot(path=str(out / "workers.png"), clip=top_right)
    page.keyboard.press("Escape")
    page.unroute("**/api/v1/workers")
    page.unroute("**/api/v1/app/config")


def lighthouse_png(size: int = 256) -> bytes:
    """A picture with edges worth a Canny map: sky, sea, a lighthouse and its light."""
    image = Image.new("RGB", (size, size), (70, 110, 170))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size * 0.7, size, size), fill=(30, 60, 110))
    draw.polygon(
        [
            (size * 0.42, size * 0.72),
            (size * 0.58, size * 0.72),
            (size * 0.54, size * 0.25),
            (size * 0.46, size * 0.25),
        ],
        fill=(235, 235, 225),
    )
    draw.rectangle((size * 0.44, size * 0.18, size * 0.56, size * 0.25), fill=(200, 40, 40))
    draw.ellipse((size * 0.47, size * 0.19, size * 0.53, size * 0.24), fill=(255, 230, 120))
    draw.ellipse((size * 0.08, size * 0.08, size * 0.22, size * 0.22), fill=(250, 240, 200))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def run_and_wait(page) -> None:
    """Generate, and wait for the new result and every image of the form to be on show."""
    before = page.get_attribute("#gen-results li", "data-name")
    page.click("#gen-invoke")
    page.wait_for_function(
        "name => document.querySelector('#gen-results li')?.dataset.name !== name"
        " && document.getElementById('gen-status').textContent.startsWith('Done')",
        arg=before,
    )
    page.wait_for_function(
        "[...document.querySelectorAll('#generate-form img, #gen-preview-image')]"
        ".filter(i => i.offsetParent).every(i => i.complete && i.naturalWidth)"
    )


def whole_form(page) -> None:
    """A window as tall as the page, so the whole form shows beside the run panel."""
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": min(2600, height)})
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)


def control_and_inpaint(page, server: ServerProcess, out: Path) -> None:
    """Generate with a ControlNet (Canny, its preview shown) after its run; then the inpaint canvas, a mask painted."""
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.click('nav a[data-page="generate"]')
    fill(page, PROMPTS[0], 128, 12, 404)
    # The SDXL LoRA of the last run does not fit an SD-1 model: out with it.
    page.click('#gen-loras button[aria-label="Remove the LoRA xl-ink-sketch"]')
    page.click("#gen-control-add")
    row = '#gen-controls li[data-control="0"]'
    page.set_input_files(
        f"{row} input[type=file]",
        files=[{"name": "lighthouse.png", "mimeType": "image/png", "buffer": lighthouse_png()}],
    )
    page.wait_for_selector(f"{row} img[data-control-image]")
    page.select_option(f"{row} select[id$='-processor']", "canny")
    page.wait_for_selector(f"{row} img[data-preview-image]")
    page.fill(f"{row} input[id$='-weight']", "0.8")
    run_and_wait(page)
    whole_form(page)
    page.screenshot(path=str(out / "generate-controlnet.png"))
    page.set_viewport_size({"width": 1280, "height": 1000})

    # Inpaint: from the viewer, onto the canvas over the image; a stroke painted over the lighthouse.
    page.click(f"{row} button[aria-label='Remove ControlNet 1']")
    with server.api() as api:
        name = upload(api, lighthouse_png(), "lighthouse.png")["image_name"]
    page.click('nav a[data-page="gallery"]')
    page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    page.click("#viewer-inpaint")
    page.wait_for_selector("#page-generate:not([hidden]) #gen-mask-canvas:not([hidden])")
    page.wait_for_function("document.getElementById('gen-init-image').naturalWidth > 0")
    page.fill("#gen-prompt", "a lighthouse at dusk, a storm coming in")
    page.fill("#gen-mask-size", "36")
    page.fill("#gen-strength", "0.9")
    page.evaluate("document.getElementById('gen-init-section').scrollIntoView({block: 'start'})")

    def at(fx: float, fy: float) -> tuple[float, float]:
        box = page.locator("#gen-mask-canvas").bounding_box()
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.mouse.move(*at(0.1, 0.35))
    page.mouse.down()
    for fx, fy in ((0.3, 0.3), (0.5, 0.4), (0.7, 0.3), (0.9, 0.35), (0.9, 0.5), (0.6, 0.5), (0.3, 0.45)):
        page.mouse.move(*at(fx, fy), steps=6)
    page.mouse.up()
    run_and_wait(page)
    whole_form(page)
    page.mouse.move(*at(0.75, 0.62))  # the brush outline shows where the mouse is
    page.screenshot(path=str(out / "generate-inpaint.png"))
    page.set_viewport_size({"width": 1280, "height": 800})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    take(args.out.resolve())
    print(f"screenshots written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

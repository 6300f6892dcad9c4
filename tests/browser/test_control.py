"""ControlNet, inpainting, outpainting, upscaling and the hires fix from the web page, in a real Chromium with
the tiny model, a tiny ControlNet and a tiny ESRGAN: what a person sets in the form or the viewer, and what they
get (the pixels kept outside a painted mask, the sizes, the graph the server ran)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from server.models.tiny_adapters import write_tiny_controlnet, write_tiny_upscaler
from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, fill_form, import_models
from tests.browser.images import upload

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def models(server: ServerProcess, tiny_model, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("control-models")
    with server.api() as api:
        import_models(
            api,
            write_tiny_controlnet(folder / "tiny-control"),
            write_tiny_upscaler(folder / "tiny-esrgan.safetensors", scale=2),
        )


def shapes_png(width: int = 64, height: int = 64) -> bytes:
    image = Image.new("RGB", (width, height), (40, 60, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 6, width - 14, height - 18), fill=(240, 200, 40))
    draw.rectangle((width // 2, height // 3, width - 4, height - 6), fill=(20, 180, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def uploaded(server: ServerProcess, data: bytes, name: str = "shapes.png") -> str:
    with server.api() as api:
        return upload(api, data, name)["image_name"]


def pixels(server: ServerProcess, name: str, mode: str = "RGB") -> np.ndarray:
    with server.api() as api:
        response = api.get(f"/images/{name}/full")
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert(mode), dtype=np.int16)


def image_dto(server: ServerProcess, name: str) -> dict:
    with server.api() as api:
        return api.get(f"/images/{name}").json()


def graph_of(server: ServerProcess, image_name: str) -> dict:
    """The graph of the session that made the image, as the server ran it."""
    with server.api() as api:
        session_id = api.get(f"/images/{image_name}").json()["session_id"]
        return api.get(f"/sessions/{session_id}").json()["graph"]


def generate(ui: Ui, previous: str | None = None) -> str:
    """Click Generate and wait for a new result → its image name."""
    ui.page.click("#gen-invoke")
    ui.page.wait_for_function(
        "name => { const li = document.querySelector('#gen-results li'); return li && li.dataset.name !== name; }",
        arg=previous,
        timeout=WAIT_MS,
    )
    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    return ui.page.get_attribute("#gen-results li", "data-name")


def open_in_viewer(ui: Ui, name: str) -> None:
    if ui.page.is_visible("#viewer[open]"):
        ui.page.keyboard.press("Escape")
    ui.go("gallery")
    ui.page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer[open]", timeout=WAIT_MS)


def drag_across(ui: Ui, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press, move and release the mouse over an element, at fractions of its width and height."""
    box = ui.page.locator(selector).bounding_box()
    point = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    ui.page.mouse.move(*point(*start))
    ui.page.mouse.down()
    for step in range(1, 9):
        f = step / 8
        ui.page.mouse.move(*point(start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f))
    ui.page.mouse.up()


def canvas_alpha(ui: Ui, x: int, y: int) -> int:
    return ui.page.evaluate(
        "([x, y]) => document.getElementById('gen-mask-canvas').getContext('2d').getImageData(x, y, 1, 1).data[3]",
        [x, y],
    )


def test_a_mask_painted_over_an_image_repaints_that_part_and_nothing_else(ui: Ui, server: ServerProcess, models):
    original_name = uploaded(server, shapes_png())
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=64, steps=4, seed=5)
    open_in_viewer(ui, original_name)
    ui.page.click("#viewer-inpaint")
    ui.page.wait_for_selector("#page-generate:not([hidden]) #gen-mask-canvas:not([hidden])", timeout=WAIT_MS)
    ui.page.fill("#gen-strength", "1")
    assert ui.page.is_checked("#gen-init-mode-inpaint")
    assert (ui.page.input_value("#gen-width"), ui.page.input_value("#gen-height")) == ("64", "64")

    # Nothing painted yet: the form says what to do instead of sending an empty mask.
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-form-error:has-text('paint over the part of the image')", timeout=WAIT_MS)

    # A stroke across the middle with a 12-pixel brush; the eraser takes its right end away again.
    ui.page.fill("#gen-mask-size", "12")
    drag_across(ui, "#gen-mask-canvas", (0.2, 0.5), (0.8, 0.5))
    assert canvas_alpha(ui, 32, 32) > 0 and canvas_alpha(ui, 32, 5) == 0
    ui.page.check("#gen-mask-eraser")
    drag_across(ui, "#gen-mask-canvas", (0.7, 0.5), (0.9, 0.5))
    assert canvas_alpha(ui, 50, 32) == 0 and canvas_alpha(ui, 20, 32) > 0
    # Invert swaps what is repainted and what is kept; inverting again brings the stroke back.
    ui.page.click("#gen-mask-invert")
    assert canvas_alpha(ui, 32, 32) == 0 and canvas_alpha(ui, 32, 5) == 255
    ui.page.click("#gen-mask-invert")
    assert canvas_alpha(ui, 32, 32) > 0 and canvas_alpha(ui, 32, 5) == 0

    name = generate(ui)
    result = pixels(server, name)
    original = pixels(server, original_name)
    assert result.shape == original.shape == (64, 64, 3)
    graph = graph_of(server, name)
    mask_name = graph["nodes"]["mask_image"]["image"]["image_name"]
    assert graph["nodes"]["init_image"]["image"]["image_name"] == original_name
    mask = pixels(server, mask_name, "L")
    # The mask is the stroke: white along the middle (but not where it was erased), black elsewhere.
    assert mask[32, 32] == 255 and mask[32, 16] == 255
    assert mask[5, 32] == 0 and mask[60, 5] == 0 and mask[32, 56] == 0
    outside = mask == 0
    assert outside.mean() > 0.6
    assert np.array_equal(result[outside], original[outside]), "pixels outside the mask changed"
    inside = mask == 255
    assert np.abs(result[inside] - original[inside]).mean() > 1, "the masked part was not repainted"
    # The mask belongs to the image it made, not to the gallery.
    assert image_dto(server, mask_name)["is_intermediate"] is True

    # Clear empties it, and the form again refuses to send an empty mask.
    ui.page.click("#gen-mask-clear")
    assert canvas_alpha(ui, 32, 32) == 0
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-form-error:has-text('paint over the part of the image')", timeout=WAIT_MS)
    ui.page.click("#gen-init-remove")
    assert ui.page.is_hidden("#gen-init-body")


def test_outpaint_extends_the_image_by_the_pixels_chosen(ui: Ui, server: ServerProcess, models):
    original_name = uploaded(server, shapes_png())
    ui.open("#/generate")
    fill_form(ui, prompt="a wider view", size=64, steps=4, seed=6)
    open_in_viewer(ui, original_name)
    ui.page.click("#viewer-init")
    ui.page.wait_for_selector("#page-generate:not([hidden]) #gen-init-body:not([hidden])", timeout=WAIT_MS)
    assert ui.page.is_checked("#gen-init-mode-img2img")
    ui.page.check("#gen-init-mode-outpaint")
    for side, value in (("left", "0"), ("right", "32"), ("top", "0"), ("bottom", "16")):
        ui.page.fill(f"#gen-outpaint-{side}", value)
    ui.page.wait_for_selector("#gen-outpaint-hint:has-text('96 × 80')", timeout=WAIT_MS)
    assert (ui.page.input_value("#gen-width"), ui.page.input_value("#gen-height")) == ("96", "80")
    ui.page.fill("#gen-strength", "1")

    # A margin that is not a multiple of 8 is refused in the form.
    ui.page.fill("#gen-outpaint-right", "30")
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-form-error:has-text('multiple of 8')", timeout=WAIT_MS)
    ui.page.fill("#gen-outpaint-right", "32")

    name = generate(ui)
    result = pixels(server, name)
    assert result.shape == (80, 96, 3)
    graph = graph_of(server, name)
    assert (graph["nodes"]["pad"]["right"], graph["nodes"]["pad"]["bottom"]) == (32, 16)
    # The original is kept where it was, away from the seam the mask reaches into.
    original = pixels(server, original_name)
    assert np.array_equal(result[:56, :56], original[:56, :56])
    # The new area is painted, not the original's edge stretched out.
    assert np.abs(result[:64, 72:] - original[:, 63:64]).mean() > 1
    ui.page.click("#gen-init-remove")


def test_upscale_from_the_viewer_with_lanczos_and_with_a_model(ui: Ui, server: ServerProcess, models):
    original_name = uploaded(server, shapes_png(64, 48))
    ui.open("#/gallery")
    open_in_viewer(ui, original_name)
    ui.page.click("#viewer-upscale")
    ui.page.wait_for_selector("#viewer-upscale-panel:not([hidden])", timeout=WAIT_MS)
    options = ui.page.eval_on_selector_all("#viewer-upscale-model option", "os => os.map(o => o.value)")
    assert options == ["", "any/upscale/tiny-esrgan"]

    ui.page.select_option("#viewer-upscale-model", "")
    ui.page.fill("#viewer-upscale-scale", "2")
    assert "64 × 48 → 128 × 96" in ui.page.inner_text("#viewer-upscale-size")
    ui.page.click("#viewer-upscale-run")
    ui.page.wait_for_selector("#viewer-upscale-status:has-text('Upscaled with Lanczos to 128 × 96')", timeout=WAIT_MS)
    # The viewer now shows the result, which is in the gallery.
    lanczos = ui.page.get_attribute("#viewer-download", "download")
    assert lanczos != original_name
    assert "128 × 96" in ui.page.inner_text("#viewer-meta")
    ui.page.wait_for_selector(f'#gallery-grid .tile[data-name="{lanczos}"]', state="attached", timeout=WAIT_MS)
    dto = image_dto(server, lanczos)
    assert (dto["width"], dto["height"], dto["is_intermediate"]) == (128, 96, False)

    # With the tiny ESRGAN (×2) asked for ×3: the model's output, then Lanczos to the size asked for.
    open_in_viewer(ui, original_name)
    ui.page.click("#viewer-upscale")
    ui.page.select_option("#viewer-upscale-model", "any/upscale/tiny-esrgan")
    ui.page.fill("#viewer-upscale-scale", "3")
    ui.page.click("#viewer-upscale-run")
    ui.page.wait_for_selector(
        "#viewer-upscale-status:has-text('Upscaled with tiny-esrgan to 192 × 144')", timeout=WAIT_MS
    )
    by_model = ui.page.get_attribute("#viewer-download", "download")
    assert (image_dto(server, by_model)["width"], image_dto(server, by_model)["height"]) == (192, 144)
    nodes = graph_of(server, by_model)["nodes"]
    assert nodes["upscale"]["type"] == "esrgan" and nodes["upscale"]["model"]["model_name"] == "tiny-esrgan"
    assert not np.array_equal(pixels(server, by_model)[::3, ::3], 0)

    # A scale out of range is refused in the panel.
    ui.page.fill("#viewer-upscale-scale", "20")
    ui.page.click("#viewer-upscale-run")
    ui.page.wait_for_selector("#viewer-upscale-status:has-text('between 1.1 and 8')", timeout=WAIT_MS)
    ui.page.keyboard.press("Escape")


def test_generate_with_a_controlnet_and_its_canny_preview(ui: Ui, server: ServerProcess, models):
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=64, steps=4, seed=9)
    plain = generate(ui)

    ui.page.click("#gen-control-add")
    row = '#gen-controls li[data-control="0"]'
    ui.page.wait_for_selector(row, timeout=WAIT_MS)
    # The ControlNet of the model's base is chosen; the control image is uploaded from the form.
    assert ui.page.input_value(f"{row} select[id$='-model']") == "sd-1/controlnet/tiny-control"
    ui.page.set_input_files(
        f"{row} input[type=file]", files=[{"name": "guide.png", "mimeType": "image/png", "buffer": shapes_png()}]
    )
    ui.page.wait_for_selector(f"{row} img[data-control-image]", timeout=WAIT_MS)
    control_image = ui.page.get_attribute(f"{row} img[data-control-image]", "data-control-image")
    assert image_dto(server, control_image)["image_category"] == "control"

    # Canny shows the edge map the ControlNet will see, and again when a threshold changes.
    ui.page.select_option(f"{row} select[id$='-processor']", "canny")
    preview = ui.page.wait_for_selector(f"{row} img[data-preview-image]", timeout=WAIT_MS)
    first = preview.get_attribute("data-preview-image")
    edges = pixels(server, first, "L")
    assert edges.shape == (64, 64) and set(np.unique(edges)) <= {0, 255} and edges.max() == 255
    ui.page.fill(f"{row} input[id$='-low']", "20")
    ui.page.fill(f"{row} input[id$='-high']", "60")
    ui.page.wait_for_function(
        "([row, first]) => { const img = document.querySelector(row + ' img[data-preview-image]');"
        " return img && img.dataset.previewImage !== first; }",
        arg=[row, first],
        timeout=WAIT_MS,
    )
    ui.page.fill(f"{row} input[id$='-weight']", "1.5")
    ui.page.fill(f"{row} input[id$='-end']", "80")
    ui.page.select_option(f"{row} select[id$='-mode']", "more_control")

    guided = generate(ui, previous=plain)
    nodes = graph_of(server, guided)["nodes"]
    control = nodes["control_1"]
    assert control["type"] == "controlnet"
    assert control["control_model"]["model_name"] == "tiny-control"
    assert (control["control_weight"], control["end_step_percent"], control["control_mode"]) == (
        1.5,
        0.8,
        "more_control",
    )
    assert nodes["canny_1"]["type"] == "canny_image_processor"
    assert (nodes["canny_1"]["low_threshold"], nodes["canny_1"]["high_threshold"]) == (20, 60)
    assert nodes["canny_1"]["image"]["image_name"] == control_image
    difference = np.abs(pixels(server, guided) - pixels(server, plain)).mean()
    assert difference > 0.3, "the ControlNet made no difference to the image"
    # The viewer says which ControlNet made it.
    ui.page.click(f'#gen-results li[data-name="{guided}"] button')
    ui.page.wait_for_selector("#viewer-source:has-text('imagegraph')", timeout=WAIT_MS)
    assert "tiny-control × 1.5, canny" in ui.page.inner_text("#viewer-meta")
    ui.page.keyboard.press("Escape")

    # A control image from the gallery that is deleted before generating: the server's 422, on that control.
    other = uploaded(server, shapes_png(48, 48), "other.png")
    ui.page.click(f"{row} button:has-text('From gallery')")
    ui.page.click(f'#wf-image-grid [data-image-name="{other}"]')
    ui.page.wait_for_selector(f'{row} img[data-control-image="{other}"]', timeout=WAIT_MS)
    with server.api() as api:
        assert api.delete(f"/images/{other}").status_code in (200, 204)
    ui.console.allow(r"status of 422")
    ui.page.click("#gen-invoke")
    error = ui.page.wait_for_selector("#gen-form-error:has-text('ControlNet 1, control image')", timeout=WAIT_MS)
    assert "refused" in error.inner_text()

    # Removed, the form generates without it again.
    ui.page.click(f"{row} button[aria-label='Remove ControlNet 1']")
    assert ui.page.query_selector(row) is None
    plain_again = generate(ui, previous=guided)
    assert "control_1" not in graph_of(server, plain_again)["nodes"]


def test_the_hires_fix_generates_twice_the_size(ui: Ui, server: ServerProcess, models):
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=64, steps=4, seed=12)
    assert ui.page.is_hidden("#gen-hires-fields")
    ui.page.check("#gen-hires")
    ui.page.fill("#gen-hires-scale", "2")
    ui.page.fill("#gen-hires-strength", "0.5")
    ui.page.fill("#gen-hires-steps", "3")
    assert "64 × 64 first, then 128 × 128" in ui.page.inner_text("#gen-hires-hint")
    name = generate(ui)
    dto = image_dto(server, name)
    assert (dto["width"], dto["height"]) == (128, 128)
    nodes = graph_of(server, name)["nodes"]
    assert nodes["hires_denoise"]["strength"] == 0.5 and nodes["hires_denoise"]["steps"] == 3
    with server.api() as api:
        metadata = api.get(f"/images/{name}/metadata").json()["metadata"]
    assert (metadata["hrf_scale"], metadata["width"]) == (2.0, 64)
    ui.page.uncheck("#gen-hires")
    plain = generate(ui, previous=name)
    assert image_dto(server, plain)["width"] == 64

"""The Generate page in a real Chromium with the tiny model: preview while it runs, then the new image in the
gallery without a reload; cancel; the queue; errors in words, naming the node that failed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, copy_tiny_model, fill_form, wait_for_model

pytestmark = pytest.mark.browser

# Collects every src the preview <img> shows, in order (the preview changes faster than a test can poll).
RECORD_PREVIEWS = """() => {
    window.__previews = [];
    const img = document.getElementById("gen-preview-image");
    new MutationObserver(() => window.__previews.push(img.getAttribute("src")))
        .observe(img, {attributes: true, attributeFilter: ["src"]});
}"""


def test_generate_shows_the_preview_then_the_new_image_in_the_gallery(ui: Ui, server: ServerProcess, tiny_model):
    ui.open("#/generate")
    ui.mark_document()
    ui.page.evaluate(RECORD_PREVIEWS)
    fill_form(ui, prompt="a lighthouse at dusk", size=128, steps=12, seed=42)
    ui.page.click("#gen-invoke")

    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    assert ui.page.evaluate("document.getElementById('gen-progress').value") == 1
    previews = ui.page.evaluate("window.__previews")
    steps = [src for src in previews if src.startswith("data:image/")]
    assert steps, f"no step preview was shown: {previews}"
    final = previews[-1]
    match = re.fullmatch(r"/api/v1/images/([0-9a-f-]+\.png)/full", final)
    assert match, f"the preview did not end on the new image: {final}"
    name = match.group(1)
    # The result strip has it too.
    ui.page.wait_for_selector(f'#gen-results li[data-name="{name}"]', timeout=WAIT_MS)

    # The gallery got it from the WebSocket; no reload anywhere.
    ui.go("gallery")
    ui.page.wait_for_selector(f'#gallery-grid .tile[data-name="{name}"]', timeout=WAIT_MS)
    assert ui.gallery_names()[0] == name
    ui.assert_not_reloaded()

    # The PNG carries the settings (the metadata_accumulator was wired to l2i), and the viewer reads them.
    with server.api() as api:
        metadata = api.get(f"/images/{name}/metadata").json()["metadata"]
    assert metadata["positive_prompt"] == "a lighthouse at dusk"
    assert (metadata["seed"], metadata["steps"], metadata["width"]) == (42, 12, 128)
    assert metadata["model"] == {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
    ui.page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer-source:has-text('imagegraph')", timeout=WAIT_MS)
    assert "a lighthouse at dusk" in ui.page.inner_text("#viewer-meta")


def test_cancel_a_run(ui: Ui, server: ServerProcess, tiny_model):
    ui.open("#/generate")
    # Long enough to be caught mid-run on any machine: 1000 steps at 256×256.
    fill_form(ui, prompt="a very long run", size=256, steps=1000, seed=7)
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-status:has-text('Step')", timeout=WAIT_MS)
    # The queue shows it running, with its own cancel button.
    ui.page.wait_for_selector("#queue-list li.running", timeout=WAIT_MS)
    session_id = ui.page.get_attribute("#queue-list li.running", "data-session")

    ui.page.click("#gen-cancel")
    ui.page.wait_for_selector("#gen-status:has-text('Canceled')", timeout=WAIT_MS)
    ui.page.wait_for_selector("#queue-empty", state="visible", timeout=WAIT_MS)
    assert ui.page.is_disabled("#gen-cancel")
    with server.api() as api:
        assert api.get(f"/sessions/{session_id}").json()["status"] == "canceled"
        assert api.get("/queue").json() == {"running": None, "pending": []}
        listed = api.get("/images/", params={"limit": 500}).json()["items"]
    assert not [image for image in listed if image["session_id"] == session_id]


def test_several_images_queue_up_and_each_lands_in_the_results(ui: Ui, server: ServerProcess, tiny_model):
    ui.open("#/generate")
    fill_form(ui, prompt="three small ones", size=64, steps=4, seed=100, count=3)
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-status:has-text('image 3 of 3')", timeout=WAIT_MS)
    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    ui.page.wait_for_function("document.querySelectorAll('#gen-results li').length >= 3", timeout=WAIT_MS)
    names = ui.page.eval_on_selector_all("#gen-results li", "items => items.slice(0, 3).map(i => i.dataset.name)")
    with server.api() as api:
        seeds = sorted(api.get(f"/images/{name}/metadata").json()["metadata"]["seed"] for name in names)
    assert seeds == [100, 101, 102]


def test_a_bad_size_is_refused_in_the_form_before_anything_is_sent(ui: Ui, server: ServerProcess, tiny_model):
    ui.open("#/generate")
    fill_form(ui, prompt="odd size", size=128, steps=4, seed=1)
    ui.page.fill("#gen-width", "100")
    requests: list[str] = []
    ui.page.on("request", lambda request: requests.append(request.url))
    ui.page.click("#gen-invoke")
    error = ui.page.wait_for_selector("#gen-form-error:has-text('Width')", timeout=WAIT_MS)
    assert "multiple of 8" in error.inner_text()
    assert ui.page.evaluate("document.activeElement.id") == "gen-width"
    assert not [url for url in requests if "/sessions" in url]


def test_a_failing_node_is_named_in_the_error(ui: Ui, server: ServerProcess, tiny_model, tiny_cache, tmp_path: Path):
    # A model whose UNet weights are garbage: it registers (the probe reads only the configs), then fails
    # when the denoise node loads it.
    broken = copy_tiny_model(tiny_cache, tmp_path / "models" / "broken")
    with server.api() as api:
        assert api.post("/models/import", json={"location": str(broken)}).status_code == 201
        wait_for_model(api, "broken")
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"\0" * 64)

    ui.open("#/generate")
    fill_form(ui, prompt="doomed", size=64, steps=4, seed=3)
    ui.page.select_option("#gen-model", "sd-1/main/broken")
    ui.page.click("#gen-invoke")
    error = ui.page.wait_for_selector("#gen-error:not([hidden])", timeout=WAIT_MS)
    text = error.inner_text()
    assert "“denoise” (denoise_latents) node failed" in text, text
    ui.page.wait_for_selector("#gen-status:has-text('Failed')", timeout=WAIT_MS)
    shutil.rmtree(broken)

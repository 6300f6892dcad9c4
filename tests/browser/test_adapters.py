"""LoRAs, embeddings, a VAE of one's choice and clip skip on the Generate page, in a real Chromium with the
tiny model and tiny adapter files: chosen in the form, recorded in the image, shown in the viewer and brought
back by "Use these settings", from our images and from A1111's."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.models.tiny_adapters import write_tiny_embedding, write_tiny_lora, write_tiny_vae
from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, fill_form, import_models, lora_weight, pick
from tests.browser.images import png_bytes, upload

pytestmark = pytest.mark.browser

STYLE = "sd-1/lora/style"


@pytest.fixture(scope="module")
def adapters(server: ServerProcess, tiny_model, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("adapters")
    with server.api() as api:
        import_models(
            api,
            write_tiny_lora(folder / "style.safetensors", "kohya", seed=4),
            write_tiny_lora(folder / "grain.safetensors", "loha", seed=5),
            write_tiny_embedding(folder / "myemb.safetensors", vectors=2),
            write_tiny_vae(folder / "othervae"),
        )


def newest_result(ui: Ui) -> str:
    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    ui.page.wait_for_selector("#gen-results li", timeout=WAIT_MS)
    return ui.page.get_attribute("#gen-results li", "data-name")


def pixels(server: ServerProcess, name: str) -> np.ndarray:
    with server.api() as api:
        png = api.get(f"/images/{name}/full").content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_a_lora_vae_and_clip_skip_chosen_in_generate_come_back_with_use_these_settings(
    ui: Ui, server: ServerProcess, adapters
):
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=64, steps=4, seed=11)
    pick(ui, "lora", "sty", STYLE)
    # The new LoRA's weight has the focus, ready to be set.
    assert ui.page.evaluate("document.activeElement.matches('[data-weight]')")
    ui.page.fill(lora_weight(STYLE), "0.6")
    ui.page.select_option("#gen-vae", "sd-1/vae/othervae")
    ui.page.fill("#gen-clip-skip", "1")
    ui.page.click("#gen-invoke")
    name = newest_result(ui)

    with server.api() as api:
        body = api.get(f"/images/{name}/metadata").json()
    metadata = body["metadata"]
    assert metadata["loras"] == [
        {"lora": {"model_name": "style", "base_model": "sd-1", "model_type": "lora"}, "weight": 0.6}
    ]
    assert metadata["vae"]["model_name"] == "othervae" and metadata["clip_skip"] == 1
    assert body["graph"]["nodes"]["lora_1"]["weight"] == 0.6

    # The form moves on to something else...
    ui.page.click('#gen-loras button[aria-label="Remove the LoRA style"]')
    ui.page.wait_for_selector(f'#gen-loras li[data-lora="{STYLE}"]', state="detached", timeout=WAIT_MS)
    ui.page.select_option("#gen-vae", "")
    ui.page.fill("#gen-clip-skip", "0")

    # ...the viewer shows what the image was made with, and brings it back.
    ui.page.click(f'#gen-results li[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer-source:has-text('imagegraph')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "style × 0.6" in meta and "othervae" in meta and "Clip skip" in meta, meta
    ui.page.click("#viewer-use")
    ui.page.wait_for_selector("#page-generate:not([hidden])", timeout=WAIT_MS)
    assert ui.page.input_value(lora_weight(STYLE)) == "0.6"
    assert ui.page.input_value("#gen-vae") == "sd-1/vae/othervae"
    assert ui.page.input_value("#gen-clip-skip") == "1"
    notice = ui.page.wait_for_selector(".notice:has-text('Settings from')", timeout=WAIT_MS).inner_text()
    assert "Not installed" not in notice

    # And the form keeps it across a reload, as it keeps everything else.
    ui.page.reload()
    ui.wait_live()
    ui.page.wait_for_selector(lora_weight(STYLE), timeout=WAIT_MS)
    assert ui.page.input_value(lora_weight(STYLE)) == "0.6"
    ui.page.wait_for_selector('#gen-vae option[value="sd-1/vae/othervae"]', state="attached", timeout=WAIT_MS)
    assert ui.page.input_value("#gen-vae") == "sd-1/vae/othervae"


def test_loras_keep_their_order_and_each_its_weight(ui: Ui, server: ServerProcess, adapters):
    ui.open("#/generate")
    fill_form(ui, prompt="two at once", size=64, steps=2, seed=3)
    pick(ui, "lora", "grain", "sd-1/lora/grain")
    # From the keyboard: type, arrow to the option, Enter.
    ui.page.fill("#gen-lora-search", "st")
    ui.page.press("#gen-lora-search", "ArrowDown")
    ui.page.press("#gen-lora-search", "Enter")
    ui.page.wait_for_selector(lora_weight(STYLE), timeout=WAIT_MS)
    assert ui.page.eval_on_selector_all("#gen-loras li", "rows => rows.map(r => r.dataset.lora)") == [
        "sd-1/lora/grain",
        STYLE,
    ]
    # A LoRA already added is not offered again.
    ui.page.fill("#gen-lora-search", "")
    assert ui.page.eval_on_selector_all("#gen-lora-options [role=option]", "os => os.length") == 0
    ui.page.press("#gen-lora-search", "Escape")
    # The slider sets the number beside it; a negative weight is fine.
    slider = '#gen-loras li[data-lora="sd-1/lora/grain"] [data-weight-slider]'
    ui.page.eval_on_selector(slider, "s => { s.value = '-0.5'; s.dispatchEvent(new Event('input', {bubbles: true})); }")
    assert ui.page.input_value(lora_weight("sd-1/lora/grain")) == "-0.5"
    ui.page.fill(lora_weight(STYLE), "1.25")
    ui.page.click("#gen-invoke")
    name = newest_result(ui)
    with server.api() as api:
        loras = api.get(f"/images/{name}/metadata").json()["metadata"]["loras"]
    assert [(lora["lora"]["model_name"], lora["weight"]) for lora in loras] == [("grain", -0.5), ("style", 1.25)]

    # A weight out of the server's range is refused in the form, on that LoRA's field.
    ui.page.fill(lora_weight(STYLE), "12")
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-form-error:has-text('The weight of style')", timeout=WAIT_MS)
    assert ui.page.evaluate("document.activeElement.closest('li')?.dataset.lora") == STYLE


def test_the_embedding_picker_writes_its_name_at_the_cursor_and_changes_the_image(
    ui: Ui, server: ServerProcess, adapters
):
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=64, steps=4, seed=21)
    ui.page.eval_on_selector("#gen-prompt", "area => { area.focus(); area.setSelectionRange(12, 12); }")
    pick(ui, "embedding", "my", "sd-1/embedding/myemb")
    assert ui.page.input_value("#gen-prompt") == "a lighthouse <myemb> at dusk"
    # The cursor is after it, in the prompt, to go on typing.
    assert ui.page.evaluate("[document.activeElement.id, document.activeElement.selectionStart]") == ["gen-prompt", 20]

    # Into the negative prompt when that is chosen.
    ui.page.check("#gen-embedding-into-negative")
    pick(ui, "embedding", "", "sd-1/embedding/myemb")
    assert ui.page.input_value("#gen-negative") == "<myemb>"
    ui.page.fill("#gen-negative", "")

    ui.page.click("#gen-invoke")
    with_embedding = newest_result(ui)
    ui.page.fill("#gen-prompt", "a lighthouse myemb at dusk")
    ui.page.click("#gen-invoke")
    ui.page.wait_for_function(
        "name => document.querySelector('#gen-results li')?.dataset.name !== name", arg=with_embedding, timeout=WAIT_MS
    )
    as_text = newest_result(ui)

    with server.api() as api:
        graph = api.get(f"/images/{with_embedding}/metadata").json()["graph"]
    assert graph["nodes"]["pos"]["prompt"] == "a lighthouse <myemb> at dusk"
    difference = np.abs(pixels(server, with_embedding) - pixels(server, as_text)).mean()
    assert difference > 0.3, "the embedding made no difference to the image"


def test_an_a1111_image_restores_its_loras_and_says_which_are_not_installed(ui: Ui, server: ServerProcess, adapters):
    parameters = (
        "a red fox <lora:style:0.7>, snow <lora:absent:0.5>\n"
        "Negative prompt: blurry\n"
        "Steps: 4, Sampler: Euler, CFG scale: 6, Seed: 99, Size: 64x64, Model: tiny, VAE: othervae, Clip skip: 2, "
        'Lora hashes: "style: 0123abcd, absent: 4567ef01", Refiner: sd_xl_refiner_1.0 [7440042bbd], '
        "Refiner switch at: 0.8"
    )
    with server.api() as api:
        name = upload(api, png_bytes(64, 64, text={"parameters": parameters}), "fox.png")["image_name"]
    ui.open("#/gallery")
    ui.page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer-source:has-text('Automatic1111')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "style × 0.7" in meta and "absent × 0.5" in meta and "othervae" in meta, meta
    assert "sd_xl_refiner_1.0, switch at 0.8" in meta, meta

    ui.page.click("#viewer-use")
    ui.page.wait_for_selector("#page-generate:not([hidden])", timeout=WAIT_MS)
    assert ui.page.input_value(lora_weight(STYLE)) == "0.7"
    assert ui.page.eval_on_selector_all("#gen-loras li", "rows => rows.map(r => r.dataset.lora)") == [STYLE]
    missing = ui.page.inner_text("#gen-lora-missing")
    assert "absent (0.5)" in missing and "style" not in missing, missing
    notice = ui.page.wait_for_selector(".notice-warning", timeout=WAIT_MS).inner_text()
    assert "LoRA “absent”" in notice and "refiner “sd_xl_refiner_1.0”" in notice, notice
    assert "LoRA “style”" not in notice and "VAE" not in notice, notice
    # The tags are not part of the prompt A1111 conditioned on.
    assert ui.page.input_value("#gen-prompt") == "a red fox, snow"
    assert ui.page.input_value("#gen-vae") == "sd-1/vae/othervae"
    assert ui.page.input_value("#gen-clip-skip") == "1"

    # The note stays until dismissed; generating with what was found works.
    ui.page.click("#gen-lora-missing button")
    assert ui.page.is_hidden("#gen-lora-missing")
    ui.page.click("#gen-invoke")
    generated = newest_result(ui)
    with server.api() as api:
        loras = api.get(f"/images/{generated}/metadata").json()["metadata"]["loras"]
    assert [(lora["lora"]["model_name"], lora["weight"]) for lora in loras] == [("style", 0.7)]

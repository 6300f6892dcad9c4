"""SDXL (with a refiner) and SD-2 768-v models on the Generate page, in a real Chromium with the tiny SDXL,
SDXL-refiner and SD-2 v-prediction models: each kind of model gets its size, the pickers offer only what fits
the model's base, and an SDXL image with a refiner shows its settings and brings them back."""

from __future__ import annotations

import pytest

from server.models.tiny_adapters import write_tiny_embedding, write_tiny_lora
from server.models.tiny_sdxl import write_tiny_model_of_base
from tests.browser.conftest import (
    WAIT_MS,
    ServerProcess,
    Ui,
    fill_form,
    import_models,
    lora_weight,
    offered,
    open_ui,
    pick,
    wait_for_model,
)
from tests.browser.test_layout import UNLABELLED

pytestmark = pytest.mark.browser

SDXL = "sdxl/main/tiny-xl"
REFINER = "sdxl-refiner/main/tiny-refiner"
SD2_V = "sd-2/main/tiny-v"
TINY = "sd-1/main/tiny"


@pytest.fixture(scope="module")
def bases(server: ServerProcess, tiny_model, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("bases")
    with server.api() as api:
        import_models(
            api,
            write_tiny_model_of_base(folder / "tiny-xl", "sdxl"),
            write_tiny_model_of_base(folder / "tiny-refiner", "sdxl-refiner"),
            write_tiny_lora(folder / "style.safetensors", "kohya", seed=4),
            write_tiny_lora(folder / "xl-style.safetensors", "kohya", base="sdxl", seed=5),
            write_tiny_embedding(folder / "myemb.safetensors"),
            write_tiny_embedding(folder / "xlemb.safetensors", sdxl=True),
        )
        # The tiny SD-2 model has SD-1's widths: the folder it sits in says which base it is.
        write_tiny_model_of_base(server.root / "models" / "sd-2" / "main" / "tiny-v", "sd-2")
        api.post("/models/sync")
        assert wait_for_model(api, "tiny-v")["prediction_type"] == "v_prediction"


def size(ui: Ui) -> tuple[str, str]:
    return ui.page.input_value("#gen-width"), ui.page.input_value("#gen-height")


def test_each_kind_of_model_gets_its_size_and_a_size_typed_for_it_is_kept(ui: Ui, server: ServerProcess, bases):
    ui.open("#/generate")
    ui.page.wait_for_selector(f'#gen-model option[value="{SD2_V}"]', state="attached", timeout=WAIT_MS)
    ui.page.select_option("#gen-model", TINY)
    assert size(ui) == ("512", "512")
    ui.page.fill("#gen-width", "320")
    ui.page.fill("#gen-height", "256")
    ui.page.select_option("#gen-model", SDXL)
    assert size(ui) == ("1024", "1024")
    ui.page.fill("#gen-width", "896")
    ui.page.select_option("#gen-model", SD2_V)
    assert size(ui) == ("768", "768")
    ui.page.select_option("#gen-model", TINY)
    assert size(ui) == ("320", "256")
    ui.page.select_option("#gen-model", SDXL)
    assert size(ui) == ("896", "1024")
    # Kept across a reload with the rest of the form.
    ui.page.reload()
    ui.wait_live()
    ui.page.wait_for_selector(f'#gen-model option[value="{SDXL}"]', state="attached", timeout=WAIT_MS)
    assert ui.page.input_value("#gen-model") == SDXL and size(ui) == ("896", "1024")
    # Refiner models are offered as refiners only, not as the model to generate with.
    assert not ui.page.query_selector(f'#gen-model option[value="{REFINER}"]')


def test_the_pickers_offer_only_what_fits_the_models_base(ui: Ui, server: ServerProcess, bases):
    ui.open("#/generate")
    fill_form(ui, prompt="a cabin", size=64, steps=2, seed=1)
    assert offered(ui, "lora") == ["sd-1/lora/style"]
    assert offered(ui, "embedding") == ["sd-1/embedding/myemb"]
    assert ui.page.is_hidden("#gen-refiner-section")
    ui.page.select_option("#gen-model", SDXL)
    assert offered(ui, "lora") == ["sdxl/lora/xl-style"]
    assert offered(ui, "embedding") == ["sdxl/embedding/xlemb"]
    assert ui.page.is_visible("#gen-refiner-section")
    ui.page.fill("#gen-lora-search", "nothing like it")
    assert "Nothing matches" in ui.page.inner_text("#gen-lora-options")
    ui.page.press("#gen-lora-search", "Escape")
    assert ui.page.is_hidden("#gen-lora-options")

    # A LoRA added for one base is marked when the model changes to another, and the form says so.
    ui.page.select_option("#gen-model", TINY)
    pick(ui, "lora", "sty", "sd-1/lora/style")
    ui.page.select_option("#gen-model", SDXL)
    ui.page.fill("#gen-width", "64")
    ui.page.fill("#gen-height", "64")
    row = ui.page.wait_for_selector('#gen-loras li.has-problem[data-lora="sd-1/lora/style"]', timeout=WAIT_MS)
    assert "for SD-1 models, not SDXL" in row.inner_text()
    requests: list[str] = []
    ui.page.on("request", lambda request: requests.append(request.url))
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-form-error:has-text('The LoRA style is for SD-1 models')", timeout=WAIT_MS)
    assert not [url for url in requests if "/sessions" in url or "/app/graph" in url]
    # Back on an SD-1 model it fits again.
    ui.page.select_option("#gen-model", TINY)
    assert not ui.page.query_selector("#gen-loras li.has-problem")


def test_sdxl_with_a_refiner_generates_and_use_these_settings_brings_it_back(ui: Ui, server: ServerProcess, bases):
    ui.open("#/generate")
    fill_form(ui, prompt="a lighthouse at dusk", size=128, steps=6, seed=5, model=SDXL)
    pick(ui, "lora", "xl", "sdxl/lora/xl-style")
    ui.page.fill(lora_weight("sdxl/lora/xl-style"), "0.5")
    ui.page.select_option("#gen-refiner", REFINER)
    ui.page.fill("#gen-refiner-switch", "0.6")
    ui.page.click("#gen-refiner-advanced summary")
    ui.page.fill("#gen-refiner-aesthetic", "7")
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    name = ui.page.get_attribute("#gen-results li", "data-name")

    with server.api() as api:
        body = api.get(f"/images/{name}/metadata").json()
    metadata, nodes = body["metadata"], body["graph"]["nodes"]
    assert metadata["generation_mode"] == "sdxl_txt2img"
    assert metadata["refiner_model"]["model_name"] == "tiny-refiner" and metadata["refiner_start"] == 0.6
    assert metadata["refiner_positive_aesthetic_score"] == 7
    assert nodes["model"]["type"] == "sdxl_model_loader" and nodes["lora_1"]["type"] == "sdxl_lora_loader"
    assert nodes["refiner_denoise"]["denoising_start"] == 0.6

    # The image and its settings, refiner included.
    ui.page.click(f'#gen-results li[data-name="{name}"] button')
    ui.page.wait_for_function("document.getElementById('viewer-image').naturalWidth === 128", timeout=WAIT_MS)
    # The record's fields come first, the metadata (and its source) once its request answers.
    ui.page.wait_for_selector("#viewer-source:has-text('imagegraph')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "tiny-xl" in meta and "xl-style × 0.5" in meta, meta
    assert "tiny-refiner, switch at 0.6" in meta and "aesthetic score 7" in meta, meta
    ui.page.keyboard.press("Escape")

    # The form moves on: no refiner, another model of another size...
    ui.page.select_option("#gen-refiner", "")
    ui.page.select_option("#gen-model", TINY)
    ui.page.wait_for_selector("#gen-refiner-section", state="hidden", timeout=WAIT_MS)
    # ...and "Use these settings" brings back the SDXL model, its size, the LoRA and the refiner.
    ui.page.click(f'#gen-results li[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer-use:not([disabled])", timeout=WAIT_MS)
    ui.page.click("#viewer-use")
    ui.page.wait_for_selector("#page-generate:not([hidden])", timeout=WAIT_MS)
    assert ui.page.input_value("#gen-model") == SDXL
    assert size(ui) == ("128", "128")
    assert ui.page.input_value(lora_weight("sdxl/lora/xl-style")) == "0.5"
    assert ui.page.is_visible("#gen-refiner-section")
    assert ui.page.input_value("#gen-refiner") == REFINER
    assert ui.page.input_value("#gen-refiner-switch") == "0.6"
    assert ui.page.input_value("#gen-refiner-aesthetic") == "7"
    # The refiner's steps, CFG and scheduler were the base's: left empty, meaning just that.
    assert ui.page.input_value("#gen-refiner-steps") == ""
    assert ui.page.input_value("#gen-refiner-scheduler") == ""


def test_the_new_sections_fit_a_phone_and_every_control_has_a_label(browser, server: ServerProcess, bases, tmp_path):
    with open_ui(browser, server.url, tmp_path, viewport={"width": 390, "height": 844}) as ui:
        ui.open("#/generate")
        fill_form(ui, prompt="a lighthouse", size=128, steps=4, seed=1, model=SDXL)
        pick(ui, "lora", "xl", "sdxl/lora/xl-style")
        ui.page.select_option("#gen-refiner", REFINER)
        ui.page.click("#gen-refiner-advanced summary")
        ui.page.fill("#gen-embedding-search", "")  # the list open too
        ui.page.wait_for_selector("#gen-embedding-options:not([hidden])", timeout=WAIT_MS)
        overflow = ui.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the Generate form is {overflow}px wider than a phone"
        ui.page.screenshot(path=str(tmp_path / "generate-sections-390.png"), full_page=True)
        assert ui.page.evaluate(UNLABELLED) == []

"""The Models page in a real Chromium: a file dropped into autoimport shows up by itself; Sync; scan a folder
and add what it finds; import by path (and its error in words); edit, convert, merge, delete."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.models.tiny_adapters import write_tiny_embedding, write_tiny_lora, write_tiny_vae
from tests.browser.conftest import (
    WAIT_MS,
    ServerProcess,
    Ui,
    copy_tiny_model,
    free_port,
    import_models,
    make_root,
    open_ui,
    wait_for_model,
)

pytestmark = pytest.mark.browser


def card(name: str, base: str = "sd-1", kind: str = "main") -> str:
    return f'.model-card[data-key="{base}/{kind}/{name}"]'


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose watcher is off, so only the Sync button can bring in a dropped file."""
    root = make_root(tmp_path_factory.mktemp("quiet") / "root", with_model=False)
    proc = ServerProcess(root=root, port=free_port(), extra_env={"IMAGEGRAPH_WATCH": "false"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_model_dropped_into_autoimport_appears_without_a_click(ui: Ui, server: ServerProcess, tiny_cache):
    ui.open("#/models")
    ui.mark_document()
    ui.page.wait_for_selector("#models-status:has-text('model')", timeout=WAIT_MS)
    copy_tiny_model(tiny_cache, server.root / "autoimport" / "main" / "dropped.safetensors", "checkpoint")

    found = ui.page.wait_for_selector(card("dropped"), timeout=WAIT_MS)
    assert "checkpoint" in found.inner_text()
    # The Generate page's model list took it too.
    ui.page.wait_for_selector('#gen-model option[value="sd-1/main/dropped"]', state="attached", timeout=WAIT_MS)
    ui.assert_not_reloaded()


def test_sync_brings_in_a_file_when_nothing_watches(browser, quiet_server: ServerProcess, tiny_cache, tmp_path):
    with open_ui(browser, quiet_server.url, tmp_path) as ui:
        ui.open("#/models")
        ui.page.wait_for_selector("#models-list .empty", timeout=WAIT_MS)
        # A .safetensors proves it is complete by itself; a folder would first have to sit still for a while.
        copy_tiny_model(tiny_cache, quiet_server.root / "autoimport" / "main" / "synced.safetensors", "checkpoint")
        ui.page.click("#models-sync")
        notice = ui.page.wait_for_selector(".notice:has-text('Sync done')", timeout=WAIT_MS)
        assert "1 added (sd-1/main/synced)" in notice.inner_text()
        ui.page.wait_for_selector(card("synced"), timeout=WAIT_MS)

        # And the other way: the files go, Sync drops the model.
        (quiet_server.root / "autoimport" / "main" / "synced.safetensors").rename(tmp_path / "moved-away")
        ui.page.click("#models-sync")
        ui.page.wait_for_selector(".notice:has-text('1 removed (sd-1/main/synced)')", timeout=WAIT_MS)
        ui.page.wait_for_selector(card("synced"), state="detached", timeout=WAIT_MS)


def test_scan_a_folder_and_add_all(ui: Ui, server: ServerProcess, tiny_cache, tmp_path: Path):
    folder = tmp_path / "downloads"
    copy_tiny_model(tiny_cache, folder / "alpha.safetensors", "checkpoint")
    copy_tiny_model(tiny_cache, folder / "nested" / "beta")
    ui.open("#/models")
    ui.page.fill("#search-path", str(folder))
    ui.page.press("#search-path", "Enter")
    ui.page.wait_for_selector("#search-status:has-text('2 models found')", timeout=WAIT_MS)
    assert ui.page.eval_on_selector_all("#search-results li", "items => items.map(i => i.dataset.path)") == [
        str(folder / "alpha.safetensors"),
        str(folder / "nested" / "beta"),
    ]
    ui.page.click("#search-add-all")
    ui.page.wait_for_selector("#search-status:has-text('Added 2 of 2')", timeout=WAIT_MS)
    ui.page.wait_for_selector(card("alpha"), timeout=WAIT_MS)
    ui.page.wait_for_selector(card("beta"), timeout=WAIT_MS)


def test_import_by_path_shows_the_servers_reason_when_it_fails(ui: Ui, server: ServerProcess, tiny_cache, tmp_path):
    ui.console.allow(r"Failed to load resource: the server responded with a status of 404")
    ui.open("#/models")
    ui.page.fill("#import-location", str(tmp_path / "no-such-model.safetensors"))
    ui.page.click("#import-form button[type=submit]")
    error = ui.page.wait_for_selector("#import-form .form-error:not(:empty)", timeout=WAIT_MS)
    assert "no-such-model.safetensors" in error.inner_text()

    good = copy_tiny_model(tiny_cache, tmp_path / "gamma.safetensors", "checkpoint")
    ui.page.fill("#import-location", str(good))
    ui.page.click("#import-form button[type=submit]")
    ui.page.wait_for_selector(card("gamma"), timeout=WAIT_MS)
    assert ui.page.input_value("#import-location") == ""


def test_edit_convert_merge_and_delete(ui: Ui, server: ServerProcess, tiny_cache, tmp_path: Path):
    checkpoint = copy_tiny_model(tiny_cache, tmp_path / "delta.safetensors", "checkpoint")
    other = copy_tiny_model(tiny_cache, tmp_path / "epsilon")
    with server.api() as api:
        for location in (checkpoint, other):
            assert api.post("/models/import", json={"location": str(location)}).status_code == 201
        wait_for_model(api, "epsilon")
    ui.open("#/models")

    # Edit: a description and the legacy config, picked from the server's list.
    ui.page.click(f"{card('delta')} [data-action=edit]")
    ui.page.wait_for_selector("#model-dialog[open]", timeout=WAIT_MS)
    ui.page.fill("#model-dialog textarea[name=description]", "a tiny test checkpoint")
    configs = ui.page.eval_on_selector_all("#model-dialog select[name=config] option", "o => o.map(x => x.value)")
    assert "stable-diffusion/v1-inference.yaml" in configs
    ui.page.select_option("#model-dialog select[name=config]", "stable-diffusion/v1-inference.yaml")
    ui.page.click("#model-dialog-ok")
    ui.page.wait_for_selector("#model-dialog", state="hidden", timeout=WAIT_MS)
    ui.page.wait_for_selector(f"{card('delta')}:has-text('a tiny test checkpoint')", timeout=WAIT_MS)

    # Convert the checkpoint into a folder of our choosing; the entry becomes the diffusers copy.
    destination = tmp_path / "converted"
    destination.mkdir()
    ui.page.click(f"{card('delta')} [data-action=convert]")
    ui.page.fill("#model-dialog input[name=dest]", str(destination))
    ui.page.click("#model-dialog-ok")
    ui.page.wait_for_selector("#model-dialog", state="hidden", timeout=WAIT_MS)
    ui.page.wait_for_selector(f"{card('delta')} .tag:text-is('diffusers')", timeout=WAIT_MS)
    assert (destination / "delta" / "model_index.json").is_file()

    # Merge two of them under a new name.
    ui.page.click("#models-merge-open")
    ui.page.wait_for_selector("#model-dialog[open]", timeout=WAIT_MS)
    ui.page.select_option("#model-dialog select[name=model_1]", "delta")
    ui.page.select_option("#model-dialog select[name=model_2]", "epsilon")
    ui.page.fill("#model-dialog input[name=name]", "delta-epsilon")
    ui.page.click("#model-dialog-ok")
    ui.page.wait_for_selector("#model-dialog", state="hidden", timeout=WAIT_MS)
    ui.page.wait_for_selector(card("delta-epsilon"), timeout=WAIT_MS)

    # Delete, after confirming.
    ui.page.click(f"{card('epsilon')} [data-action=delete]")
    ui.page.wait_for_selector("#confirm-dialog[open]", timeout=WAIT_MS)
    ui.page.click("#confirm-ok")
    ui.page.wait_for_selector(card("epsilon"), state="detached", timeout=WAIT_MS)
    with server.api() as api:
        assert api.get("/models/sd-1/main/epsilon").status_code == 404
    assert other.exists()  # only the entry went: files outside the models folder are never deleted


def test_a_model_whose_file_goes_bad_shows_its_error_and_cannot_be_picked(
    ui: Ui, server: ServerProcess, tiny_cache, tmp_path: Path
):
    checkpoint = copy_tiny_model(tiny_cache, tmp_path / "zeta.safetensors", "checkpoint")
    with server.api() as api:
        assert api.post("/models/import", json={"location": str(checkpoint)}).status_code == 201
    ui.open("#/models")
    ui.page.wait_for_selector(card("zeta"), timeout=WAIT_MS)

    # Garbage where the weights were, dated a minute ago (so it is not taken for a file still being written);
    # it lies outside every watched folder, so it is the Sync button that finds out.
    checkpoint.write_bytes(b"not a safetensors file" * 10)
    past = time.time() - 60
    os.utime(checkpoint, (past, past))
    ui.page.click("#models-sync")
    error = ui.page.wait_for_selector(f"{card('zeta')}.has-error .model-error", timeout=WAIT_MS)
    assert error.inner_text().startswith("Unusable: ")
    assert ui.page.is_disabled('#gen-model option[value="sd-1/main/zeta"]')


def test_loras_embeddings_and_vaes_are_listed_under_their_base(ui: Ui, server: ServerProcess, tmp_path: Path):
    with server.api() as api:
        import_models(
            api,
            write_tiny_lora(tmp_path / "crisp.safetensors", "kohya"),
            write_tiny_lora(tmp_path / "xl-crisp.safetensors", "kohya", base="sdxl"),
            write_tiny_embedding(tmp_path / "goodhands.safetensors"),
            write_tiny_vae(tmp_path / "clearvae"),
        )
    ui.open("#/models")
    for listed, key in (
        ("LoRAs for Stable Diffusion 1.x", "sd-1/lora/crisp"),
        ("LoRAs for SDXL", "sdxl/lora/xl-crisp"),
        ("Embeddings for Stable Diffusion 1.x", "sd-1/embedding/goodhands"),
        ("VAEs for Stable Diffusion 1.x", "sd-1/vae/clearvae"),
    ):
        ui.page.wait_for_selector(f'ul[aria-label="{listed}"] .model-card[data-key="{key}"]', timeout=WAIT_MS)
    sdxl = ui.page.inner_text('section[aria-label="SDXL"]')
    assert "LoRAs (1)" in sdxl and "xl-crisp" in sdxl

    # Editing a LoRA offers what means something for it, and saving keeps the rest of its entry.
    ui.page.click(f"{card('crisp', kind='lora')} [data-action=edit]")
    ui.page.wait_for_selector("#model-dialog[open]", timeout=WAIT_MS)
    for main_only in ("variant", "prediction_type", "vae", "config"):
        assert not ui.page.query_selector(f"#model-dialog [name={main_only}]"), main_only
    ui.page.fill("#model-dialog textarea[name=description]", "sharper edges")
    ui.page.click("#model-dialog-ok")
    ui.page.wait_for_selector(f"{card('crisp', kind='lora')}:has-text('sharper edges')", timeout=WAIT_MS)
    with server.api() as api:
        saved = api.get("/models/sd-1/lora/crisp").json()
    assert saved["description"] == "sharper edges" and saved["model_format"] == "lycoris"

"""The Gallery page in a real Chromium: upload (picker and drag-and-drop), metadata, "Use these settings",
star and filter, delete, paging as you scroll, and the keyboard."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, Ui
from tests.browser.images import A1111_PARAMETERS, COMFY_PROMPT, COMFY_SDXL_REFINER_PROMPT, png_bytes, upload

pytestmark = pytest.mark.browser


def wait_for_tile(ui: Ui, name: str) -> None:
    ui.page.wait_for_selector(f'#gallery-grid .tile[data-name="{name}"]', timeout=WAIT_MS)


def newest_name(server: ServerProcess) -> str:
    with server.api() as api:
        return api.get("/images/", params={"limit": 1}).json()["items"][0]["image_name"]


def open_in_viewer(ui: Ui, name: str) -> None:
    ui.page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer[open]", timeout=WAIT_MS)


def test_upload_with_the_file_picker_then_read_its_metadata_and_reuse_it(ui: Ui, server: ServerProcess, tmp_path):
    picture = tmp_path / "fox.png"
    picture.write_bytes(png_bytes(64, 96, text={"parameters": A1111_PARAMETERS}))
    ui.open("#/gallery")
    ui.mark_document()

    ui.page.set_input_files("#gallery-upload-input", str(picture))
    ui.page.wait_for_selector("#gallery-upload-status:has-text('Uploaded 1 of 1')", timeout=WAIT_MS)
    name = newest_name(server)
    wait_for_tile(ui, name)

    open_in_viewer(ui, name)
    ui.page.wait_for_selector("#viewer-source:has-text('Automatic1111')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "a red fox in the snow, watercolor" in meta
    assert "blurry, lowres" in meta
    assert "1234" in meta and "dpmpp_2m_k" in meta
    # The full image is the uploaded one, served by the server.
    ui.page.wait_for_function("document.getElementById('viewer-image').naturalWidth === 64", timeout=WAIT_MS)

    ui.page.click("#viewer-use")
    ui.page.wait_for_selector("#page-generate:not([hidden])", timeout=WAIT_MS)
    assert ui.page.input_value("#gen-prompt") == "a red fox in the snow, watercolor"
    assert ui.page.input_value("#gen-negative") == "blurry, lowres"
    assert ui.page.input_value("#gen-seed") == "1234"
    assert ui.page.input_value("#gen-steps") == "12"
    assert ui.page.input_value("#gen-cfg") == "6.5"
    assert ui.page.input_value("#gen-width") == "64"
    assert ui.page.input_value("#gen-height") == "96"
    assert ui.page.input_value("#gen-scheduler") == "dpmpp_2m_k"
    assert not ui.page.is_checked("#gen-randomize")
    ui.assert_not_reloaded()


def test_drag_and_drop_upload_of_a_comfyui_image(ui: Ui, server: ServerProcess):
    data = png_bytes(80, 64, color=(200, 80, 40), text={"prompt": COMFY_PROMPT})
    ui.open("#/gallery")
    before = set(ui.gallery_names())
    # A real drop: a DataTransfer holding a File, dispatched the way the browser does it.
    ui.page.evaluate(
        """async (b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "cabin.png", {type: "image/png"}));
            const zone = document.getElementById("page-gallery");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
            }
        }""",
        base64.b64encode(data).decode(),
    )
    ui.page.wait_for_selector("#gallery-upload-status:has-text('Uploaded 1 of 1')", timeout=WAIT_MS)
    name = newest_name(server)
    assert name not in before
    wait_for_tile(ui, name)
    open_in_viewer(ui, name)
    ui.page.wait_for_selector("#viewer-source:has-text('ComfyUI')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "a comfy cabin" in meta and "777" in meta and "euler_a" in meta


def test_a_comfyui_sdxl_image_shows_its_lora_and_refiner_and_names_what_is_not_installed(ui: Ui, server: ServerProcess):
    with server.api() as api:
        name = upload(api, png_bytes(64, 64, text={"prompt": COMFY_SDXL_REFINER_PROMPT}), "greenhouse.png")[
            "image_name"
        ]
    ui.open("#/gallery")
    wait_for_tile(ui, name)
    open_in_viewer(ui, name)
    ui.page.wait_for_selector("#viewer-source:has-text('ComfyUI')", timeout=WAIT_MS)
    meta = ui.page.inner_text("#viewer-meta")
    assert "sd_xl_base_1.0" in meta and "ink-sketch × 0.6" in meta, meta
    assert "sd_xl_refiner_1.0, switch at 0.8" in meta and "CFG 7" in meta, meta
    assert "A1111's “Clip skip: 2”" in meta, meta

    # None of those files is on this server: each is named, and the form keeps what it had for them.
    ui.page.click("#viewer-use")
    ui.page.wait_for_selector("#page-generate:not([hidden])", timeout=WAIT_MS)
    notice = ui.page.wait_for_selector(".notice-warning", timeout=WAIT_MS).inner_text()
    for missing in ("model “sd_xl_base_1.0”", "LoRA “ink-sketch”", "refiner “sd_xl_refiner_1.0”"):
        assert missing in notice, notice
    assert "ink-sketch (0.6)" in ui.page.inner_text("#gen-lora-missing")
    assert ui.page.input_value("#gen-prompt") == "a glass greenhouse"
    assert ui.page.input_value("#gen-clip-skip") == "1"
    assert ui.page.input_value("#gen-seed") == "4321"


def test_a_file_that_is_not_an_image_is_refused_in_words(ui: Ui, server: ServerProcess, tmp_path: Path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    ui.console.allow(r"Failed to load resource: the server responded with a status of 415")
    ui.open("#/gallery")
    count = len(ui.gallery_names())
    ui.page.set_input_files("#gallery-upload-input", str(bogus))
    notice = ui.page.wait_for_selector(".notice-error", timeout=WAIT_MS)
    text = notice.inner_text()
    assert text.startswith("notes.png: ")
    assert "415" not in text and len(text) > len("notes.png: ") + 10  # the server's sentence, not a status code
    assert len(ui.gallery_names()) == count


def test_delete_an_image_after_confirming(ui: Ui, server: ServerProcess):
    with server.api() as api:
        image = upload(api, png_bytes(color=(10, 200, 10)), "doomed.png")
    name = image["image_name"]
    ui.open("#/gallery")
    wait_for_tile(ui, name)
    open_in_viewer(ui, name)

    ui.page.click("#viewer-delete")
    ui.page.wait_for_selector("#confirm-dialog[open]", timeout=WAIT_MS)
    # Escape backs out and nothing is deleted.
    ui.page.keyboard.press("Escape")
    ui.page.wait_for_selector("#confirm-dialog", state="hidden", timeout=WAIT_MS)
    with server.api() as api:
        assert api.get(f"/images/{name}").status_code == 200

    ui.page.click("#viewer-delete")
    ui.page.wait_for_selector("#confirm-dialog[open]", timeout=WAIT_MS)
    ui.page.keyboard.press("Enter")  # the focused "Delete" button
    ui.page.wait_for_selector(f'#gallery-grid .tile[data-name="{name}"]', state="detached", timeout=WAIT_MS)
    with server.api() as api:
        assert api.get(f"/images/{name}").status_code == 404


def test_star_then_filter_starred_and_by_category(ui: Ui, server: ServerProcess):
    with server.api() as api:
        plain = upload(api, png_bytes(color=(1, 2, 3)), "plain.png")["image_name"]
        liked = upload(api, png_bytes(color=(250, 200, 0)), "liked.png")["image_name"]
        mask = upload(api, png_bytes(color=(0, 0, 0)), "mask.png", category="mask")["image_name"]
    ui.open("#/gallery")
    wait_for_tile(ui, liked)
    open_in_viewer(ui, liked)
    ui.page.click("#viewer-star")
    ui.page.wait_for_selector('#viewer-star[aria-pressed="true"]', timeout=WAIT_MS)
    ui.page.keyboard.press("Escape")
    ui.page.wait_for_selector("#viewer", state="hidden", timeout=WAIT_MS)
    ui.page.wait_for_selector(f'.tile.starred[data-name="{liked}"]', timeout=WAIT_MS)

    ui.page.check("#gallery-starred")
    ui.page.wait_for_function(
        "name => [...document.querySelectorAll('#gallery-grid .tile')].every(t => t.classList.contains('starred'))"
        " && document.querySelector(`.tile[data-name='${name}']`)",
        arg=liked,
        timeout=WAIT_MS,
    )
    assert plain not in ui.gallery_names()

    ui.page.uncheck("#gallery-starred")
    ui.page.select_option("#gallery-category", "mask")
    ui.page.wait_for_function(
        "name => { const names = [...document.querySelectorAll('#gallery-grid .tile')].map(t => t.dataset.name);"
        " return names.length === 1 && names[0] === name; }",
        arg=mask,
        timeout=WAIT_MS,
    )


def test_keyboard_moves_through_the_grid_and_opens_and_closes_the_viewer(ui: Ui, server: ServerProcess):
    with server.api() as api:
        for shade in range(3):
            upload(api, png_bytes(color=(shade * 60, 0, 0)), f"k{shade}.png")
    ui.open("#/gallery")
    ui.page.wait_for_function("document.querySelectorAll('#gallery-grid .tile').length >= 3", timeout=WAIT_MS)
    names = ui.gallery_names()
    # The grid is one tab stop: focus its first tile, then arrows move inside it.
    ui.page.focus("#gallery-starred")
    ui.page.keyboard.press("Tab")
    ui.page.keyboard.press("Tab")
    focused = ui.page.evaluate("document.activeElement.closest('.tile')?.dataset.name")
    assert focused == names[0]
    ui.page.keyboard.press("ArrowRight")
    assert ui.page.evaluate("document.activeElement.closest('.tile')?.dataset.name") == names[1]
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_selector("#viewer[open]", timeout=WAIT_MS)
    ui.page.keyboard.press("Escape")
    ui.page.wait_for_selector("#viewer", state="hidden", timeout=WAIT_MS)
    # Focus goes back where it was.
    assert ui.page.evaluate("document.activeElement.closest('.tile')?.dataset.name") == names[1]


def test_the_gallery_loads_a_page_at_a_time_as_you_scroll_and_prepends_new_images(ui: Ui, server: ServerProcess):
    with server.api() as api, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: upload(api, png_bytes(32, 48, (i % 256, 90, 160)), f"p{i}.png"), range(230)))
        expected = []
        while len(expected) < api.get("/images/", params={"limit": 1}).json()["total"]:
            page = api.get("/images/", params={"offset": len(expected), "limit": 500}).json()
            expected += [image["image_name"] for image in page["items"]]
    total = len(expected)
    listed: list[str] = []
    ui.page.on("request", lambda r: listed.append(r.url) if "/api/v1/images/?" in r.url else None)

    ui.open("#/gallery")
    ui.page.wait_for_selector(f"#gallery-total:has-text('{total:,} images')", timeout=WAIT_MS)
    assert len(ui.gallery_names()) == 100, "the first screen should hold one page, not everything"
    first_tile = ui.page.query_selector("#gallery-grid .tile")
    img = first_tile.query_selector("img")
    assert img.get_attribute("loading") == "lazy"
    assert img.get_attribute("width") and img.get_attribute("height")
    ui.page.evaluate("document.querySelector('#gallery-grid .tile').__kept = true")

    while len(ui.gallery_names()) < total:
        shown = len(ui.gallery_names())
        ui.page.evaluate("document.getElementById('gallery-sentinel').scrollIntoView()")
        ui.page.wait_for_function(f"document.querySelectorAll('#gallery-grid .tile').length > {shown}", timeout=WAIT_MS)
    assert ui.gallery_names() == expected
    limits = [int(parse_qs(urlsplit(url).query)["limit"][0]) for url in listed]
    assert all(limit <= 500 for limit in limits) and len(listed) == -(-total // 100), [u.split("?")[1] for u in listed]

    # A new image goes on top; the tiles already there are left alone (not re-rendered).
    with server.api() as api:
        newest = upload(api, png_bytes(color=(255, 255, 255)), "newest.png")["image_name"]
    ui.page.wait_for_function(
        "n => document.querySelector('#gallery-grid .tile').dataset.name === n", arg=newest, timeout=WAIT_MS
    )
    assert ui.page.evaluate(f"document.querySelector('.tile[data-name=\"{expected[0]}\"]').__kept") is True
    assert len(ui.gallery_names()) == total + 1

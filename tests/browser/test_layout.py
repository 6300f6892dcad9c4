"""Every page at a laptop width and a phone width, labels on every control, a visible focus ring, and the
keyboard path through the Generate form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, open_ui
from tests.browser.images import png_bytes, upload
from tests.graph.conftest import t2i_graph

pytestmark = pytest.mark.browser

# Controls without a name a screen reader could read out: no <label>, no aria-label(ledby), no text.
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea, button, a[href]")]
    .filter(el => !(el.type === "hidden"))
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
        && !el.getAttribute("aria-labelledby") && !el.textContent.trim() && !el.title)
    .map(el => el.outerHTML.slice(0, 120))"""


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_every_page_fits_the_width_and_every_control_has_a_label(
    browser, server: ServerProcess, tiny_model, tmp_path: Path, width: int, height: int
):
    with server.api() as api:
        upload(api, png_bytes(color=(30, 160, 90)), "layout.png")
    with open_ui(browser, server.url, tmp_path, viewport={"width": width, "height": height}) as ui:
        for page_name in ("generate", "gallery", "workflow", "models"):
            ui.page.goto(f"{server.url}/#/{page_name}")
            ui.wait_live()
            if page_name == "workflow":  # with a graph on the canvas, so its nodes' controls are checked too
                ui.page.wait_for_function("window.imagegraph?.editor?.ready", timeout=WAIT_MS)
                ui.page.evaluate("g => window.imagegraph.bus.emit('open-workflow', {graph: g})", t2i_graph())
            selector = {
                "generate": "#gen-model option",
                "gallery": ".tile",
                "workflow": '.wf-node[data-node-type="metadata_accumulator"] [data-field]',
                "models": ".model-card",
            }[page_name]
            ui.page.wait_for_selector(selector, state="attached", timeout=WAIT_MS)
            overflow = ui.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{page_name} is {overflow}px wider than a {width}px window"
            ui.page.screenshot(path=str(tmp_path / f"{page_name}-{width}.png"), full_page=True)
            assert ui.page.evaluate(UNLABELLED) == []
            # The nav stays on screen and usable.
            for link in ui.page.query_selector_all("nav a"):
                box = link.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= width

        # The image viewer fits too, with its Close button on screen.
        ui.page.goto(f"{server.url}/#/gallery")
        ui.wait_live()
        ui.page.click("#gallery-grid .tile button")
        ui.page.wait_for_selector("#viewer[open]", timeout=WAIT_MS)
        close = ui.page.query_selector("#viewer-close").bounding_box()
        assert close["x"] + close["width"] <= width and close["y"] >= 0
        ui.page.screenshot(path=str(tmp_path / f"viewer-{width}.png"))
        ui.page.keyboard.press("Escape")


def test_the_generate_form_works_from_the_keyboard_alone(browser, server: ServerProcess, tiny_model, tmp_path):
    with open_ui(browser, server.url, tmp_path) as ui:
        ui.open("#/generate")
        ui.page.wait_for_selector('#gen-model option[value="sd-1/main/tiny"]', state="attached", timeout=WAIT_MS)
        # Tab from the top of the page reaches the prompt, and the focus ring shows.
        ui.page.focus("nav a[data-page='models']")
        for _ in range(12):
            ui.page.keyboard.press("Tab")
            if ui.page.evaluate("document.activeElement.id") == "gen-prompt":
                break
        assert ui.page.evaluate("document.activeElement.id") == "gen-prompt"
        outline = ui.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), "no visible focus on the prompt"
        ui.page.keyboard.type("typed, not clicked")
        for field, value in (("#gen-width", "64"), ("#gen-height", "64"), ("#gen-steps", "3")):
            ui.page.fill(field, value)
        ui.page.focus("#gen-prompt")
        ui.page.keyboard.press("Control+Enter")
        ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
        ui.page.wait_for_selector("#gen-results li", timeout=WAIT_MS)

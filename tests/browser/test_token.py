"""With an access token set, the page asks for it once, keeps it in localStorage (where /docs finds it too),
and sends it everywhere: API calls, the WebSocket, and the <img> URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, free_port, make_root, open_ui
from tests.browser.images import png_bytes, upload

pytestmark = pytest.mark.browser
TOKEN = "correct-horse-battery"


def test_the_page_asks_for_the_token_once_and_uses_it_everywhere(browser, tmp_path: Path):
    server = ServerProcess(root=make_root(tmp_path / "root", with_model=False), port=free_port(), token=TOKEN)
    server.start()
    try:
        with server.api() as api:
            name = upload(api, png_bytes(color=(120, 0, 120)), "secret.png")["image_name"]
        with open_ui(browser, server.url, tmp_path) as ui:
            # The first request is refused before the page has a token; a wrong token is refused too.
            ui.console.allow(r"status of 401")
            ui.page.goto(f"{server.url}/#/gallery")
            ui.page.wait_for_selector("#token-dialog[open]", timeout=WAIT_MS)
            ui.page.fill("#token-input", "wrong")
            ui.page.keyboard.press("Enter")
            ui.page.wait_for_selector("#token-message:has-text('wrong')", timeout=WAIT_MS)
            ui.page.fill("#token-input", TOKEN)
            ui.page.keyboard.press("Enter")
            ui.wait_live()
            tile = ui.page.wait_for_selector(f'.tile[data-name="{name}"] img', timeout=WAIT_MS)
            assert f"token={TOKEN}" in tile.get_attribute("src")
            ui.page.wait_for_function(
                "n => document.querySelector(`.tile[data-name='${n}'] img`).naturalWidth > 0", arg=name
            )
            assert ui.page.evaluate("localStorage.getItem('imagegraph.token')") == TOKEN

            # A reload does not ask again.
            ui.page.reload()
            ui.wait_live()
            assert not ui.page.is_visible("#token-dialog")
            ui.page.wait_for_selector(f'.tile[data-name="{name}"]', timeout=WAIT_MS)
    finally:
        server.stop()

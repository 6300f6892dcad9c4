"""The page stays live: when the server drops the WebSocket, or the whole server restarts, the page shows it is
reconnecting, comes back by itself, and no image made in between is missing from the gallery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, api_client, free_port, make_root, open_ui
from tests.browser.images import png_bytes, upload
from tests.conftest import start_live_server

pytestmark = pytest.mark.browser


def wait_for_tiles(ui: Ui, names: list[str]) -> None:
    ui.page.wait_for_function(
        "names => names.every(n => document.querySelector(`#gallery-grid .tile[data-name='${n}']`))",
        arg=names,
        timeout=WAIT_MS,
    )


def states(ui: Ui) -> list[str]:
    return ui.page.evaluate("window.imagegraph.socket.states")


def test_the_server_drops_the_websocket_and_the_page_recovers_without_missing_an_image(
    browser, tmp_path: Path, settings
):
    live = start_live_server(settings)
    try:
        with open_ui(browser, live.url, tmp_path) as ui, api_client(live.url) as api:
            before = upload(api, png_bytes(color=(9, 9, 9)), "before.png")["image_name"]
            ui.open("#/gallery")
            wait_for_tiles(ui, [before])
            ui.mark_document()
            assert ui.page.evaluate("window.imagegraph.socket.connections") == 1
            ui.page.evaluate(
                """() => {
                    window.__created = [];
                    window.imagegraph.bus.on("image_created", (e) => window.__created.push(e.image.image_name));
                }"""
            )

            hub = live.server.config.app.state.services.events

            async def drop_every_client() -> int:
                # What the hub does to a client that fell behind: 1013, "reconnect with since".
                dropped = 0
                for subscriber in hub.subscribers:
                    hub.disconnect(subscriber)
                    subscriber.fail(1013, "dropped by the test")
                    dropped += 1
                return dropped

            assert asyncio.run_coroutine_threadsafe(drop_every_client(), hub.loop).result(timeout=30) == 1
            # Images made while the page is away (it waits a moment before reconnecting).
            made = [upload(api, png_bytes(color=(i * 70, 50, 50)), f"gap{i}.png")["image_name"] for i in range(3)]

            wait_for_tiles(ui, made)
            ui.page.wait_for_function("window.imagegraph.socket.connections === 2", timeout=WAIT_MS)
            ui.wait_live()
            seen = states(ui)
            assert seen[-1] == "live" and "reconnecting" in seen[seen.index("live") :], seen
            # Each image once, newest first, the old one still there; no reload.
            names = ui.gallery_names()
            assert names == [*reversed(made), before]
            # They came as events, replayed after the reconnect with `since`, in order.
            assert ui.page.evaluate("window.__created") == made
            ui.assert_not_reloaded()

            # And it is live again: a new image still arrives by event.
            after = upload(api, png_bytes(color=(0, 0, 250)), "after.png")["image_name"]
            wait_for_tiles(ui, [after])
    finally:
        live.stop()


def test_the_server_restarts_and_the_page_resyncs(browser, tmp_path: Path):
    server = ServerProcess(root=make_root(tmp_path / "root", with_model=False), port=free_port())
    server.start()
    try:
        with open_ui(browser, server.url, tmp_path) as ui:
            # While the server is down the browser logs its failed connection attempts; that is expected.
            ui.console.allow(r"WebSocket connection to .* failed")
            ui.console.allow(r"ERR_CONNECTION_REFUSED")
            with server.api() as api:
                first = upload(api, png_bytes(color=(90, 90, 0)), "first.png")["image_name"]
            ui.open("#/gallery")
            wait_for_tiles(ui, [first])
            ui.mark_document()

            server.stop()
            ui.page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=WAIT_MS)
            assert ui.page.inner_text("#connection") == "Reconnecting…"
            server.start()
            with server.api() as api:
                made = upload(api, png_bytes(color=(0, 90, 90)), "while-away.png")["image_name"]

            wait_for_tiles(ui, [made])
            ui.wait_live()
            assert ui.gallery_names()[:2] == [made, first]
            ui.assert_not_reloaded()
    finally:
        server.stop()

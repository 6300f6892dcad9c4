"""The header's workers line: this server as its one worker, `idle`, then `busy` with the session it runs while
a generation runs, then `idle` again; several workers (a shared PostgreSQL's list, served to the page by the
test) as a list, and a worker that goes silent shown `lost` by the periodic reload, with no event."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, fill_form

pytestmark = pytest.mark.browser

# Every state the workers line shows, in order, with the session its one worker runs (the line changes
# faster than a test can poll).
RECORD_STATES = """() => {
    window.__workerStates = [];
    const box = document.getElementById("workers");
    const note = () => {
        const item = document.querySelector("#workers-list li");
        const last = window.__workerStates.at(-1);
        const now = {state: box.dataset.state, session: item ? item.dataset.session : null};
        if (!last || last.state !== now.state || last.session !== now.session) window.__workerStates.push(now);
    };
    note();
    new MutationObserver(note).observe(box, {attributes: true, subtree: true, childList: true});
}"""


def shown_workers(ui: Ui) -> list[dict]:
    return ui.page.eval_on_selector_all(
        "#workers-list li",
        "items => items.map(li => ({name: li.dataset.worker, state: li.dataset.state, session: li.dataset.session,"
        " text: li.innerText}))",
    )


def test_the_header_shows_this_server_idle_then_busy_with_its_session_then_idle(
    ui: Ui, server: ServerProcess, tiny_model, tmp_path: Path
):
    with server.api() as api:
        [me] = api.get("/workers").json()["workers"]
        database = api.get("/app/config").json()["database"]
    assert me["state"] == "idle"
    ui.open("#/generate")
    ui.page.wait_for_selector('#workers:not([hidden])[data-count="1"]', timeout=WAIT_MS)
    # One process: one small line, the list closed.
    assert ui.page.inner_text("#workers-text") == f"{me['device']} · idle"
    assert ui.page.get_attribute("#workers", "data-state") == "idle"
    assert not ui.page.is_visible("#workers-list")
    [item] = shown_workers(ui)
    assert (item["name"], item["state"], item["session"]) == (me["name"], "idle", "")

    ui.page.evaluate(RECORD_STATES)
    fill_form(ui, prompt="a worker at work", size=64, steps=4, seed=5)
    ui.page.click("#gen-invoke")
    ui.page.wait_for_selector("#gen-status:has-text('Done')", timeout=WAIT_MS)
    name = ui.page.get_attribute("#gen-results li", "data-name")
    with server.api() as api:
        session_id = api.get(f"/images/{name}").json()["session_id"]
    # queue_status events reloaded it: busy with our session while it ran, idle after, and nothing else.
    ui.page.wait_for_function(
        "window.__workerStates.at(-1).state === 'idle' && window.__workerStates.length > 1", timeout=WAIT_MS
    )
    states = ui.page.evaluate("window.__workerStates")
    assert states == [
        {"state": "idle", "session": ""},
        {"state": "busy", "session": session_id},
        {"state": "idle", "session": ""},
    ], states
    assert ui.page.inner_text("#workers-text") == f"{me['device']} · idle"
    with server.api() as api:
        assert [(w["name"], w["state"]) for w in api.get("/workers").json()["workers"]] == [(me["name"], "idle")]

    # Opened, it names the worker, its device and the database.
    ui.page.click("#workers summary")
    ui.page.wait_for_selector("#workers-list", state="visible", timeout=WAIT_MS)
    [item] = shown_workers(ui)
    assert me["name"] in item["text"] and me["device"] in item["text"] and "no session" in item["text"]
    assert ui.page.inner_text("#workers-database") == f"Database: {database}"
    ui.page.screenshot(path=str(tmp_path / "workers-one.png"))
    ui.page.keyboard.press("Escape")
    assert not ui.page.is_visible("#workers-list")


SESSION = "3f2c9a4e-8d1b-4c6f-9a2e-5b7d1c0e4f31"


def worker(name: str, device: str, state: str, session_id: str | None = None, models: list[str] | None = None) -> dict:
    return {
        "name": name,
        "device": device,
        "state": state,
        "session_id": session_id,
        "models_loaded": models or [],
        "last_seen": "2025-01-01T12:00:00Z",
    }


def test_several_workers_are_listed_and_a_silent_one_turns_lost_without_an_event(
    ui: Ui, server: ServerProcess, tmp_path: Path
):
    workers = [
        worker("gpu-a", "cuda", "idle", models=["sd-1/main/tiny"]),
        worker("gpu-b", "cuda", "busy", SESSION),
        worker("mac", "mps", "idle"),
    ]
    asked: list[float] = []  # when the page asked for /workers

    def answer(route) -> None:
        asked.append(time.monotonic())
        route.fulfill(status=200, content_type="application/json", body=json.dumps({"workers": workers}))

    ui.page.route("**/api/v1/workers", answer)
    ui.open("#/generate")
    ui.page.wait_for_selector('#workers:not([hidden])[data-count="3"]', timeout=WAIT_MS)
    assert ui.page.inner_text("#workers-text") == "3 workers · 1 busy"
    assert ui.page.get_attribute("#workers", "data-state") == "busy"
    ui.page.click("#workers summary")
    shown = shown_workers(ui)
    assert [(w["name"], w["state"], w["session"]) for w in shown] == [
        ("gpu-a", "idle", ""),
        ("gpu-b", "busy", SESSION),
        ("mac", "idle", ""),
    ]
    assert "session 3f2c9a4e" in shown[1]["text"] and "cuda" in shown[1]["text"]
    assert "sd-1/main/tiny" in shown[0]["text"] and "mps" in shown[2]["text"]

    # A queue_status event reloads it at once. Right after a periodic reload, so the next one is seconds away.
    asked_before = len(asked)
    deadline = time.monotonic() + 15
    while len(asked) == asked_before:
        assert time.monotonic() < deadline, "no periodic reload of the workers in 15 s"
        ui.page.wait_for_timeout(50)  # Playwright answers routes while it waits
    workers[0] = worker("gpu-a", "cuda", "busy", SESSION)
    with server.api() as api:
        session = api.post("/sessions/", json={"id": "g", "nodes": {"n": {"id": "n", "type": "integer"}}, "edges": []})
        assert api.put(f"/sessions/{session.json()['id']}/invoke").status_code == 202
    ui.page.wait_for_selector('#workers-list li[data-worker="gpu-a"][data-state="busy"]', timeout=WAIT_MS)
    assert time.monotonic() - asked[asked_before] < 4, "it waited for the periodic reload, not the event"
    workers[0] = worker("gpu-a", "cuda", "idle")

    # gpu-b stops renewing its lease: no event says so, the periodic reload does.
    workers[1] = worker("gpu-b", "cuda", "lost", SESSION)
    ui.page.wait_for_selector('#workers[data-state="lost"]', timeout=15_000)
    assert ui.page.inner_text("#workers-text") == "3 workers · 1 lost"
    assert ui.page.get_attribute('#workers-list li[data-worker="gpu-b"]', "data-state") == "lost"
    assert "last seen" in ui.page.inner_text('#workers-list li[data-worker="gpu-b"]')

    # The three states look different, not only read different: the dot and the word's colour.
    workers[2] = worker("mac", "mps", "busy", SESSION)
    ui.page.wait_for_selector('#workers-list li[data-worker="mac"][data-state="busy"]', timeout=15_000)
    looks = ui.page.evaluate(
        """() => Object.fromEntries(["gpu-a", "gpu-b", "mac"].map(name => {
            const label = document.querySelector(`#workers-list li[data-worker="${name}"] .worker-state`);
            const dot = getComputedStyle(label, "::before");
            return [name, [getComputedStyle(label).color, dot.backgroundColor, dot.borderTopColor]];
        }))"""
    )
    assert len({tuple(look) for look in looks.values()}) == 3, looks
    ui.page.screenshot(path=str(tmp_path / "workers-several.png"))

    # None left (a `--no-worker` server alone on the database): said so, not an empty line.
    workers.clear()
    ui.page.wait_for_selector('#workers[data-state="none"]', timeout=15_000)
    assert ui.page.inner_text("#workers-text") == "no workers"
    assert ui.page.query_selector_all("#workers-list li") == []

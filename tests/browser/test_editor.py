"""The Workflow page (the node-graph editor) in a real Chromium with the tiny model, driven through the DOM hooks
of the contract (API.md §Workflows) the way a person uses it: nodes added from the menu, every edge dragged,
runs watched node by node, a 422 read off the node it names, undo, files dropped on the page, the library."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.browser.conftest import WAIT_MS, ServerProcess, Ui, open_ui
from tests.browser.images import png_bytes, upload
from tests.graph.conftest import t2i_graph

pytestmark = pytest.mark.browser

# Big enough for the standard graph drawn at 100 % beside the library.
VIEWPORT = {"width": 1600, "height": 1100}

# Every data-state each node element takes, in order, the nodes that showed a step preview, and the nodes the
# server answered from its cache.
RECORD_STATES = """() => {
    window.__states = {};
    window.__cached = new Set();
    window.__previews = new Set();
    new MutationObserver(() => document.querySelectorAll("#wf-nodes .wf-node img.wf-preview")
            .forEach((img) => window.__previews.add(img.closest(".wf-node").dataset.nodeId)))
        .observe(document.getElementById("wf-nodes"), {childList: true, subtree: true});
    const seen = (node) => {
        const list = (window.__states[node.dataset.nodeId] ??= []);
        if (list.at(-1) !== node.dataset.state) list.push(node.dataset.state);
    };
    new MutationObserver((changes) => changes.forEach((c) => c.target.classList?.contains("wf-node") && seen(c.target)))
        .observe(document.getElementById("wf-nodes"), {attributes: true, attributeFilter: ["data-state"], subtree: true});
    window.imagegraph.bus.on("invocation_complete", (e) => e.cached && window.__cached.add(e.source_node_id));
}"""

STANDARD_EDGES = [
    ("model", "clip", "pos", "clip"),
    ("model", "clip", "neg", "clip"),
    ("model", "unet", "denoise", "unet"),
    ("pos", "conditioning", "denoise", "positive_conditioning"),
    ("neg", "conditioning", "denoise", "negative_conditioning"),
    ("noise", "noise", "denoise", "noise"),
    ("denoise", "latents", "decode", "latents"),
    ("model", "vae", "decode", "vae"),
    ("meta", "metadata", "decode", "metadata"),
]


@pytest.fixture
def ui(browser, server: ServerProcess, tmp_path: Path):
    with open_ui(browser, server.url, tmp_path, viewport=VIEWPORT) as opened:
        yield opened


def open_editor(ui: Ui) -> None:
    ui.open("#/workflow")
    ui.page.wait_for_function("window.imagegraph?.editor?.ready", timeout=WAIT_MS)


def node(ui: Ui, node_id: str) -> str:
    return f'#wf-nodes [data-node-id="{node_id}"]'


def field(ui: Ui, node_id: str, name: str) -> str:
    return f'{node(ui, node_id)} [data-field="{name}"]'


def edges(ui: Ui) -> set[str]:
    return set(ui.page.eval_on_selector_all("#wf-edges [data-edge]", "els => els.map(e => e.dataset.edge)"))


def node_ids(ui: Ui) -> set[str]:
    return set(ui.page.eval_on_selector_all("#wf-nodes .wf-node", "els => els.map(e => e.dataset.nodeId)"))


def add_from_menu(ui: Ui, node_type: str, search: str, x: float, y: float) -> str:
    """Double-click the canvas at (x, y) (relative to it), search the menu, pick the type; the new node's id."""
    box = ui.page.locator("#wf-canvas").bounding_box()
    before = node_ids(ui)
    ui.page.mouse.dblclick(box["x"] + x, box["y"] + y)
    ui.page.wait_for_selector(".wf-menu:not([hidden])", timeout=WAIT_MS)
    ui.page.fill(".wf-menu-search", search)
    ui.page.click(f'.wf-menu [data-add-type="{node_type}"]')
    ui.page.wait_for_function("n => document.querySelectorAll('#wf-nodes .wf-node').length > n", arg=len(before))
    (added,) = node_ids(ui) - before
    assert ui.page.get_attribute(node(ui, added), "data-node-type") == node_type
    return added


def connect(ui: Ui, source: str, output: str, destination: str, input_name: str) -> None:
    ui.page.locator(f'{node(ui, source)} [data-output="{output}"]').drag_to(
        ui.page.locator(f'{node(ui, destination)} [data-input="{input_name}"]')
    )


def open_graph(ui: Ui, graph: dict, layout: dict | None = None) -> None:
    """What the viewer's button and a dropped file do: hand the editor a graph to open."""
    ui.page.evaluate(
        "([graph, layout]) => window.imagegraph.bus.emit('open-workflow', {graph, layout, source: 'the test'})",
        [graph, layout],
    )
    ui.page.wait_for_function(
        "n => document.querySelectorAll('#wf-nodes .wf-node').length === n", arg=len(graph["nodes"])
    )


def drop_file(ui: Ui, name: str, data: bytes, mime: str) -> None:
    ui.page.evaluate(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: mime}));
            const zone = document.getElementById("page-workflow");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
            }
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )


def run_and_wait(ui: Ui, decode: str = "decode") -> str:
    """Press Run, wait for the decode node's image; its name."""
    ui.page.click('[data-action="invoke"]')
    ui.page.wait_for_selector(f'{node(ui, decode)}[data-state="completed"] img.wf-result', timeout=WAIT_MS)
    ui.page.wait_for_selector('[data-action="invoke"]:not([disabled])', timeout=WAIT_MS)
    return ui.page.get_attribute(f"{node(ui, decode)} img.wf-result", "data-image-name")


def generate(server: ServerProcess, graph: dict, workflow_id: str | None = None) -> str:
    """Run `graph` over the API (as the arranging part of a test); the image it made."""
    params = {"workflow_id": workflow_id} if workflow_id else None
    with server.api() as api:
        session = api.post("/sessions/", json=graph, params=params).json()
        api.put(f"/sessions/{session['id']}/invoke").raise_for_status()
        deadline = time.monotonic() + WAIT_MS / 1000
        while (state := api.get(f"/sessions/{session['id']}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, "the arranged generation did not finish"
            time.sleep(0.1)
    assert state["status"] == "completed", state["errors"]
    return state["results"]["decode"]["image"]["image_name"]


def small_graph(seed: int = 5, prompt: str = "a lighthouse") -> dict:
    graph = t2i_graph(prompt=prompt, seed=seed, size=64, steps=3, metadata=False)
    graph["id"] = "small"
    return graph


# ---- building and running ---------------------------------------------------------------------------------


def test_build_the_standard_graph_from_an_empty_canvas_and_run_it(ui: Ui, server: ServerProcess, tiny_model):
    open_editor(ui)
    ui.page.click('[data-action="new"]')
    ui.page.wait_for_selector("#page-workflow.wf-is-empty")
    ids = {
        "model": add_from_menu(ui, "main_model_loader", "main model", 20, 240),
        "pos": add_from_menu(ui, "compel", "compel", 300, 10),
        "neg": add_from_menu(ui, "compel", "prompt", 300, 220),
        "noise": add_from_menu(ui, "noise", "noise", 300, 520),
        "denoise": add_from_menu(ui, "denoise_latents", "denoise", 580, 10),
        "decode": add_from_menu(ui, "l2i", "latents to image", 860, 10),
        "meta": add_from_menu(ui, "metadata_accumulator", "metadata", 860, 270),
    }
    assert len(set(ids.values())) == 7 and not edges(ui)
    for source, output, destination, input_name in STANDARD_EDGES:
        connect(ui, ids[source], output, ids[destination], input_name)
    expected = {f"{ids[s]}.{o}->{ids[d]}.{i}" for s, o, d, i in STANDARD_EDGES}
    assert edges(ui) == expected
    # A wired input shows where it comes from instead of a control.
    assert ui.page.locator(f"{node(ui, ids['denoise'])} [data-row-input='unet'] .wf-wired").inner_text() == (
        f"← {ids['model']}.unet"
    )

    prompt = "a lighthouse built from an empty canvas"
    ui.page.select_option(field(ui, ids["model"], "model"), "sd-1/main/tiny")
    ui.page.fill(field(ui, ids["pos"], "prompt"), prompt)
    ui.page.fill(field(ui, ids["noise"], "seed"), "4321")
    ui.page.fill(field(ui, ids["noise"], "width"), "64")
    ui.page.fill(field(ui, ids["noise"], "height"), "64")
    ui.page.fill(field(ui, ids["denoise"], "steps"), "3")
    ui.page.fill(field(ui, ids["meta"], "generation_mode"), "txt2img")
    ui.page.fill(field(ui, ids["meta"], "positive_prompt"), prompt)

    ui.page.evaluate(RECORD_STATES)
    name = run_and_wait(ui, ids["decode"])
    states = ui.page.evaluate("window.__states")
    cached = set(ui.page.evaluate("[...window.__cached]"))
    for node_id in ids.values():
        assert states[node_id][-1] == "completed", (node_id, states[node_id])
        if node_id not in cached:
            seen = states[node_id]
            assert "running" in seen and seen.index("running") < seen.index("completed"), (node_id, seen)
    # The nodes that do the work ran for real (the prompt is new; l2i is never cached), the denoise node with
    # its step preview.
    assert "running" in states[ids["denoise"]] and "running" in states[ids["decode"]]
    assert ids["denoise"] in ui.page.evaluate("[...window.__previews]")
    ui.page.wait_for_function(
        "sel => document.querySelector(sel)?.naturalWidth > 0", arg=f"{node(ui, ids['decode'])} img.wf-result"
    )

    with server.api() as api:
        metadata = api.get(f"/images/{name}/metadata").json()
    assert metadata["metadata"]["positive_prompt"] == prompt  # the accumulator was wired into l2i
    graph = metadata["graph"]
    assert graph["nodes"][ids["noise"]]["seed"] == 4321
    assert {
        f"{e['source']['node_id']}.{e['source']['field']}->{e['destination']['node_id']}.{e['destination']['field']}"
        for e in graph["edges"]
    } == {key for key in expected if not key.startswith(f"{ids['meta']}.")}


def test_cancel_a_running_graph(ui: Ui, server: ServerProcess, tiny_model):
    open_editor(ui)
    graph = t2i_graph(prompt="a very long run", seed=8, size=256, steps=1000, metadata=False)
    open_graph(ui, graph)
    ui.page.click('[data-action="invoke"]')
    ui.page.wait_for_selector(f'{node(ui, "denoise")}[data-state="running"] .wf-progress', timeout=WAIT_MS)
    assert ui.page.is_disabled('[data-action="invoke"]')
    ui.page.click('[data-action="cancel"]')
    ui.page.wait_for_selector("#wf-status:has-text('Canceled')", timeout=WAIT_MS)
    # The node it stopped in goes back to idle; the ones that finished stay completed; Run is ready again.
    assert ui.page.get_attribute(node(ui, "denoise"), "data-state") == "idle"
    assert ui.page.get_attribute(node(ui, "noise"), "data-state") == "completed"
    assert ui.page.is_enabled('[data-action="invoke"]')
    with server.api() as api:
        assert api.get("/queue").json()["running"] is None


def test_an_incompatible_edge_is_refused_and_a_new_edge_replaces_the_old(ui: Ui, tiny_model):
    open_editor(ui)
    graph = small_graph()
    graph["nodes"]["noise2"] = {"id": "noise2", "type": "noise", "seed": 9, "width": 64, "height": 64}
    open_graph(ui, graph)
    before = edges(ui)

    connect(ui, "noise", "noise", "denoise", "unet")  # latents into a unet input
    ui.page.wait_for_selector("#wf-status:has-text('Not connected')")
    assert "gives latents but `denoise.unet` takes unet" in ui.page.inner_text("#wf-status")
    assert edges(ui) == before

    connect(ui, "noise2", "noise", "denoise", "noise")  # an input takes one edge: the new one replaces the old
    assert edges(ui) == (before - {"noise.noise->denoise.noise"}) | {"noise2.noise->denoise.noise"}
    assert "replacing noise.noise->denoise.noise" in ui.page.inner_text("#wf-status")

    # Dragging an edge off its input and into empty space disconnects it.
    box = ui.page.locator("#wf-canvas").bounding_box()
    port = ui.page.locator(f'{node(ui, "decode")} [data-input="vae"]').bounding_box()
    ui.page.mouse.move(port["x"] + port["width"] / 2, port["y"] + port["height"] / 2)
    ui.page.mouse.down()
    ui.page.mouse.move(box["x"] + box["width"] - 30, box["y"] + box["height"] - 30, steps=6)
    ui.page.mouse.up()
    assert "model.vae->decode.vae" not in edges(ui)
    ui.page.keyboard.press("Control+z")
    assert "model.vae->decode.vae" in edges(ui)

    # An edge is selected by clicking it, and Delete removes it.
    middle = ui.page.evaluate(
        """() => {
            const path = document.querySelector('[data-edge="model.vae->decode.vae"] .wf-edge-hit');
            const point = path.getPointAtLength(path.getTotalLength() / 2);
            const m = path.getScreenCTM();
            return {x: point.x * m.a + m.e, y: point.y * m.d + m.f};
        }"""
    )
    ui.page.mouse.click(middle["x"], middle["y"])
    ui.page.wait_for_selector('[data-edge="model.vae->decode.vae"].selected')
    ui.page.keyboard.press("Delete")
    assert "model.vae->decode.vae" not in edges(ui)


def test_open_an_images_graph_from_the_gallery_change_the_seed_and_run(ui: Ui, server: ServerProcess, tiny_model):
    original = generate(server, t2i_graph(prompt="from the gallery", seed=11, size=64, steps=3))

    ui.open("#/gallery")
    ui.page.click(f'#gallery-grid .tile[data-name="{original}"] button')
    ui.page.wait_for_selector("#viewer-workflow:not([disabled])", timeout=WAIT_MS)
    ui.page.click("#viewer-workflow")
    ui.page.wait_for_selector("#page-workflow:not([hidden])", timeout=WAIT_MS)
    ui.page.wait_for_selector(node(ui, "decode"), timeout=WAIT_MS)
    # The graph as the image holds it (the metadata accumulator is stripped from images), laid out left to right.
    assert node_ids(ui) == {"model", "pos", "neg", "noise", "denoise", "decode"}
    x = {n: ui.page.evaluate(f"window.imagegraph.editor.doc.node('{n}').x") for n in ("model", "denoise", "decode")}
    assert x["model"] < x["denoise"] < x["decode"]
    assert ui.page.input_value(field(ui, "noise", "seed")) == "11"

    ui.page.fill(field(ui, "noise", "seed"), "12")
    name = run_and_wait(ui)
    assert name != original
    with server.api() as api:
        assert api.get(f"/images/{name}/metadata").json()["graph"]["nodes"]["noise"]["seed"] == 12


def test_a_422_shows_on_the_node_and_field_it_names_and_the_edit_is_kept(ui: Ui, server: ServerProcess, tiny_model):
    ui.console.allow(r"status of 422")
    open_editor(ui)
    open_graph(ui, small_graph())
    with server.api() as api:
        sessions_before = api.get("/sessions/").json()["total"]
    ui.page.fill(field(ui, "denoise", "steps"), "0")
    ui.page.fill(field(ui, "noise", "width"), "100")
    ui.page.click('[data-action="invoke"]')

    ui.page.wait_for_selector(f'{node(ui, "denoise")}[data-state="invalid"]', timeout=WAIT_MS)
    steps_error = ui.page.locator(f'{node(ui, "denoise")} [data-error="steps"]')
    assert ">= 1" in steps_error.inner_text()
    assert "multiple of 8" in ui.page.locator(f'{node(ui, "noise")} [data-error="width"]').inner_text()
    invalid = set(
        ui.page.eval_on_selector_all('.wf-node[data-state="invalid"]', "els => els.map(e => e.dataset.nodeId)")
    )
    assert invalid == {"denoise", "noise"}
    assert "2 problems" in ui.page.inner_text("#wf-status")
    # Nothing of the edit is lost, and nothing was queued.
    assert ui.page.input_value(field(ui, "denoise", "steps")) == "0"
    assert ui.page.input_value(field(ui, "noise", "width")) == "100"
    with server.api() as api:
        assert api.get("/sessions/").json()["total"] == sessions_before

    # Fixing a field takes its message away; with both fixed the graph runs.
    ui.page.fill(field(ui, "denoise", "steps"), "3")
    ui.page.locator(field(ui, "denoise", "steps")).blur()
    assert ui.page.locator(f"{node(ui, 'denoise')} [data-error]").count() == 0
    ui.page.fill(field(ui, "noise", "width"), "64")
    run_and_wait(ui)
    # After a run, a refused graph leaves Run ready for the next try.
    ui.page.fill(field(ui, "denoise", "cfg_scale"), "-1")
    ui.page.click('[data-action="invoke"]')
    ui.page.wait_for_selector(f'{node(ui, "denoise")} [data-error="cfg_scale"]', timeout=WAIT_MS)
    assert ui.page.is_enabled('[data-action="invoke"]')
    assert ui.page.inner_text('[data-action="invoke"]') == "Run"


def test_delete_a_node_then_undo_and_redo(ui: Ui, tiny_model):
    open_editor(ui)
    open_graph(ui, small_graph())
    all_edges = edges(ui)
    ui.page.fill(field(ui, "pos", "prompt"), "keep this prompt")
    ui.page.locator(field(ui, "pos", "prompt")).blur()

    ui.page.click(f"{node(ui, 'pos')} .wf-node-head")
    ui.page.keyboard.press("Delete")
    assert "pos" not in node_ids(ui)
    assert edges(ui) == {e for e in all_edges if "pos." not in e}

    ui.page.keyboard.press("Control+z")
    assert "pos" in node_ids(ui)
    assert edges(ui) == all_edges
    assert ui.page.input_value(field(ui, "pos", "prompt")) == "keep this prompt"
    assert "Undone: Delete pos" in ui.page.inner_text("#wf-status")

    ui.page.keyboard.press("Control+Shift+z")
    assert "pos" not in node_ids(ui)
    ui.page.click('[data-action="undo"]')
    assert "pos" in node_ids(ui)
    # Undo goes on back through every edit: the prompt change, then opening the graph.
    ui.page.keyboard.press("Control+z")
    assert ui.page.input_value(field(ui, "pos", "prompt")) == "a lighthouse"


def test_keyboard_copy_paste_and_box_select(ui: Ui, tiny_model):
    open_editor(ui)
    open_graph(ui, small_graph())
    box = ui.page.locator("#wf-canvas").bounding_box()
    # Shift+drag on the background selects every node it touches.
    ui.page.keyboard.down("Shift")
    ui.page.mouse.move(box["x"] + 4, box["y"] + 4)
    ui.page.mouse.down()
    ui.page.mouse.move(box["x"] + box["width"] - 4, box["y"] + box["height"] - 4, steps=5)
    ui.page.mouse.up()
    ui.page.keyboard.up("Shift")
    assert ui.page.locator(".wf-node.selected").count() == 6
    ui.page.keyboard.press("Control+c")
    ui.page.keyboard.press("Control+v")
    assert len(node_ids(ui)) == 12
    assert len(edges(ui)) == 16  # the copies are wired among themselves as the originals are
    ui.page.keyboard.press("Control+z")
    assert len(node_ids(ui)) == 6

    ui.page.click(f"{node(ui, 'noise')} .wf-node-head")
    ui.page.keyboard.press("Control+d")
    assert "noise_2" in node_ids(ui)
    # Arrow keys move the selection: one undo step each.
    start = ui.page.evaluate("window.imagegraph.editor.doc.node('noise_2').x")
    ui.page.keyboard.press("ArrowRight")
    assert ui.page.evaluate("window.imagegraph.editor.doc.node('noise_2').x") == start + 10


def test_connect_and_disconnect_from_the_keyboard(ui: Ui, tiny_model):
    open_editor(ui)
    open_graph(ui, small_graph())
    # Delete on an input's connector disconnects it...
    ui.page.focus(f'{node(ui, "decode")} [data-input="vae"]')
    ui.page.keyboard.press("Delete")
    assert "model.vae->decode.vae" not in edges(ui)
    # ...and Enter on an output, then on an input, connects them; while choosing, the inputs that fit are marked.
    ui.page.focus(f'{node(ui, "model")} [data-output="vae"]')
    ui.page.keyboard.press("Enter")
    assert ui.page.get_attribute(f'{node(ui, "decode")} [data-input="vae"]', "data-compat") == "yes"
    assert ui.page.get_attribute(f'{node(ui, "denoise")} [data-input="unet"]', "data-compat") == "no"
    ui.page.focus(f'{node(ui, "decode")} [data-input="vae"]')
    ui.page.keyboard.press("Enter")
    assert "model.vae->decode.vae" in edges(ui)
    assert ui.page.locator("[data-compat]").count() == 0
    # Tab reaches a node, Enter goes into its first field.
    ui.page.focus(node(ui, "noise"))
    ui.page.keyboard.press("Enter")
    assert ui.page.evaluate("document.activeElement.dataset.field") == "seed"


def test_drop_a_json_graph_and_png_files(ui: Ui, server: ServerProcess, tiny_model):
    open_editor(ui)
    graph = small_graph(seed=77)
    drop_file(ui, "graph.json", json.dumps(graph).encode(), "application/json")
    ui.page.wait_for_selector("#wf-status:has-text('graph.json')", timeout=WAIT_MS)
    assert node_ids(ui) == set(graph["nodes"])
    assert ui.page.input_value(field(ui, "noise", "seed")) == "77"

    # A PNG made by a saved workflow opens with the workflow's drawing.
    layout = {node_id: {"x": 300 * i, "y": 40 * i} for i, node_id in enumerate(graph["nodes"])}
    with server.api() as api:
        saved = api.post("/workflows/", json={"name": "Dropped drawing", "graph": graph, "layout": layout}).json()
    name = generate(server, graph, workflow_id=saved["id"])
    ui.page.click('[data-action="new"]')
    with server.api() as api:
        png = api.get(f"/images/{name}/full").content
    drop_file(ui, "made-by-a-workflow.png", png, "image/png")
    ui.page.wait_for_selector("#wf-status:has-text('Dropped drawing')", timeout=WAIT_MS)
    placed = ui.page.evaluate("window.imagegraph.editor.doc.toLayout()")
    assert placed == layout

    # An InvokeAI-style PNG (a graph, no drawing) is laid out left to right.
    other = png_bytes(64, 64, text={"invokeai_graph": small_graph(seed=3)})
    drop_file(ui, "invokeai.png", other, "image/png")
    ui.page.wait_for_selector("#wf-status:has-text('invokeai.png')", timeout=WAIT_MS)
    x = {n: ui.page.evaluate(f"window.imagegraph.editor.doc.node('{n}').x") for n in ("model", "denoise", "decode")}
    assert x["model"] < x["denoise"] < x["decode"]

    # A PNG without a graph is refused in words, and the graph on screen stays.
    drop_file(ui, "plain.png", png_bytes(32, 32), "image/png")
    ui.page.wait_for_selector("#wf-status:has-text('carries no graph')", timeout=WAIT_MS)
    assert len(node_ids(ui)) == 6

    # Export gives back a workflow file that opens again as it was.
    with ui.page.expect_download() as download:
        ui.page.click('[data-action="export"]')
    exported = json.loads(Path(download.value.path()).read_text())
    assert set(exported) == {"name", "description", "graph", "layout"}
    assert set(exported["graph"]["nodes"]) == set(graph["nodes"])
    assert exported["layout"] == ui.page.evaluate("window.imagegraph.editor.doc.toLayout()")
    ui.page.click('[data-action="new"]')
    drop_file(ui, "exported.json", json.dumps(exported).encode(), "application/json")
    ui.page.wait_for_selector("#wf-status:has-text('exported.json')", timeout=WAIT_MS)
    assert ui.page.evaluate("window.imagegraph.editor.doc.toLayout()") == exported["layout"]


def test_save_to_the_library_reload_the_page_and_load_it_back(ui: Ui, server: ServerProcess, tiny_model):
    ui.console.allow(r"status of 409")
    with server.api() as api:
        api.post("/workflows/", json={"name": "Taken name", "graph": small_graph()}).raise_for_status()
    open_editor(ui)
    open_graph(ui, small_graph(seed=31, prompt="saved and loaded"))
    ui.page.locator(f"{node(ui, 'noise')} .wf-node-head").drag_to(
        ui.page.locator("#wf-canvas"), target_position={"x": 700, "y": 620}
    )
    layout = ui.page.evaluate("window.imagegraph.editor.doc.toLayout()")

    ui.page.click('[data-action="save-as"]')
    ui.page.fill("#wf-name-input", "TAKEN NAME")
    ui.page.click('#wf-name-form button[value="ok"]')
    ui.page.wait_for_selector("#wf-name-error:has-text('already exists')", timeout=WAIT_MS)
    ui.page.fill("#wf-name-input", "Lighthouse study")
    ui.page.click('#wf-name-form button[value="ok"]')
    ui.page.wait_for_selector("#wf-name-dialog", state="hidden", timeout=WAIT_MS)
    workflow_id = ui.page.evaluate("window.imagegraph.editor.workflow.id")
    ui.page.wait_for_selector(f'#wf-library-list [data-workflow-id="{workflow_id}"]', timeout=WAIT_MS)
    assert ui.page.inner_text("#wf-name") == "Lighthouse study"
    assert ui.page.is_hidden("#wf-dirty")

    ui.page.reload()
    ui.wait_live()
    ui.page.wait_for_function("window.imagegraph?.editor?.ready", timeout=WAIT_MS)
    ui.page.click('[data-action="new"]')
    assert not node_ids(ui)
    ui.page.fill("#wf-library-search", "study")
    ui.page.wait_for_selector("#wf-library-count:has-text('matching')", timeout=WAIT_MS)
    assert ui.page.eval_on_selector_all("[data-workflow-id]", "els => els.map(e => e.dataset.workflowId)") == [
        workflow_id
    ]
    ui.page.click(f'[data-workflow-id="{workflow_id}"] [data-action="load-workflow"]')
    ui.page.wait_for_selector(node(ui, "noise"), timeout=WAIT_MS)
    assert ui.page.evaluate("window.imagegraph.editor.doc.toLayout()") == layout
    assert ui.page.input_value(field(ui, "pos", "prompt")) == "saved and loaded"
    assert ui.page.inner_text("#wf-name") == "Lighthouse study"

    # Run from the library: the image carries the workflow's name and drawing.
    name = run_and_wait(ui)
    with server.api() as api:
        carried = api.get(f"/images/{name}/metadata").json()["workflow"]
    assert carried == {"id": workflow_id, "name": "Lighthouse study", "layout": layout}
    # ...so the image, opened from the gallery, brings the drawing back with its graph.
    ui.page.click('[data-action="new"]')
    ui.go("gallery")
    ui.page.click(f'#gallery-grid .tile[data-name="{name}"] button')
    ui.page.wait_for_selector("#viewer-workflow:not([disabled])", timeout=WAIT_MS)
    ui.page.click("#viewer-workflow")
    ui.page.wait_for_selector(node(ui, "noise"), timeout=WAIT_MS)
    assert ui.page.evaluate("window.imagegraph.editor.doc.toLayout()") == layout
    assert "Lighthouse study" in ui.page.inner_text("#wf-status")


def test_the_generate_pages_settings_open_as_a_graph(browser, server: ServerProcess, tiny_model, tmp_path: Path):
    with open_ui(browser, server.url, tmp_path, viewport=VIEWPORT) as ui:
        ui.open("#/generate")
        ui.page.fill("#gen-prompt", "from the generate page")
        ui.page.wait_for_selector('#gen-model option[value="sd-1/main/tiny"]', state="attached", timeout=WAIT_MS)
        ui.page.select_option("#gen-model", "sd-1/main/tiny")
        ui.page.uncheck("#gen-randomize")
        ui.page.fill("#gen-seed", "808")
        ui.page.click("#gen-open-workflow")
        ui.page.wait_for_selector("#page-workflow:not([hidden])", timeout=WAIT_MS)
        ui.page.wait_for_selector(node(ui, "meta"), timeout=WAIT_MS)
        assert node_ids(ui) == {"model", "pos", "neg", "noise", "denoise", "decode", "meta"}
        assert ui.page.input_value(field(ui, "pos", "prompt")) == "from the generate page"
        assert ui.page.input_value(field(ui, "noise", "seed")) == "808"
        assert len(edges(ui)) == 9


def test_an_uploaded_image_is_picked_for_an_image_input(ui: Ui, server: ServerProcess):
    with server.api() as api:
        picture = upload(api, png_bytes(48, 48, (200, 30, 30)), "red.png")["image_name"]
    open_editor(ui)
    ui.page.click('[data-action="new"]')
    node_id = add_from_menu(ui, "img_blur", "blur", 200, 100)
    ui.page.click(field(ui, node_id, "image"))
    ui.page.wait_for_selector("#wf-image-dialog[open]", timeout=WAIT_MS)
    ui.page.click(f'#wf-image-grid [data-image-name="{picture}"]')
    ui.page.wait_for_selector("#wf-image-dialog", state="hidden", timeout=WAIT_MS)
    assert ui.page.evaluate(f"window.imagegraph.editor.doc.node('{node_id}').values.image") == {"image_name": picture}
    ui.page.wait_for_selector(f"{field(ui, node_id, 'image')} img", timeout=WAIT_MS)

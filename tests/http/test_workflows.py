"""The workflow library routes (`/api/v1/workflows/`) and the `imagegraph_workflow` PNG chunk: a saved
workflow's name and layout travel inside every image one of its sessions makes, and survive an upload."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from server.config import Settings
from tests.graph.conftest import Recorder, generation_app, run_graph, t2i_graph

API = "/api/v1/workflows/"


def small_graph(value: int = 3) -> dict[str, Any]:
    """A graph that needs no model: an integer feeding a range."""
    return {
        "id": "small",
        "nodes": {
            "n": {"id": "n", "type": "integer", "value": value},
            "r": {"id": "r", "type": "range", "start": 0, "step": 1},
        },
        "edges": [{"source": {"node_id": "n", "field": "value"}, "destination": {"node_id": "r", "field": "stop"}}],
    }


def body(name: str = "Counting", **extra: Any) -> dict[str, Any]:
    return {"name": name, "graph": small_graph(), **extra}


def create(client: TestClient, name: str = "Counting", **extra: Any) -> dict[str, Any]:
    response = client.post(API, json=body(name, **extra))
    assert response.status_code == 201, response.text
    return response.json()


def locs(response) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["errors"]]


# CRUD


def test_save_read_replace_and_delete_a_workflow(client: TestClient) -> None:
    layout = {"n": {"x": 10.5, "y": -20}, "r": {"x": 300, "y": 40}}
    response = client.post(API, json=body("Counting", description="up to n", layout=layout))
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/api/v1/workflows/{created['id']}"
    assert (created["name"], created["description"], created["layout"]) == ("Counting", "up to n", layout)
    assert created["graph"]["nodes"]["n"]["value"] == 3
    assert created["created_at"] == created["updated_at"]

    fetched = client.get(f"{API}{created['id']}").json()
    assert fetched == created

    replacement = {"name": "Counting to five", "graph": small_graph(5), "layout": None}
    replaced = client.put(f"{API}{created['id']}", json=replacement)
    assert replaced.status_code == 200, replaced.text
    after = client.get(f"{API}{created['id']}").json()
    assert after == replaced.json()
    assert (after["name"], after["description"], after["layout"]) == ("Counting to five", "", None)
    assert after["graph"]["nodes"]["n"]["value"] == 5
    assert after["created_at"] == created["created_at"] < after["updated_at"]

    assert client.delete(f"{API}{created['id']}").status_code == 204
    assert client.get(f"{API}{created['id']}").status_code == 404
    assert client.get(API).json()["total"] == 0


def test_unknown_workflows_are_404_for_every_method(client: TestClient) -> None:
    for response in (
        client.get(f"{API}no-such-id"),
        client.put(f"{API}no-such-id", json=body()),
        client.delete(f"{API}no-such-id"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Workflow 'no-such-id' not found"}


def test_a_graph_without_an_id_is_given_one(client: TestClient) -> None:
    graph = small_graph()
    del graph["id"]
    created = client.post(API, json={"name": "No id", "graph": graph}).json()
    assert created["graph"]["id"]


# Validation


def test_every_problem_of_the_graph_is_a_422_naming_its_place_and_nothing_is_saved(client: TestClient) -> None:
    graph = small_graph()
    graph["nodes"]["r"]["step"] = "two"  # wrong type
    graph["nodes"]["x"] = {"id": "x", "type": "no_such_node"}
    graph["edges"].append(
        {"source": {"node_id": "n", "field": "value"}, "destination": {"node_id": "r", "field": "stop"}}
    )
    response = client.post(API, json={"name": "Broken", "graph": graph, "layout": {"ghost": {"x": 0, "y": 0}}})
    assert response.status_code == 422
    found = locs(response)
    assert ["body", "graph", "nodes", "r", "step"] in found
    assert ["body", "graph", "nodes", "x", "type"] in found
    assert ["body", "graph", "edges", 1, "destination"] in found  # a second edge into r.stop
    assert response.json()["detail"].startswith("The graph is invalid: ")
    assert client.get(API).json()["total"] == 0


def test_a_layout_may_only_place_nodes_of_the_graph(client: TestClient) -> None:
    response = client.post(API, json=body(layout={"n": {"x": 0, "y": 0}, "ghost": {"x": 1, "y": 2}}))
    assert response.status_code == 422
    assert locs(response) == [["body", "layout", "ghost"]]
    huge = client.post(API, json=body(layout={"n": {"x": 1e300, "y": 0}}))
    assert huge.status_code == 422
    assert locs(huge) == [["body", "layout", "n", "x"]]


def test_names_must_not_be_blank_or_missing(client: TestClient) -> None:
    blank = client.post(API, json=body("   "))
    assert blank.status_code == 422
    assert locs(blank) == [["body", "name"]]
    missing = client.post(API, json={"graph": small_graph()})
    assert missing.status_code == 422
    assert locs(missing) == [["body", "name"]]
    unknown = client.post(API, json={**body(), "colour": "red"})
    assert unknown.status_code == 422
    assert locs(unknown) == [["body", "colour"]]


def test_a_model_that_is_not_registered_is_refused_like_in_a_session(client: TestClient) -> None:
    response = client.post(API, json={"name": "Needs a model", "graph": t2i_graph()})
    assert response.status_code == 422
    assert ["body", "graph", "nodes", "model", "model"] in locs(response)
    session = client.post("/api/v1/sessions/", json=t2i_graph())
    assert session.status_code == 422
    assert ["body", "nodes", "model", "model"] in locs(session)


def test_replace_validates_too_and_keeps_the_old_version_on_422(client: TestClient) -> None:
    created = create(client)
    bad = small_graph()
    bad["nodes"]["n"]["value"] = "three"
    response = client.put(f"{API}{created['id']}", json={"name": "Counting", "graph": bad})
    assert response.status_code == 422
    assert locs(response) == [["body", "graph", "nodes", "n", "value"]]
    assert client.get(f"{API}{created['id']}").json() == created


# Names


def test_a_name_already_taken_ignoring_case_is_409(client: TestClient) -> None:
    first = create(client, "Portrait")
    for name in ("Portrait", "PORTRAIT", "  portrait "):
        response = client.post(API, json=body(name))
        assert response.status_code == 409, name
        assert "already exists" in response.json()["detail"]
        assert locs(response) == [["body", "name"]]
    # Case-folding is Unicode's, not ASCII's only.
    create(client, "Straße")
    assert client.post(API, json=body("STRASSE")).status_code == 409
    second = create(client, "Landscape")
    renamed = client.put(f"{API}{second['id']}", json=body("portrait"))
    assert renamed.status_code == 409
    # A workflow may change the case of its own name.
    recased = client.put(f"{API}{first['id']}", json=body("PORTRAIT"))
    assert recased.status_code == 200
    assert recased.json()["name"] == "PORTRAIT"
    # Names are stored without the spaces around them.
    assert create(client, "  Spaced  ")["name"] == "Spaced"


# Listing


def test_the_list_pages_recently_changed_first_without_graphs(client: TestClient) -> None:
    ids = [create(client, f"Workflow {i}")["id"] for i in range(7)]
    first = client.get(API, params={"limit": 3}).json()
    assert (first["offset"], first["limit"], first["total"]) == (0, 3, 7)
    assert [item["id"] for item in first["items"]] == ids[::-1][:3]
    assert set(first["items"][0]) == {"id", "name", "description", "node_count", "created_at", "updated_at"}
    assert first["items"][0]["node_count"] == 2
    rest = client.get(API, params={"offset": 3, "limit": 10}).json()
    assert [item["id"] for item in rest["items"]] == ids[::-1][3:]
    assert client.get(API, params={"offset": 50}).json() == {"items": [], "offset": 50, "limit": 50, "total": 7}
    # Saving one again moves it to the top.
    client.put(f"{API}{ids[0]}", json=body("Workflow 0"))
    assert client.get(API, params={"limit": 1}).json()["items"][0]["id"] == ids[0]
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = client.get(API, params=bad)
        assert response.status_code == 422, bad
        assert locs(response) == [["query", next(iter(bad))]]


def test_search_matches_part_of_the_name_ignoring_case(client: TestClient) -> None:
    for name in ("Portrait, soft light", "Landscape", "portrait 2", "100% noise", "under_score", "ÉCLAIR"):
        create(client, name)
    found = client.get(API, params={"q": "PORTRAIT"}).json()
    assert sorted(item["name"] for item in found["items"]) == ["Portrait, soft light", "portrait 2"]
    assert found["total"] == 2
    # LIKE's wildcards are plain characters in a search.
    assert [i["name"] for i in client.get(API, params={"q": "%"}).json()["items"]] == ["100% noise"]
    assert [i["name"] for i in client.get(API, params={"q": "_"}).json()["items"]] == ["under_score"]
    assert [i["name"] for i in client.get(API, params={"q": "éclair"}).json()["items"]] == ["ÉCLAIR"]
    paged = client.get(API, params={"q": "portrait", "limit": 1, "offset": 1}).json()
    assert (len(paged["items"]), paged["total"]) == (1, 2)
    assert client.get(API, params={"q": "nothing like it"}).json()["total"] == 0


# The PNG chunk


@pytest.fixture
def generation(settings: Settings, tiny_model_files) -> Iterator[tuple[TestClient, Recorder]]:
    with generation_app(settings, tiny_model_files) as pair:
        yield pair


def png_text(client: TestClient, image_name: str) -> dict[str, str]:
    response = client.get(f"/api/v1/images/{image_name}/full")
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        return dict(image.text)


def test_an_image_from_a_saved_workflow_carries_its_name_and_layout(generation) -> None:
    client, events = generation
    graph = t2i_graph(size=64, steps=2)
    layout = {node_id: {"x": 100.0 * i, "y": 20.0 * i} for i, node_id in enumerate(graph["nodes"])}
    saved = client.post(API, json={"name": "Lighthouse", "graph": graph, "layout": layout})
    assert saved.status_code == 201, saved.text
    workflow = saved.json()

    created = client.post("/api/v1/sessions/", params={"workflow_id": workflow["id"]}, json=graph)
    assert created.status_code == 201, created.text
    assert created.json()["workflow_id"] == workflow["id"]
    session_id = created.json()["id"]
    assert client.put(f"/api/v1/sessions/{session_id}/invoke").status_code == 202
    events.wait_finished(session_id)
    session = client.get(f"/api/v1/sessions/{session_id}").json()
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]

    expected = {"id": workflow["id"], "name": "Lighthouse", "layout": layout}
    text = png_text(client, name)
    assert json.loads(text["imagegraph_workflow"]) == expected
    assert "invokeai_graph" in text  # beside the graph, as InvokeAI keeps it
    metadata = client.get(f"/api/v1/images/{name}/metadata").json()
    assert metadata["workflow"] == expected
    assert set(metadata["graph"]["nodes"]) == set(graph["nodes"]) - {"meta"}

    # Uploaded again (downloaded, shared, brought back), the image keeps the chunk and /metadata serves it.
    png = client.get(f"/api/v1/images/{name}/full").content
    uploaded = client.post("/api/v1/images/upload", files={"file": ("again.png", png, "image/png")})
    assert uploaded.status_code == 201, uploaded.text
    again = uploaded.json()["image_name"]
    assert client.get(f"/api/v1/images/{again}/metadata").json()["workflow"] == expected
    assert json.loads(png_text(client, again)["imagegraph_workflow"]) == expected

    # The image keeps its copy when the workflow is deleted.
    assert client.delete(f"{API}{workflow['id']}").status_code == 204
    assert client.get(f"/api/v1/images/{name}/metadata").json()["workflow"] == expected


def test_an_image_from_a_plain_session_has_no_workflow(generation) -> None:
    client, events = generation
    session = run_graph(client, events, t2i_graph(size=64, steps=2))
    name = session["results"]["decode"]["image"]["image_name"]
    assert session["workflow_id"] is None
    assert "imagegraph_workflow" not in png_text(client, name)
    assert client.get(f"/api/v1/images/{name}/metadata").json()["workflow"] is None


def test_a_session_naming_an_unknown_workflow_is_422(generation) -> None:
    client, _ = generation
    response = client.post("/api/v1/sessions/", params={"workflow_id": "nope"}, json=t2i_graph())
    assert response.status_code == 422
    assert locs(response) == [["query", "workflow_id"]]
    # With a broken graph as well, every problem is listed.
    graph = t2i_graph()
    graph["nodes"]["denoise"]["steps"] = 0
    both = client.post("/api/v1/sessions/", params={"workflow_id": "nope"}, json=graph)
    assert both.status_code == 422
    assert locs(both) == [["body", "nodes", "denoise", "steps"], ["query", "workflow_id"]]
    assert client.get("/api/v1/sessions/").json()["total"] == 0

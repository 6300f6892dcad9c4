"""POST /api/v1/sessions/ checks a graph completely: every problem comes back at once in one 422, each with
a `loc` that points at the node and field (or edge) to fix, and an invalid graph stores nothing."""

from __future__ import annotations

from typing import Any

from server.graph.standard import edge
from tests.graph.conftest import t2i_graph

SESSIONS = "/api/v1/sessions/"


def problems(client, graph: dict[str, Any]) -> dict[tuple, str]:
    response = client.post(SESSIONS, json=graph)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"].startswith("The graph is invalid: ")
    return {tuple(error["loc"]): error["msg"] for error in body["errors"]}


def numbers_graph(**extra_nodes: Any) -> dict[str, Any]:
    """A graph of value nodes only: a range of seeds iterated and collected back."""
    nodes = {
        "r": {"id": "r", "type": "range", "start": 0, "stop": 3},
        "each": {"id": "each", "type": "iterate"},
        "all": {"id": "all", "type": "collect"},
        **extra_nodes,
    }
    return {
        "id": "numbers",
        "nodes": nodes,
        "edges": [edge("r", "collection", "each", "collection"), edge("each", "item", "all", "item")],
    }


def test_a_valid_graph_is_stored_with_its_defaults(client):
    response = client.post(SESSIONS, json=numbers_graph())
    assert response.status_code == 201, response.text
    session = response.json()
    assert response.headers["location"] == f"/api/v1/sessions/{session['id']}"
    assert session["status"] == "pending"
    assert session["executed"] == [] and session["results"] == {} and session["errors"] == {}
    assert session["graph"]["nodes"]["r"] == {
        "type": "range",
        "id": "r",
        "use_cache": True,
        "start": 0,
        "stop": 3,
        "step": 1,
    }
    assert client.get(f"{SESSIONS}{session['id']}").json() == session


def test_unknown_node_type(client):
    found = problems(client, numbers_graph(x={"id": "x", "type": "upscale_9000"}))
    assert found == {
        ("body", "nodes", "x", "type"): "unknown node type 'upscale_9000'; GET /api/v1/nodes/ lists the known ones"
    }


def test_missing_required_inputs(client):
    graph = {"id": "g", "nodes": {"d": {"type": "denoise_latents"}, "m": {"type": "metadata_accumulator"}}, "edges": []}
    found = problems(client, graph)
    assert set(found) == {
        ("body", "nodes", "d", "positive_conditioning"),
        ("body", "nodes", "d", "negative_conditioning"),
        ("body", "nodes", "d", "unet"),
        ("body", "nodes", "m", "generation_mode"),
    }
    assert "wire another node's output" in found[("body", "nodes", "d", "unet")]
    assert "give a value" in found[("body", "nodes", "m", "generation_mode")]


def test_values_out_of_range_or_not_among_the_choices(client):
    graph = t2i_graph()
    graph["nodes"]["denoise"].update(steps=0, cfg_scale=-1, scheduler="warp_drive", strength=1.5)
    graph["nodes"]["noise"].update(width=100, seed=-5)
    found = problems(client, graph)
    assert set(found) == {
        ("body", "nodes", "denoise", "steps"),
        ("body", "nodes", "denoise", "cfg_scale"),
        ("body", "nodes", "denoise", "scheduler"),
        ("body", "nodes", "denoise", "strength"),
        ("body", "nodes", "noise", "width"),
        ("body", "nodes", "noise", "seed"),
    }
    assert "multiple of 8" in found[("body", "nodes", "noise", "width")]
    assert found[("body", "nodes", "denoise", "scheduler")].startswith(
        "`denoise.scheduler`: must be one of 'ddim', 'ddpm'"
    )


def test_wrong_value_types_unknown_fields_and_values_where_an_edge_belongs(client):
    graph = t2i_graph()
    graph["nodes"]["denoise"]["steps"] = "eight"
    graph["nodes"]["noise"]["colour"] = "blue"
    graph["nodes"]["pos"]["clip"] = {"model": graph["nodes"]["model"]["model"]}
    found = problems(client, graph)
    assert set(found) == {
        ("body", "nodes", "denoise", "steps"),
        ("body", "nodes", "noise", "colour"),
        ("body", "nodes", "pos", "clip"),
    }
    assert "Expected `int`, got `str`" in found[("body", "nodes", "denoise", "steps")]
    assert "from an edge only" in found[("body", "nodes", "pos", "clip")]


def test_edges_to_unknown_nodes_and_fields(client):
    graph = t2i_graph()
    graph["edges"] += [
        edge("ghost", "value", "denoise", "steps"),
        edge("noise", "nothing", "denoise", "latents"),
        edge("noise", "width", "denoise", "bogus"),
        edge("noise", "width", "model", "model"),
    ]
    found = problems(client, graph)
    assert set(found) == {
        ("body", "edges", 9, "source", "node_id"),
        ("body", "edges", 10, "source", "field"),
        ("body", "edges", 11, "destination", "field"),
        ("body", "edges", 12, "destination", "field"),
    }
    assert "no node 'ghost'" in found[("body", "edges", 9, "source", "node_id")]
    assert "takes a value, not an edge" in found[("body", "edges", 12, "destination", "field")]


def test_type_mismatch_across_an_edge(client):
    graph = t2i_graph()
    graph["nodes"]["text"] = {"id": "text", "type": "string", "value": "8"}
    graph["edges"] += [edge("text", "value", "denoise", "steps"), edge("pos", "conditioning", "decode", "latents")]
    found = problems(client, graph)
    assert found[("body", "edges", 9)] == "edge 9: `text.value` gives string but `denoise.steps` takes integer"
    # decode.latents already has an edge and the types differ: both are reported
    assert ("body", "edges", 10, "destination") in found


def test_two_edges_into_one_input(client):
    graph = t2i_graph()
    graph["edges"].append(edge("neg", "conditioning", "denoise", "positive_conditioning"))
    found = problems(client, graph)
    assert found == {
        ("body", "edges", 9, "destination"): "edge 9: `denoise.positive_conditioning` already has an edge (edge 3); "
        "an input takes one edge (only `collect.item` gathers several)"
    }


def test_cycles(client):
    graph = {
        "id": "loop",
        "nodes": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
        "edges": [edge("a", "value", "b", "value"), edge("b", "value", "c", "value"), edge("c", "value", "a", "value")],
    }
    found = problems(client, graph)
    assert found == {("body", "edges", 2): "edge 2 closes a cycle: a → b → c → a; a graph must not loop"}


def test_iterate_and_collect_misuse(client):
    graph = {
        "id": "misuse",
        "nodes": {
            "n": {"type": "integer", "value": 3},
            "each": {"type": "iterate"},  # fed a number, not a collection
            "orphan": {"type": "collect"},  # nothing to collect
            "r": {"type": "range"},
            "each2": {"type": "iterate"},
            "img": {"type": "image", "image": {"image_name": "x.png"}},
            "mixed": {"type": "collect"},
            "s": {"type": "string"},
        },
        "edges": [
            edge("n", "value", "each", "collection"),
            edge("r", "collection", "each2", "collection"),
            edge("each2", "item", "s", "value"),  # integers iterated into a string input
            edge("each2", "item", "mixed", "item"),
            edge("img", "image", "mixed", "item"),  # integers and images in one collection
        ],
    }
    found = problems(client, graph)
    assert set(found) == {
        ("body", "edges", 0),
        ("body", "nodes", "orphan", "item"),
        ("body", "edges", 2),
        ("body", "nodes", "mixed", "item"),
    }
    assert found[("body", "edges", 0)] == "edge 0: `n.value` gives integer but `each.collection` takes collection"
    assert found[("body", "edges", 2)] == "edge 2: `each2.item` gives integer but `s.value` takes string"


def test_every_problem_is_reported_at_once(client):
    graph = t2i_graph()
    graph["nodes"]["denoise"]["steps"] = 0
    graph["nodes"]["x"] = {"type": "nope"}
    graph["edges"].append(edge("decode", "image", "ghost", "image"))
    del graph["nodes"]["neg"]
    response = client.post(SESSIONS, json=graph)
    assert response.status_code == 422
    body = response.json()
    assert len(body["errors"]) == 5  # steps, unknown type, ghost node, two edges from the missing `neg`
    assert "(and 4 more problems, listed in `errors`)" in body["detail"]


def test_malformed_bodies(client):
    assert client.post(SESSIONS, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    response = client.post(SESSIONS, json={"nodes": [], "edges": []})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "nodes"]
    found = problems(client, {"nodes": {"a": "integer", "b": {"id": "c", "type": "integer"}}, "edges": [{"source": 1}]})
    assert set(found) == {("body", "nodes", "a"), ("body", "nodes", "b", "id"), ("body", "edges", 0, "source")}


def test_an_invalid_graph_stores_nothing(client):
    graph = t2i_graph()
    graph["nodes"]["denoise"]["steps"] = 0
    assert client.post(SESSIONS, json=graph).status_code == 422
    assert client.get(SESSIONS).json()["total"] == 0

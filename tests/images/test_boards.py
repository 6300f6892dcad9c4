"""Boards: create, rename, cover, list with counts, delete with or without images; images join and leave a
board by PATCHing `board_id`."""

from __future__ import annotations

from server.events import ImageDeleted, ImageUpdated
from tests.images.conftest import png_bytes, upload


def new_board(client, name: str) -> dict:
    response = client.post("/api/v1/boards/", json={"board_name": name})
    assert response.status_code == 201, response.text
    return response.json()


def join(client, image_name: str, board_id: str | None) -> dict:
    response = client.patch(f"/api/v1/images/{image_name}", json={"board_id": board_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_create_and_get(client):
    response = client.post("/api/v1/boards/", json={"board_name": "  Portraits "})
    assert response.status_code == 201
    board = response.json()
    assert response.headers["location"] == f"/api/v1/boards/{board['board_id']}"
    assert board["board_name"] == "Portraits"
    assert (board["image_count"], board["cover_image_name"]) == (0, None)
    assert board["created_at"] == board["updated_at"]
    assert client.get(f"/api/v1/boards/{board['board_id']}").json() == board


def test_images_join_and_leave_and_counts_follow(client):
    board = new_board(client, "b")["board_id"]
    first, second, third = (upload(client, png_bytes()).json()["image_name"] for _ in range(3))
    join(client, first, board)
    join(client, second, board)

    dto = client.get(f"/api/v1/boards/{board}").json()
    assert dto["image_count"] == 2
    # With no cover chosen, the board shows its newest image.
    assert dto["cover_image_name"] == second
    assert client.get(f"/api/v1/boards/{board}/image_names").json() == [second, first]

    join(client, second, None)
    assert client.get(f"/api/v1/boards/{board}").json()["image_count"] == 1
    assert client.get(f"/api/v1/boards/{board}/image_names").json() == [first]
    assert client.get(f"/api/v1/images/{third}").json()["board_id"] is None


def test_rename_and_cover(client):
    board = new_board(client, "old")
    board_id = board["board_id"]
    image = upload(client, png_bytes()).json()["image_name"]
    newer = upload(client, png_bytes(), board_id=board_id).json()["image_name"]

    response = client.patch(f"/api/v1/boards/{board_id}", json={"board_name": "new", "cover_image_name": image})
    assert response.status_code == 200, response.text
    dto = response.json()
    assert (dto["board_name"], dto["cover_image_name"]) == ("new", image)
    assert dto["updated_at"] > board["updated_at"]

    # Clearing the cover shows the newest image again; deleting the cover image does too.
    assert (
        client.patch(f"/api/v1/boards/{board_id}", json={"cover_image_name": None}).json()["cover_image_name"] == newer
    )
    client.patch(f"/api/v1/boards/{board_id}", json={"cover_image_name": image})
    client.delete(f"/api/v1/images/{image}")
    assert client.get(f"/api/v1/boards/{board_id}").json()["cover_image_name"] == newer


def test_list_paginated_and_all(client):
    boards = [new_board(client, f"board {i}")["board_id"] for i in range(5)]
    image = upload(client, png_bytes()).json()["image_name"]
    join(client, image, boards[0])

    page = client.get("/api/v1/boards/", params={"limit": 2}).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 0)
    assert [b["board_id"] for b in page["items"]] == boards[::-1][:2]
    everything = client.get("/api/v1/boards/", params={"all": "true"}).json()
    assert isinstance(everything, list)
    assert [b["board_id"] for b in everything] == boards[::-1]
    assert {b["board_id"]: b["image_count"] for b in everything}[boards[0]] == 1


def test_delete_keeping_images(client, events):
    board = new_board(client, "b")["board_id"]
    images = [upload(client, png_bytes(), board_id=board).json()["image_name"] for _ in range(2)]
    response = client.delete(f"/api/v1/boards/{board}")
    assert response.status_code == 200
    assert response.json() == {"board_id": board, "deleted_images": []}
    assert client.get(f"/api/v1/boards/{board}").status_code == 404
    for name in images:
        assert client.get(f"/api/v1/images/{name}").json()["board_id"] is None
    assert {e.image.image_name for e in events if isinstance(e, ImageUpdated)} == set(images)
    assert client.get("/api/v1/images/", params={"board_id": "none"}).json()["total"] == 2


def test_delete_with_images(client, settings, events):
    board = new_board(client, "b")["board_id"]
    images = [upload(client, png_bytes(), board_id=board).json()["image_name"] for _ in range(2)]
    other = upload(client, png_bytes()).json()["image_name"]
    response = client.delete(f"/api/v1/boards/{board}", params={"include_images": "true"})
    assert response.status_code == 200
    assert sorted(response.json()["deleted_images"]) == sorted(images)
    assert [item["image_name"] for item in client.get("/api/v1/images/").json()["items"]] == [other]
    assert sorted(p.name for p in settings.images_dir.iterdir()) == [other]
    assert {e.image_name for e in events if isinstance(e, ImageDeleted)} == set(images)


def test_board_errors(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"/api/v1/boards/{unknown}").status_code == 404
    assert client.patch(f"/api/v1/boards/{unknown}", json={"board_name": "x"}).status_code == 404
    assert client.delete(f"/api/v1/boards/{unknown}").status_code == 404
    assert client.get(f"/api/v1/boards/{unknown}/image_names").status_code == 404

    for body, loc in (
        ({}, ["body", "board_name"]),
        ({"board_name": ""}, ["body", "board_name"]),
        ({"board_name": "   "}, ["body", "board_name"]),
    ):
        response = client.post("/api/v1/boards/", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["loc"] == loc

    board = new_board(client, "b")["board_id"]
    response = client.patch(f"/api/v1/boards/{board}", json={"cover_image_name": "nope.png"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "cover_image_name"]
    assert client.get(f"/api/v1/boards/{board}").json()["board_name"] == "b"
    assert client.get("/api/v1/boards/").json()["total"] == 1

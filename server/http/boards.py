"""`/api/v1/boards/*`: create, list (with image counts), rename, set the cover, delete, and list image names.
An image joins or leaves a board by PATCHing its `board_id` (server/http/images.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.http.errors import ApiError, ErrorItem, not_found
from server.http.io import json_response, operation
from server.http.state import services
from server.images.boards import Boards
from server.images.errors import UnknownImage
from server.images.schema import (
    BoardCreate,
    BoardDeleted,
    BoardDTO,
    BoardList,
    BoardPatch,
    DeleteBoardQuery,
    ListBoardsQuery,
)

TAGS = ("boards",)


def _boards(request: Request) -> Boards:
    return services(request).images.boards


def _blank_name() -> ApiError:
    message = "`body.board_name` must not be blank"
    return ApiError(422, message, [ErrorItem(loc=["body", "board_name"], msg="must not be blank")])


@operation("Create a board", tags=TAGS, body=BoardCreate, responses={201: BoardDTO})
async def create_board(request: Request, *, body: BoardCreate) -> Response:
    if not body.board_name.strip():
        raise _blank_name()
    dto = await _boards(request).create(body.board_name)
    return json_response(dto, 201, headers={"Location": f"/api/v1/boards/{dto.board_id}"})


@operation(
    "List boards, newest first, with image counts (`all=true`: a plain list of every board)",
    tags=TAGS,
    query=ListBoardsQuery,
    responses={200: BoardList | list[BoardDTO]},
)
async def list_boards(request: Request, *, query: ListBoardsQuery) -> Response:
    boards = _boards(request)
    if query.all:
        return json_response(await boards.all())
    items, total = await boards.list(query.offset, query.limit)
    return json_response(BoardList(items=items, offset=query.offset, limit=query.limit, total=total))


@operation("One board", tags=TAGS, responses={200: BoardDTO, 404: None})
async def get_board(request: Request) -> Response:
    board_id = request.path_params["board_id"]
    dto = await _boards(request).get(board_id)
    if dto is None:
        raise not_found("Board", board_id)
    return json_response(dto)


@operation("Rename a board or choose its cover image", tags=TAGS, body=BoardPatch, responses={200: BoardDTO, 404: None})
async def patch_board(request: Request, *, body: BoardPatch) -> Response:
    board_id = request.path_params["board_id"]
    if isinstance(body.board_name, str) and not body.board_name.strip():
        raise _blank_name()
    try:
        return json_response(await _boards(request).update(board_id, body))
    except UnknownImage as exc:
        raise ApiError(422, str(exc), [ErrorItem(loc=["body", "cover_image_name"], msg=str(exc))]) from None
    except LookupError:
        raise not_found("Board", board_id) from None


@operation(
    "Delete a board; its images too with include_images=true, else they stay with no board",
    tags=TAGS,
    query=DeleteBoardQuery,
    responses={200: BoardDeleted, 404: None},
)
async def delete_board(request: Request, *, query: DeleteBoardQuery) -> Response:
    board_id = request.path_params["board_id"]
    try:
        return json_response(await _boards(request).delete(board_id, include_images=query.include_images))
    except LookupError:
        raise not_found("Board", board_id) from None


@operation("Names of the board's images, newest first", tags=TAGS, responses={200: list[str], 404: None})
async def board_image_names(request: Request) -> Response:
    board_id = request.path_params["board_id"]
    boards = _boards(request)
    if not await boards.exists(board_id):
        raise not_found("Board", board_id)
    return json_response(await boards.image_names(board_id))


routes = [
    Route("/boards/", create_board, methods=["POST"]),
    Route("/boards/", list_boards, methods=["GET"]),
    Route("/boards/{board_id}", get_board, methods=["GET"]),
    Route("/boards/{board_id}", patch_board, methods=["PATCH"]),
    Route("/boards/{board_id}", delete_board, methods=["DELETE"]),
    Route("/boards/{board_id}/image_names", board_image_names, methods=["GET"]),
]

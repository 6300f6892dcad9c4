"""Image and board payloads of the contract (docs/api.md §Images)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.db import NO_NUL

ImageCategory = Literal["general", "mask", "control", "user", "other"]
ListOrder = Literal["newest", "oldest"]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=500)]
# An offset goes to SQLite, whose integers stop at 2**63 - 1 (larger ones raised OverflowError: a 500).
Offset = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
BoardName = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)]


class ImageRecord(msgspec.Struct, kw_only=True):
    """An image as the database holds it."""

    image_name: str
    image_category: ImageCategory
    width: int
    height: int
    created_at: str
    updated_at: str
    is_intermediate: bool
    session_id: str | None
    node_id: str | None
    board_id: str | None
    starred: bool


class ImageDTO(ImageRecord, kw_only=True):
    """The record and where its files are served (docs/api.md §Images)."""

    image_url: str
    thumbnail_url: str


class ImageList(msgspec.Struct, kw_only=True):
    items: list[ImageDTO]
    offset: int
    limit: int
    total: int


class ImageUrls(msgspec.Struct, kw_only=True):
    image_name: str
    image_url: str
    thumbnail_url: str


class ImageMetadata(msgspec.Struct, kw_only=True):
    """`metadata`, `graph` and `workflow` are the stored JSON strings passed through untouched (msgspec.Raw)."""

    metadata: msgspec.Raw | None
    graph: msgspec.Raw | None
    # The `imagegraph_workflow` chunk, {"id", "name", "layout"}, of an image made by a saved workflow.
    workflow: msgspec.Raw | None = None


class ListImagesQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    categories: list[ImageCategory] | None = None
    is_intermediate: bool | None = None
    # A board id, or `none` for images on no board.
    board_id: str | None = None
    starred: bool | None = None
    offset: Offset = 0
    limit: PageLimit = 50
    order: ListOrder = "newest"


class UploadQuery(msgspec.Struct, kw_only=True):
    image_category: ImageCategory = "user"
    is_intermediate: bool = False
    board_id: str | None = None


class ImagePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields left out stay as they are; `board_id: null` takes the image off its board."""

    image_category: ImageCategory | msgspec.UnsetType = msgspec.UNSET
    is_intermediate: bool | msgspec.UnsetType = msgspec.UNSET
    board_id: str | msgspec.UnsetType | None = msgspec.UNSET
    starred: bool | msgspec.UnsetType = msgspec.UNSET
    session_id: str | msgspec.UnsetType | None = msgspec.UNSET


class DeleteImages(msgspec.Struct, kw_only=True):
    image_names: Annotated[list[str], msgspec.Meta(max_length=10_000)]


class DeletedImages(msgspec.Struct, kw_only=True):
    deleted: list[str]


class DeletedCount(msgspec.Struct, kw_only=True):
    deleted: int


class BoardDTO(msgspec.Struct, kw_only=True):
    board_id: str
    board_name: str
    created_at: str
    updated_at: str
    # The cover chosen with PATCH, else the board's newest image, else null.
    cover_image_name: str | None
    image_count: int


class BoardList(msgspec.Struct, kw_only=True):
    items: list[BoardDTO]
    offset: int
    limit: int
    total: int


class ListBoardsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    all: bool = False
    offset: Offset = 0
    limit: PageLimit = 50


class BoardCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    board_name: BoardName


class BoardPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    board_name: BoardName | msgspec.UnsetType = msgspec.UNSET
    # null clears the chosen cover (the newest image is shown again).
    cover_image_name: str | msgspec.UnsetType | None = msgspec.UNSET


class DeleteBoardQuery(msgspec.Struct, kw_only=True):
    include_images: bool = False


class BoardDeleted(msgspec.Struct, kw_only=True):
    board_id: str
    deleted_images: list[str]

"""Image and board payloads of the contract (../shared/API.md §Images)."""

from __future__ import annotations

from typing import Literal

import msgspec

ImageCategory = Literal["general", "mask", "control", "user", "other"]


class ImageDTO(msgspec.Struct, kw_only=True):
    image_name: str
    image_url: str
    thumbnail_url: str
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

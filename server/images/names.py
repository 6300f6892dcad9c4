"""Image names: the only handle a client has on a file. We issue them; anything else is not a name."""

from __future__ import annotations

import re
import uuid

# A uuid4 in canonical lower-case form plus `.png`: no slash, dot-dot, NUL or other byte can get through.
IMAGE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.png$")


def new_image_name() -> str:
    return f"{uuid.uuid4()}.png"


def is_image_name(name: str) -> bool:
    return IMAGE_NAME.fullmatch(name) is not None


def thumbnail_name(image_name: str) -> str:
    return image_name.removesuffix(".png") + ".webp"

"""Helpers for the image tests: small images in each format, uploads, and calls into the running service."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image, PngImagePlugin
from starlette.testclient import TestClient

from server.events import Event
from server.images.service import ImageService


def make_image(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    """A gradient, so resizes and re-encodes are visible in the pixels."""
    image = Image.linear_gradient("L").resize((width, height))
    if mode == "L":
        return image
    bands = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("L", (width, height), 128)]
    if mode == "RGBA":
        bands.append(Image.new("L", (width, height), 200))
    return Image.merge(mode, bands)


def png_bytes(image: Image.Image | None = None, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    (image or make_image()).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def jpeg_bytes(image: Image.Image | None = None, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    (image or make_image()).save(out, format="JPEG", quality=90, exif=Image.Exif() if exif is None else exif)
    return out.getvalue()


def webp_bytes(image: Image.Image | None = None, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    (image or make_image()).save(out, format="WEBP", quality=90, exif=Image.Exif() if exif is None else exif)
    return out.getvalue()


def upload(client: TestClient, data: bytes, filename: str = "x.png", content_type: str = "image/png", **query: Any):
    params = {key: str(value).lower() if isinstance(value, bool) else value for key, value in query.items()}
    return client.post("/api/v1/images/upload", files={"file": (filename, data, content_type)}, params=params or None)


def service(client: TestClient) -> ImageService:
    return client.app.state.services.images


def call(client: TestClient, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine function of the service on the app's own event loop."""
    return client.portal.call(functools.partial(func, *args, **kwargs))


@pytest.fixture
def events(client: TestClient) -> Iterator[list[Event]]:
    """Every event the hub publishes while the test runs."""
    seen: list[Event] = []
    hub = client.app.state.services.events
    hub.add_listener(seen.append)
    yield seen
    hub.remove_listener(seen.append)


@pytest.fixture
def uploaded(client: TestClient) -> dict[str, Any]:
    """One uploaded 96×64 PNG's DTO."""
    response = upload(client, png_bytes())
    assert response.status_code == 201, response.text
    return response.json()

"""Images in and out of A1111 requests: base64 or data-URL decoding, PNG encoding, uploads to the gallery,
and the pixel work done before a graph runs (img2img resize modes, inpainting masks)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import TYPE_CHECKING

from server.http.a1111 import schema as s
from server.http.a1111.state import problem
from server.images.upload import UploadRejected, decode_upload
from server.services import Services

if TYPE_CHECKING:
    from PIL import Image

_PNG_LEVEL = 1  # what goes back over the wire once; the gallery keeps its own file


def image_bytes(text: str, field: str) -> bytes:
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise problem(field, f"`{field}` is not base64 image data") from None


def decode_image(text: str, field: str) -> Image.Image:
    try:
        return decode_upload(image_bytes(text, field)).image
    except UploadRejected as exc:
        status = 413 if "large" in exc.detail or "pixels" in exc.detail else 415
        raise problem(field, f"`{field}`: {exc.detail}", status) from None


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


async def upload_image(svc: Services, image: Image.Image) -> str:
    data = await asyncio.to_thread(encode_png, image)
    return (await svc.images.upload(data, category="user", is_intermediate=True, board_id=None)).image_name


async def base64_of(svc: Services, image_name: str) -> str:
    cached = await svc.images.get_file(image_name, thumbnail=False)
    return base64.b64encode(cached.body).decode()


def fit(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A1111's img2img resize modes done in pixels before the graph resizes: 1 crop to the aspect, 2 fit inside
    and fill the rest from the edges; 0 and 3 leave it to the graph (a plain resize)."""
    from PIL import Image, ImageOps

    image = image.convert("RGB")
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == 2:
        fitted = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        canvas = fitted.resize((width, height), Image.Resampling.LANCZOS)
        canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
        return canvas
    return image


def inpaint_mask(image: Image.Image, body: s.Img2ImgRequest) -> Image.Image:
    from PIL import ImageFilter, ImageOps

    mask = image.convert("L") if image.mode != "RGBA" else image.getchannel("A")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A1111's "only masked" box, (x, y, width, height): around the mask's painted pixels, `padding` more on each
    side, then grown to the aspect of `width` × `height` (kept inside the image where it fits); None when the
    mask paints nothing."""
    box = mask.point(lambda value: 255 if value > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1 = max(box[0] - padding, 0), max(box[1] - padding, 0)
    x2, y2 = min(box[2] + padding, mask.width), min(box[3] + padding, mask.height)
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grown(y1, y2, round((x2 - x1) * height / width), mask.height)
    else:
        x1, x2 = _grown(x1, x2, round((y2 - y1) * width / height), mask.width)
    return x1, y1, x2 - x1, y2 - y1


def _grown(start: int, end: int, length: int, limit: int) -> tuple[int, int]:
    """[start, end) grown about its middle to `length`, moved back inside [0, limit), cut to it if longer."""
    extra = length - (end - start)
    start, end = start - extra // 2, end + extra - extra // 2
    if start < 0:
        start, end = 0, end - start
    if end > limit:
        start, end = start - (end - limit), limit
    return max(start, 0), end

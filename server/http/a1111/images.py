"""Images in and out of A1111 requests: base64 or data-URL decoding, PNG encoding, uploads to the gallery,
and the pixel work done before a graph runs (img2img resize modes, inpainting masks)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io

from PIL import Image, ImageFilter, ImageOps

from server.http.a1111 import schema as s
from server.http.a1111.state import problem
from server.images.upload import UploadRejected, decode_upload
from server.services import Services

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
    mask = image.convert("L") if image.mode != "RGBA" else image.getchannel("A")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask

"""Decoding an uploaded file: what it is is decided by decoding it, never by its name or content type.

Blocking (Pillow): run in a thread."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from server.images.foreign import EXIF_IFD, USER_COMMENT, ForeignMetadata, decode_user_comment, read_foreign_metadata

if TYPE_CHECKING:
    from PIL import Image

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")


class UploadRejected(Exception):
    """The upload cannot be stored; `status` is 413 (too big) or 415 (not an image we accept)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def max_pixels() -> int:
    from PIL import Image

    # Pillow's own decompression-bomb threshold (about 89 megapixels unless changed).
    return Image.MAX_IMAGE_PIXELS or 2**62


def decode_upload(data: bytes) -> tuple[Image.Image, ForeignMetadata]:
    """The decoded image (EXIF orientation applied) and the metadata it carried."""
    # Pillow is imported where it is used: the server answers its first request before loading it.
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Opening reads only the header; over the pixel limit Pillow merely warns (it raises at twice the
        # limit), so the size is checked here before any pixel is decoded.
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels():
            raise UploadRejected(
                413, f"The image is {width}×{height} pixels, more than the {max_pixels():,} pixels allowed"
            )
        image.load()
    except UploadRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadRejected(413, f"The image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise UploadRejected(415, "The file is not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data, or a text chunk over Pillow's safety limit.
        raise UploadRejected(415, f"The image could not be decoded: {exc}") from None

    text_chunks = {key: value for key, value in getattr(image, "text", {}).items() if isinstance(value, str)}
    exif_comment = None
    if image.format in ("JPEG", "WEBP"):
        try:
            exif_comment = decode_user_comment(image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT))
        except Exception:  # a damaged EXIF block only loses the comment, never the upload
            exif_comment = None
    found = read_foreign_metadata(text_chunks, exif_comment)

    upright = ImageOps.exif_transpose(image)
    if upright is not image:
        image.close()
    return upright, found

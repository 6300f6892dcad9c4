"""Decoding an uploaded file: what it is is decided by decoding it, never by its name or content type.

A PNG that decodes completely, needs no turning, has a pixel mode the server keeps (`PNG_MODES`) and a clean
chunk layout (`png_layout`) is stored as the bytes that were sent (anything after IEND left off): re-encoding
it would cost tens of milliseconds and change nothing a reader sees. Everything else is re-encoded: JPEG and
WebP, a PNG whose EXIF asks for a turn (or cannot be read), an animated PNG (its first frame is kept, as
before), palette images (converted to RGB/RGBA, as the nodes expect) and the chunk layouts `png_layout` refuses.
Metadata never forces a re-encode: the kept bytes carry the very chunks Pillow read, so InvokeAI, ComfyUI,
A1111 (all Pillow) and we read the same text from the stored file as from the upload.

Blocking (Pillow): run in a thread."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.images.files import PNG_MODES
from server.images.foreign import EXIF_IFD, USER_COMMENT, ForeignMetadata, decode_user_comment, read_foreign_metadata

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
EXIF_ORIENTATION = 0x0112
# Orientations other than 1 ("as stored"): each needs a flip or a turn before the pixels are upright.
TURNED = frozenset(range(2, 9))


class UploadRejected(Exception):
    """The upload cannot be stored; the message says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ImageTooLarge(UploadRejected):
    """More pixels than the server decodes."""


class NotAnImage(UploadRejected):
    """Not a PNG, JPEG or WebP we can decode (truncated, corrupt, another format)."""


@dataclass(frozen=True)
class DecodedUpload:
    image: Image.Image  # decoded in full, EXIF orientation applied
    metadata: ForeignMetadata
    # Whether the upload's own bytes may be stored as they are, as far as decoding tells (a PNG in a mode we
    # keep, needing no turn); its chunk layout is judged apart, as the bytes are written (ImageFiles.stage_png).
    keepable: bool


def max_pixels() -> int:
    from PIL import Image

    # Pillow's own decompression-bomb threshold (about 89 megapixels unless changed).
    return Image.MAX_IMAGE_PIXELS or 2**62


def decode_upload(data: bytes) -> DecodedUpload:
    """The decoded image, the metadata it carried, and its bytes when they can be stored as they are."""
    # Pillow is imported where it is used: the server answers its first request before loading it.
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Opening reads only the header; over the pixel limit Pillow merely warns (it raises at twice the
        # limit), so the size is checked here before any pixel is decoded.
        image: Image.Image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels():
            raise ImageTooLarge(f"The image is {width}×{height} pixels, more than the {max_pixels():,} pixels allowed")
        image.load()
    except UploadRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise NotAnImage("The file is not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data, or a text chunk over Pillow's safety limit.
        raise NotAnImage(f"The image could not be decoded: {exc}") from None

    file_format = image.format
    # str(): Pillow gives an iTXt chunk as its own str subclass, which msgspec will not encode.
    text_chunks = {key: str(value) for key, value in getattr(image, "text", {}).items() if isinstance(value, str)}
    try:
        exif: Image.Exif | None = image.getexif()
    except Exception:  # a damaged EXIF block loses what it held (comment, orientation), never the upload
        exif = None
    exif_comment = None
    # A1111 reads parameters from any format's EXIF UserComment (a PNG's `parameters` text, if any, wins).
    if exif is not None:
        try:
            exif_comment = decode_user_comment(exif.get_ifd(EXIF_IFD).get(USER_COMMENT))
        except Exception:
            exif_comment = None
    found = read_foreign_metadata(text_chunks, exif_comment)

    turned = _needs_turning(exif)
    if turned:
        upright = ImageOps.exif_transpose(image)
        image.close()
        image = upright
    keepable = file_format == "PNG" and exif is not None and not turned and image.mode in PNG_MODES
    return DecodedUpload(image, found, keepable)


def _needs_turning(exif: Image.Exif | None) -> bool:
    if exif is None:
        return False
    try:
        # The same lookup exif_transpose makes (a rational 6/1 counts as 6).
        return exif.get(EXIF_ORIENTATION) in TURNED
    except TypeError:  # an unhashable value: no orientation exif_transpose would apply either
        return False

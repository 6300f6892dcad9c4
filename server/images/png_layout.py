"""Whether an uploaded PNG's own bytes are fit to be stored as they are, judged from its chunks alone.

Pillow decodes the image, and with that checks the pixels, the pixel limit, the text and ICC limits and
truncation. This looks at what Pillow skips or tolerates but other readers (browsers, libpng) refuse or read
differently: CRCs (Pillow does not check those of the image data), chunk types that are no letters, critical
chunks nobody knows, IHDR/PLTE/IDAT out of place, and animation (Pillow decodes the first frame only, a browser
plays the frames nobody verified). Bytes after IEND are not part of the image: they are dropped, not stored.

Pure Python over a few dozen chunk headers; the CRCs are zlib's (which releases the GIL on large buffers)."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})
MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on one chunk's length


class MustReencode(ValueError):
    """The PNG decodes, but its bytes are not stored as they are; the message says why."""


def kept_length(data: bytes) -> int:
    """How many leading bytes of `data` to store as they are: everything up to and including IEND.

    Raises MustReencode when the chunk layout is not one every reader agrees on."""
    if not data.startswith(SIGNATURE):
        raise MustReencode("no PNG signature")
    view = memoryview(data)
    pos = len(SIGNATURE)
    seen_idat = idat_ended = seen_plte = False
    while True:
        if pos + 12 > len(data):
            raise MustReencode("the file ends before IEND")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > MAX_CHUNK or end > len(data):
            raise MustReencode(f"chunk {kind!r} runs past the end of the file")
        if not kind.isalpha():
            raise MustReencode(f"chunk type {kind!r} is not four letters")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise MustReencode(f"chunk {kind.decode()} has a wrong CRC")
        if (pos == len(SIGNATURE)) != (kind == b"IHDR"):
            raise MustReencode("IHDR is not the first chunk, or comes twice")
        if kind in ANIMATION:
            raise MustReencode("animated PNG (only the first frame is decoded and kept)")
        if kind[:1].isupper() and kind not in CRITICAL:
            raise MustReencode(f"unknown critical chunk {kind.decode()}")
        if kind == b"PLTE":
            if seen_plte or seen_idat:
                raise MustReencode("PLTE twice or after the image data")
            seen_plte = True
        if kind == b"IDAT":
            if idat_ended:
                raise MustReencode("the image data is split by other chunks")
            seen_idat = True
        elif seen_idat:
            idat_ended = True
        if kind == b"IEND":
            if not seen_idat:
                raise MustReencode("IEND before any image data")
            return end
        pos = end

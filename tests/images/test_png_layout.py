"""`kept_length`: how much of a PNG is stored as it is, or why it must be re-encoded, from its chunks alone."""

from __future__ import annotations

import struct
import zlib

import pytest

from server.images.png_layout import MustReencode, kept_length
from tests.images.test_upload_bytes import SIGNATURE, chunk

IHDR = chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
IDAT = chunk(b"IDAT", zlib.compress(b"\0" + bytes(6) + b"\0" + bytes(6)))
IEND = chunk(b"IEND", b"")
TEXT = chunk(b"tEXt", b"Comment\0hello")
PLTE = chunk(b"PLTE", bytes(6))


def png(*chunks: bytes) -> bytes:
    return SIGNATURE + b"".join(chunks)


def test_a_clean_png_is_kept_whole_and_what_follows_iend_is_left_off():
    clean = png(IHDR, TEXT, IDAT, IDAT, TEXT, IEND)
    assert kept_length(clean) == len(clean)
    assert kept_length(clean + b"trailing bytes") == len(clean)
    # Private and unknown ancillary chunks are fine: readers skip what they do not know.
    assert kept_length(png(IHDR, chunk(b"prVt", b"x"), IDAT, IEND)) == len(png(IHDR, chunk(b"prVt", b"x"), IDAT, IEND))


def wrong_crc(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GIF89a" + IHDR + IDAT + IEND, "signature"),
        (png(IHDR, IDAT), "ends before IEND"),
        (png(IHDR, IDAT, IEND)[:-3], "ends before IEND"),
        (png(IHDR, IDAT[:-8]), "runs past the end"),
        (png(IHDR, wrong_crc(IDAT), IEND), "CRC"),
        (png(IHDR, wrong_crc(TEXT), IDAT, IEND), "CRC"),
        (png(IHDR, chunk(b"t3Xt", b"x"), IDAT, IEND), "not four letters"),
        (png(TEXT, IHDR, IDAT, IEND), "IHDR"),
        (png(IHDR, IHDR, IDAT, IEND), "IHDR"),
        (png(IHDR, chunk(b"acTL", bytes(8)), IDAT, IEND), "animated"),
        (png(IHDR, chunk(b"CrIt", b"x"), IDAT, IEND), "unknown critical chunk"),
        (png(IHDR, PLTE, PLTE, IDAT, IEND), "PLTE"),
        (png(IHDR, IDAT, PLTE, IEND), "PLTE"),
        (png(IHDR, IDAT, TEXT, IDAT, IEND), "split"),
        (png(IHDR, IEND, IDAT), "before any image data"),
    ],
    ids=[
        "not-png",
        "no-iend",
        "iend-cut",
        "chunk-past-end",
        "idat-crc",
        "text-crc",
        "bad-type",
        "ihdr-not-first",
        "ihdr-twice",
        "apng",
        "unknown-critical",
        "plte-twice",
        "plte-after-idat",
        "idat-split",
        "iend-first",
    ],
)
def test_layouts_that_must_be_re_encoded(data, reason):
    with pytest.raises(MustReencode, match=reason):
        kept_length(data)

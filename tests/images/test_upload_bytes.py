"""Which uploads are stored as the bytes that were sent, and which are re-encoded.

Kept as sent: a PNG that decodes completely, needs no turning, has a mode the server keeps (RGB, RGBA, L, LA,
16-bit grey, 1-bit; 16-bit colour; colour-key transparency) and a clean chunk layout, whatever metadata it
carries; bytes after its IEND are left off. Re-encoded (as every upload was before): JPEG and WebP, EXIF or XMP
orientation that asks for a turn, unreadable EXIF, APNG (its first frame), palette images (to RGB/RGBA), and
chunk layouts other readers would refuse or read differently (a wrong CRC, an unknown critical chunk, image
data after other chunks)."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from server.images.png_layout import kept_length
from tests.images.conftest import jpeg_bytes, make_image, png_bytes, upload, webp_bytes

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], len(SIGNATURE)
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        found.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return SIGNATURE + b"".join(chunk(kind, body) for kind, body in chunks)


def with_chunk_after_ihdr(data: bytes, kind: bytes, body: bytes) -> bytes:
    parts = chunks_of(data)
    return png_of([parts[0], (kind, body), *parts[1:]])


def stored(client, response) -> bytes:
    assert response.status_code == 201, response.text
    full = client.get(response.json()["image_url"])
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    return full.content


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def random_pixels(width: int = 96, height: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8))


def sixteen_bit_rgb(width: int = 12, height: int = 8) -> bytes:
    """A 48-bit RGB PNG (Pillow reads it as 8-bit RGB, and cannot write one)."""
    rows = np.random.default_rng(2).integers(0, 65536, (height, width * 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return png_of([(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")])


def clean_pngs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x010F] = "A camera"  # make; no orientation
    exif[0x0112] = 1  # "as stored": nothing to turn
    rich = PngImagePlugin.PngInfo()
    rich.add_text("invokeai_metadata", json.dumps({"seed": 7, "positive_prompt": "a fox"}), zip=True)
    rich.add_itxt("parameters", "un renard, 狐\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 7")
    rich.add_text("Software", "another tool")
    with_metadata = io.BytesIO()
    random_pixels().save(with_metadata, format="PNG", pnginfo=rich, exif=exif, dpi=(300, 300))
    grey16 = Image.fromarray((np.arange(96 * 64, dtype=np.uint16).reshape(64, 96) * 9).astype(np.uint16))
    transparent = io.BytesIO()
    make_image().save(transparent, format="PNG", transparency=(0, 0, 128))
    return {
        "rgb": png_bytes(random_pixels()),
        "rgba": png_bytes(make_image(mode="RGBA")),
        "grey": png_bytes(make_image(mode="L")),
        "grey-alpha": png_bytes(make_image(mode="RGBA").convert("LA")),
        "grey-16-bit": png_bytes(grey16),
        "one-bit": png_bytes(make_image(mode="L").convert("1")),
        "rgb-48-bit": sixteen_bit_rgb(),
        "colour-key-transparency": transparent.getvalue(),
        "metadata-exif-private-chunk": with_chunk_after_ihdr(with_metadata.getvalue(), b"prVt", b"our own"),
    }


@pytest.mark.parametrize("name", list(clean_pngs()))
def test_a_clean_png_is_stored_byte_for_byte(client, settings, name):
    data = clean_pngs()[name]
    response = upload(client, data)
    assert stored(client, response) == data
    image_name = response.json()["image_name"]
    assert (settings.images_dir / image_name).read_bytes() == data
    # Decoded in full all the same: the record has its size and the thumbnail was made from its pixels.
    assert (response.json()["width"], response.json()["height"]) == decoded(data).size
    assert client.get(response.json()["thumbnail_url"]).headers["content-type"] == "image/webp"


def test_a_png_of_several_megabytes_is_kept_too(client):
    # Over the 1 MB that Starlette's multipart parser keeps in memory by default.
    data = png_bytes(random_pixels(1000, 800))
    assert len(data) > 2_000_000
    assert stored(client, upload(client, data)) == data


def test_metadata_of_a_kept_png_is_served_and_stays_in_the_file(client):
    data = clean_pngs()["metadata-exif-private-chunk"]
    response = upload(client, data)
    body = client.get(f"/api/v1/images/{response.json()['image_name']}/metadata").json()
    assert body == {"metadata": {"seed": 7, "positive_prompt": "a fox"}, "graph": None, "workflow": None}
    with Image.open(io.BytesIO(stored(client, response))) as png:
        assert json.loads(png.text["invokeai_metadata"]) == {"seed": 7, "positive_prompt": "a fox"}
        assert png.text["parameters"].startswith("un renard, 狐")
        assert png.text["Software"] == "another tool"
        assert png.getexif()[0x010F] == "A camera"


def test_bytes_after_iend_are_left_off(client):
    data = png_bytes(random_pixels())
    assert stored(client, upload(client, data + b"PK\x03\x04 a zip, or anything else")) == data


def reencoded(client, data: bytes) -> bytes:
    response = upload(client, data)
    kept = stored(client, response)
    assert kept != data
    kept_length(kept)  # what we wrote ourselves has a clean layout
    # A PNG's bytes are written while it decodes; once decoding turns them down, nothing of them stays behind.
    images_dir = client.app.state.settings.images_dir
    names = {path.name for path in images_dir.iterdir()}
    assert response.json()["image_name"] in names and not [name for name in names if name.startswith(".")]
    return kept


def test_jpeg_and_webp_are_converted(client):
    for data in (jpeg_bytes(), webp_bytes()):
        with Image.open(io.BytesIO(reencoded(client, data))) as png:
            assert png.format == "PNG" and png.size == (96, 64)


@pytest.mark.parametrize("how", ["exif", "xmp"])
def test_a_png_that_asks_for_a_turn_is_stored_upright(client, how):
    info = PngImagePlugin.PngInfo()
    extra = {}
    if how == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° clockwise to display"
        extra["exif"] = exif
    else:
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    out = io.BytesIO()
    random_pixels().save(out, format="PNG", pnginfo=info, **extra)
    kept = decoded(reencoded(client, out.getvalue()))
    assert kept.size == (64, 96)
    assert same_pixels(kept, random_pixels().transpose(Image.Transpose.ROTATE_270))
    assert kept.getexif().get(0x0112) is None


def test_a_png_with_unreadable_exif_is_stored_without_it(client):
    # Used to answer 500: reading the orientation raised.
    data = with_chunk_after_ihdr(png_bytes(random_pixels()), b"eXIf", b"garbage, not a TIFF header")
    kept = reencoded(client, data)
    assert b"eXIf" not in kept
    assert same_pixels(decoded(kept), random_pixels())


def test_an_animated_png_keeps_its_first_frame_only(client):
    first, second = make_image(), Image.new("RGB", (96, 64), "red")
    out = io.BytesIO()
    first.save(out, format="PNG", save_all=True, append_images=[second], duration=100, loop=0)
    assert b"acTL" in out.getvalue()
    kept = reencoded(client, out.getvalue())
    assert not {b"acTL", b"fcTL", b"fdAT"} & {kind for kind, _ in chunks_of(kept)}
    assert same_pixels(decoded(kept), first)


@pytest.mark.parametrize("transparency", [False, True])
def test_a_palette_png_is_stored_as_rgb_or_rgba(client, transparency):
    palette = make_image().convert("P")
    out = io.BytesIO()
    palette.save(out, format="PNG", **({"transparency": 0} if transparency else {}))
    kept = decoded(reencoded(client, out.getvalue()))
    assert kept.mode == ("RGBA" if transparency else "RGB")
    assert same_pixels(kept, palette.convert(kept.mode))


def wrong_idat_crc(data: bytes) -> bytes:
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    crc_at = at + 4 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


def stray_idat(data: bytes) -> bytes:
    """More image data after another chunk: Pillow stops at the first run and never reads it."""
    parts = chunks_of(data)
    return png_of([*parts[:-1], (b"tEXt", b"Comment\0between"), (b"IDAT", b"not decoded by anyone"), parts[-1]])


@pytest.mark.parametrize(
    "damage",
    [wrong_idat_crc, lambda data: with_chunk_after_ihdr(data, b"CrIt", b"must be understood"), stray_idat],
    ids=["wrong-idat-crc", "unknown-critical-chunk", "stray-image-data"],
)
def test_a_png_other_readers_would_refuse_is_re_encoded(client, damage):
    data = damage(png_bytes(random_pixels()))
    assert decoded(data).size == (96, 64)  # Pillow reads it, so it is accepted, as it always was
    kept = reencoded(client, data)
    assert same_pixels(decoded(kept), random_pixels())


def png_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    random_pixels().save(out, format="PNG", exif=exif)
    return out.getvalue()


@pytest.mark.parametrize(
    ("orientation", "turn"),
    [
        (2, Image.Transpose.FLIP_LEFT_RIGHT),  # the first that needs a change: a mirror
        (8, Image.Transpose.ROTATE_90),  # the last: a quarter turn anticlockwise
    ],
)
def test_every_exif_orientation_but_1_is_applied(client, orientation, turn):
    kept = decoded(reencoded(client, png_with_orientation(orientation)))
    assert same_pixels(kept, random_pixels().transpose(turn))


@pytest.mark.parametrize("orientation", [1, 9])
def test_a_png_whose_orientation_asks_for_nothing_is_kept_as_sent(client, orientation):
    # 1 is "as stored"; 9 is no orientation at all, which readers ignore (so do we).
    data = png_with_orientation(orientation)
    assert stored(client, upload(client, data)) == data


def test_a_text_chunk_over_pillows_limit_is_415(client, settings):
    # Decompressed it exceeds PngImagePlugin.MAX_TEXT_CHUNK (1 MiB): Pillow refuses it with a ValueError.
    data = with_chunk_after_ihdr(png_bytes(), b"zTXt", b"comment\x00\x00" + zlib.compress(b"a" * (2 * 1024**2)))
    response = upload(client, data)
    assert response.status_code == 415, response.text
    assert "could not be decoded" in response.json()["detail"]
    assert list(settings.images_dir.iterdir()) == []


def test_a_re_encoded_png_keeps_its_metadata_chunks(client):
    # A palette PNG is converted to RGB, so it is encoded again: the metadata it carried must come along.
    parameters = "un renard, 狐\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 7"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", parameters)
    out = io.BytesIO()
    make_image().convert("P").save(out, format="PNG", pnginfo=info)
    with Image.open(io.BytesIO(reencoded(client, out.getvalue()))) as kept:
        assert kept.text.get("parameters") == parameters


def test_a_converted_upload_is_stored_compressed(client):
    image = make_image(256, 256)
    data = reencoded(client, jpeg_bytes(image))
    assert len(data) < 256 * 256 * 3 // 2  # zlib level 0 would store every pixel byte

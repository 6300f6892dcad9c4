"""Uploading: PNG, JPEG and WebP are stored as PNG (decided by decoding, not by name), EXIF orientation applied,
size limits enforced, anything else refused with a clear 413/415 and nothing stored."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from server.config import Settings
from server.events import ImageCreated
from tests.images.conftest import jpeg_bytes, make_image, png_bytes, upload, webp_bytes


def stored_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.images_dir.iterdir()) + sorted(
        p.name for p in settings.thumbnails_dir.iterdir()
    )


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (png_bytes(), "a.png", "image/png"),
        (jpeg_bytes(), "b.jpg", "image/jpeg"),
        (webp_bytes(), "c.webp", "image/webp"),
        # The name and the declared type are ignored: this is a JPEG sent as "text/plain".
        (jpeg_bytes(), "notes.txt", "text/plain"),
    ],
    ids=["png", "jpeg", "webp", "jpeg-misnamed"],
)
def test_each_accepted_format_is_stored_as_png(client, events, data, filename, content_type):
    response = upload(client, data, filename, content_type)
    assert response.status_code == 201, response.text
    dto = response.json()
    name = dto["image_name"]
    assert response.headers["location"] == f"/api/v1/images/{name}"
    assert name.endswith(".png")
    assert (dto["width"], dto["height"]) == (96, 64)
    assert dto["image_category"] == "user" and dto["is_intermediate"] is False and dto["starred"] is False
    assert dto["image_url"] == f"/api/v1/images/{name}/full"
    assert dto["thumbnail_url"] == f"/api/v1/images/{name}/thumbnail"
    assert "image_origin" not in dto and "metadata" not in dto

    full = client.get(dto["image_url"])
    assert full.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(full.content)) as stored:
        assert stored.format == "PNG" and stored.size == (96, 64)
    assert client.get(f"/api/v1/images/{name}").json() == dto
    assert [e.image.image_name for e in events if isinstance(e, ImageCreated)] == [name]


def test_upload_query_sets_category_intermediate_and_board(client):
    board = client.post("/api/v1/boards/", json={"board_name": "inbox"}).json()
    response = upload(client, png_bytes(), image_category="mask", is_intermediate=True, board_id=board["board_id"])
    assert response.status_code == 201, response.text
    dto = response.json()
    assert (dto["image_category"], dto["is_intermediate"], dto["board_id"]) == ("mask", True, board["board_id"])


def test_exif_orientation_is_applied(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    dto = upload(client, jpeg_bytes(make_image(96, 64), exif=exif), "photo.jpg", "image/jpeg").json()
    assert (dto["width"], dto["height"]) == (64, 96)
    with Image.open(io.BytesIO(client.get(dto["image_url"]).content)) as stored:
        assert stored.size == (64, 96)


def test_palette_and_grey_images_survive(client):
    for image in (make_image(mode="L"), make_image().convert("P"), make_image(mode="RGBA")):
        response = upload(client, png_bytes(image))
        assert response.status_code == 201, response.text
        with Image.open(io.BytesIO(client.get(response.json()["image_url"]).content)) as stored:
            assert stored.size == image.size


def test_not_an_image_is_415_and_stores_nothing(client, settings, events):
    for data in (b"hello, this is text", b"", b"GIF89a" + b"\x00" * 64):
        response = upload(client, data, "fake.png", "image/png")
        assert response.status_code == 415, response.text
        assert "PNG, JPEG or WebP" in response.json()["detail"]
    gif = io.BytesIO()
    make_image().save(gif, format="GIF")
    response = upload(client, gif.getvalue(), "real.gif", "image/gif")
    assert response.status_code == 415
    assert client.get("/api/v1/images/").json()["total"] == 0
    assert stored_files(settings) == []
    assert not [e for e in events if isinstance(e, ImageCreated)]


def test_truncated_png_is_415(client):
    data = png_bytes(make_image(256, 256))
    response = upload(client, data[: len(data) // 2])
    assert response.status_code == 415
    assert "could not be decoded" in response.json()["detail"]


def test_decompression_bomb_is_refused_without_decoding(client, settings):
    # A valid PNG header that claims 100,000 × 100,000 pixels (10 gigapixels) over a few bytes of data.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )
    response = upload(client, bomb)
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"] or "too large" in response.json()["detail"]
    assert stored_files(settings) == []


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_1bit_png(width: int, height: int) -> bytes:
    """A complete, valid black 1-bit PNG: tens of megapixels in a few kilobytes."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then 8 pixels a byte
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_just_over_our_pixel_limit_is_413_before_decoding(client, settings):
    # Between our limit (Pillow's MAX_IMAGE_PIXELS, about 89 megapixels) and twice it, Pillow only warns and
    # would decode it (hundreds of MiB): our own check is all that refuses it.
    width = 10_000
    height = Image.MAX_IMAGE_PIXELS // width + 1
    assert Image.MAX_IMAGE_PIXELS < width * height < 2 * Image.MAX_IMAGE_PIXELS
    data = blank_1bit_png(width, height)
    assert len(data) < settings.upload_max_bytes
    response = upload(client, data)
    assert response.status_code == 413, response.text
    assert f"{width}×{height} pixels" in response.json()["detail"]
    assert stored_files(settings) == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_exact(client, settings, monkeypatch):
    # The limit follows Pillow's setting; a small one keeps both images small.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)
    assert upload(client, png_bytes(make_image(64, 64))).status_code == 201
    over = upload(client, png_bytes(make_image(65, 64)))  # 4,160 pixels: Pillow would only warn
    assert over.status_code == 413, over.text
    assert "65×64 pixels, more than the 4,096 pixels allowed" in over.json()["detail"]
    assert len(stored_files(settings)) == 2  # the first image and its thumbnail


def test_wrong_requests_get_clear_errors(client):
    response = client.post("/api/v1/images/upload", content=png_bytes(), headers={"content-type": "image/png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]

    response = client.post("/api/v1/images/upload", files={"other": ("x.png", png_bytes(), "image/png")})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "file"]

    response = upload(client, png_bytes(), image_category="selfie")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "image_category"]

    response = upload(client, png_bytes(), board_id="no-such-board")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "board_id"]
    assert client.get("/api/v1/images/").json()["total"] == 0


@pytest.fixture
def settings(make_settings) -> Settings:
    # A small limit so the over-limit upload stays small.
    return make_settings(upload_max_bytes=200_000)


def test_over_the_size_limit_is_413(client, settings):
    big = png_bytes(Image.effect_noise((400, 400), 64).convert("RGB"))
    assert len(big) > settings.upload_max_bytes
    response = upload(client, big)
    assert response.status_code == 413
    assert "upload_max_bytes" in response.json()["detail"]
    assert stored_files(settings) == []

    # Without a Content-Length (chunked), the body is cut off as soon as it passes the limit.
    def body():
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/api/v1/images/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert response.status_code == 413
    assert stored_files(settings) == []
    # Just under the limit still works.
    assert upload(client, png_bytes()).status_code == 201


def test_a_png_whose_image_data_breaks_off_into_a_garbled_chunk_is_415(client):
    # Pillow meets a chunk type that is no letters while it still needs image data: a SyntaxError, not OSError.
    data = png_bytes()
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack_from(">I", data, at)
    idat = data[at + 8 : at + 8 + length]
    half = len(idat) // 2

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    broken = data[:at] + chunk(b"IDAT", idat[:half]) + chunk(b"ID@T", idat[half:]) + data[at + 12 + length :]
    response = upload(client, broken)
    assert response.status_code == 415, response.text
    assert "could not be decoded" in response.json()["detail"]

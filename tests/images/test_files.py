"""`/full` and `/thumbnail`: immutable caching headers, 304, Range → 206, thumbnails, and the same answers
whether a file comes from the memory cache or from disk."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from server.config import Settings
from tests.images.conftest import make_image, png_bytes, service, upload

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(params=["cached", "from-disk"])
def settings(request, make_settings) -> Settings:
    """Every test runs twice: with the memory cache, and with it off so every answer is read from disk."""
    cache = 256 * 1024**2 if request.param == "cached" else 0
    return make_settings(image_cache_bytes=cache)


def test_full_has_immutable_caching_headers(client, settings, uploaded):
    response = client.get(uploaded["image_url"])
    assert response.status_code == 200
    stored = (settings.images_dir / uploaded["image_name"]).read_bytes()
    assert response.content == stored
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(stored))
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["accept-ranges"] == "bytes"
    # The same validators every time.
    again = client.get(uploaded["image_url"])
    assert again.headers["etag"] == response.headers["etag"]
    assert again.headers["last-modified"] == response.headers["last-modified"]


def test_validators_are_the_same_from_memory_and_from_disk(client, uploaded):
    first = client.get(uploaded["image_url"]).headers
    service(client).cache.evict(uploaded["image_name"])
    second = client.get(uploaded["image_url"]).headers
    assert (first["etag"], first["last-modified"]) == (second["etag"], second["last-modified"])


def test_304_on_if_none_match_and_if_modified_since(client, uploaded):
    url = uploaded["image_url"]
    first = client.get(url)
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]

    response = client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag and response.headers["cache-control"] == IMMUTABLE
    assert client.get(url, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert client.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    headers = {"If-None-Match": '"nope"', "If-Modified-Since": last_modified}
    assert client.get(url, headers=headers).status_code == 200
    assert client.get(url, headers={"If-Modified-Since": "garbage"}).status_code == 200


def test_range_requests_get_206(client, uploaded):
    url = uploaded["image_url"]
    whole = client.get(url).content
    size = len(whole)

    response = client.get(url, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.content == whole[:100]
    assert response.headers["content-range"] == f"bytes 0-99/{size}"
    assert response.headers["content-length"] == "100"
    assert response.headers["cache-control"] == IMMUTABLE

    response = client.get(url, headers={"Range": "bytes=100-"})
    assert response.status_code == 206 and response.content == whole[100:]
    response = client.get(url, headers={"Range": "bytes=-10"})
    assert response.status_code == 206 and response.content == whole[-10:]
    response = client.get(url, headers={"Range": f"bytes=10-{size + 1000}"})
    assert response.status_code == 206 and response.content == whole[10:]

    response = client.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"

    # A validator that does not match means "send me everything".
    etag = client.get(url).headers["etag"]
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'}).status_code == 200
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    # Malformed ranges are ignored.
    assert client.get(url, headers={"Range": "pages=1-2"}).status_code == 200


def test_range_edge_cases_follow_rfc_9110(client, uploaded):
    url = uploaded["image_url"]
    whole = client.get(url).content
    size = len(whole)

    def get(range_header: str, **more: str):
        return client.get(url, headers={"Range": range_header, **more})

    # The last byte, the whole file as one range, a suffix longer than the file, the unit in capitals.
    response = get(f"bytes={size - 1}-")
    assert (response.status_code, response.content) == (206, whole[-1:])
    assert response.headers["content-range"] == f"bytes {size - 1}-{size - 1}/{size}"
    response = get(f"bytes=0-{size - 1}")
    assert (response.status_code, response.content) == (206, whole)
    assert response.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    response = get(f"bytes=-{size + 50}")
    assert (response.status_code, response.content) == (206, whole)
    assert response.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert get("BYTES=2-3").content == whole[2:4]
    response = get("bytes=3-3")  # one byte
    assert (response.status_code, response.content) == (206, whole[3:4])
    assert get(" bytes = 2-3 ").content == whole[2:4]
    # Unsatisfiable: an empty suffix, a range that ends before it starts.
    for unsatisfiable in ("bytes=-0", "bytes=5-3"):
        response = get(unsatisfiable)
        assert response.status_code == 416, unsatisfiable
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json() == {"detail": "The requested range is outside the file"}
    # Ignored (the whole file, 200): several ranges, no dash, no numbers, a number that is not one.
    for ignored in ("bytes=0-1,4-5", "bytes=5", "bytes=-", "bytes=a-3", "bytes=3-b", "bytes=x", "pages=1-2"):
        response = get(ignored)
        assert (response.status_code, response.content) == (200, whole), ignored
    # If-Range may also name the Last-Modified date.
    last_modified = client.get(url).headers["last-modified"]
    assert get("bytes=0-9", **{"If-Range": last_modified}).status_code == 206
    # If-None-Match: * matches any version.
    assert client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}).status_code == 304
    # A date in an unknown zone (-0000) cannot be compared with ours: ignored, the whole file.
    assert client.get(url, headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 -0000"}).status_code == 200


def test_thumbnail_is_webp_with_aspect_kept(client):
    for size, expected in (((1024, 512), (256, 128)), ((300, 900), (85, 256)), ((64, 48), (64, 48))):
        dto = upload(client, png_bytes(make_image(*size))).json()
        response = client.get(dto["thumbnail_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        assert response.headers["cache-control"] == IMMUTABLE
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert thumb.format == "WEBP"
            assert thumb.size == expected
        etag = response.headers["etag"]
        assert client.get(dto["thumbnail_url"], headers={"If-None-Match": etag}).status_code == 304
        assert client.get(dto["thumbnail_url"], headers={"Range": "bytes=0-3"}).content == b"RIFF"


def test_lost_thumbnail_is_rebuilt(client, settings, uploaded):
    thumb = settings.thumbnails_dir / uploaded["image_name"].replace(".png", ".webp")
    thumb.unlink()
    service(client).cache.evict(thumb.name)
    response = client.get(uploaded["thumbnail_url"])
    assert response.status_code == 200
    assert thumb.is_file()


def test_head_request(client, uploaded):
    response = client.head(uploaded["image_url"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == IMMUTABLE


def test_reading_files_from_disk_leaves_no_descriptor_open(client, uploaded):
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    client.get(uploaded["image_url"])
    before = open_descriptors()
    for _ in range(50):
        service(client).cache.evict(uploaded["image_name"])
        assert client.get(uploaded["image_url"]).status_code == 200
    assert open_descriptors() - before < 10


def test_a_transparent_image_keeps_its_transparency_in_the_thumbnail(client):
    grey = make_image(mode="L")
    alpha = Image.new("L", grey.size, 255)
    alpha.paste(0, (0, 0, grey.width // 2, grey.height))  # the left half transparent
    grey_alpha = Image.merge("LA", (grey, alpha))
    dto = upload(client, png_bytes(grey_alpha)).json()
    with Image.open(io.BytesIO(client.get(dto["thumbnail_url"]).content)) as thumb:
        thumb.load()
        assert thumb.mode == "RGBA"
        assert thumb.getpixel((0, 0))[3] == 0 and thumb.getpixel((thumb.width - 1, 0))[3] == 255

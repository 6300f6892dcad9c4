"""A bounded in-memory LRU of image and thumbnail files, ready to send.

Files never change once written, so a cached copy is never stale; the only way out is deletion (evict) or
memory pressure (least recently used first). Used from the event loop thread only."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import formatdate

IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class CachedFile:
    body: bytes
    media_type: str
    etag: str
    last_modified: str
    # Prebuilt response headers (bytes), so a cache hit builds nothing per request.
    raw_headers: list[tuple[bytes, bytes]] = field(repr=False)
    not_modified_headers: list[tuple[bytes, bytes]] = field(repr=False)


def cached_file(body: bytes, media_type: str, mtime: float, size: int) -> CachedFile:
    # The same ETag formula as Starlette's FileResponse, so validators agree whichever path served the file.
    etag = '"' + hashlib.md5(f"{mtime}-{size}".encode(), usedforsecurity=False).hexdigest() + '"'
    last_modified = formatdate(mtime, usegmt=True)
    common = [
        (b"cache-control", IMMUTABLE.encode()),
        (b"etag", etag.encode()),
        (b"last-modified", last_modified.encode()),
    ]
    raw = [
        (b"content-type", media_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"accept-ranges", b"bytes"),
        *common,
    ]
    return CachedFile(body, media_type, etag, last_modified, raw, common)


class FileCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, CachedFile] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> CachedFile | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: CachedFile) -> None:
        # One file may take at most a quarter of the budget, so a few huge images cannot flush every thumbnail.
        if len(item.body) > self.max_bytes // 4:
            return
        self.evict(key)
        self._items[key] = item
        self.size += len(item.body)
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old.body)

    def evict(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old.body)

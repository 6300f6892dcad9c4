"""Image files on disk: one folder of PNGs, one of WebP thumbnails, every write atomic.

Everything here is blocking (Pillow, fsync): callers run it in a thread. Reads refuse anything that is not a
regular file (O_NOFOLLOW + fstat), so a symlink planted in the folder never leads outside it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from server.fileio import atomic_write, publish, write_synced
from server.images.names import is_image_name, thumbnail_name
from server.images.png_layout import MustReencode, kept_length

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256
# Generated images: zlib level 4 is within a few percent of level 6's size on generated images, at about half
# the time.
PNG_COMPRESS_LEVEL = 4
# Uploads that must be converted (JPEG, WebP, the PNGs that cannot be kept as sent): level 1, the fastest that
# compresses at all, at half the time of level 4 for files 7-14% larger (`bench/images.py --only png-levels`).
UPLOAD_PNG_COMPRESS_LEVEL = 1
# Pixel modes stored as they are; any other is converted to RGB or RGBA first.
PNG_MODES = ("RGB", "RGBA", "L", "LA", "I;16", "1")
# Thumbnails: see _thumbnail_webp for the reducing gap. libwebp's effort 0 (of 0-6) encodes a 256-pixel
# thumbnail in a third of the time of 4 (1.5-5 vs 7-14 ms here) for a file 2-19% larger (1-4% more than 1).
THUMBNAIL_REDUCING_GAP = 1.0
WEBP_QUALITY = 80
WEBP_METHOD = 0
TEMP_PREFIX = ".tmp-"
# Threads that write PNGs while the calling threads make thumbnails: one per write in flight, up to a few (the
# disk and two cores gain nothing from more).
PNG_WRITERS = 4


@dataclass(frozen=True)
class FileBytes:
    """A file's bytes with the stat fields its caching headers are built from."""

    data: bytes
    mtime: float
    size: int


@dataclass(frozen=True)
class StagedPng:
    """An upload's PNG bytes being written and fsynced under a temporary name, started before decoding decides
    whether they are kept: the fsync then overlaps the decode. `job` gives the temporary file and the bytes it
    holds, or None when the chunk layout rules the bytes out (`png_layout`)."""

    job: concurrent.futures.Future[tuple[Path, bytes] | None]


@dataclass(frozen=True)
class WrittenImage:
    width: int
    height: int
    png: FileBytes
    thumbnail: FileBytes


class ImageFiles:
    def __init__(self, images_dir: Path, thumbnails_dir: Path) -> None:
        self.images_dir = images_dir
        self.thumbnails_dir = thumbnails_dir
        # Threads start on first use and end with this object.
        self._png_writers = concurrent.futures.ThreadPoolExecutor(PNG_WRITERS, thread_name_prefix="png-write")

    def image_path(self, image_name: str) -> Path:
        if not is_image_name(image_name):
            raise ValueError(f"not an image name: {image_name!r}")
        return self.images_dir / image_name

    def thumbnail_path(self, image_name: str) -> Path:
        return self.thumbnails_dir / thumbnail_name(self.image_path(image_name).name)

    # Writing

    def stage_png(self, image_name: str, data: bytes) -> StagedPng:
        """Start writing an upload's own bytes (up to IEND) as `image_name`'s PNG, synced but not yet renamed;
        `write(..., staged=)` publishes them, `discard` removes them."""
        temp = self.image_path(image_name).with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{image_name}")
        return StagedPng(self._png_writers.submit(_stage, temp, data))

    def discard(self, staged: StagedPng) -> None:
        try:
            result = staged.job.result()
        except Exception:  # the write failed and removed its own file
            return
        if result is not None:
            _unlink(result[0])

    def write(
        self,
        image_name: str,
        image: Image.Image,
        text_chunks: dict[str, str],
        *,
        png: bytes | None = None,
        staged: StagedPng | None = None,
        compress_level: int = PNG_COMPRESS_LEVEL,
    ) -> WrittenImage:
        """Store the PNG (`staged`'s file, else `png` as given, else `image` encoded with the tEXt chunks) and
        its thumbnail, each through a temp name, fsync, rename and a folder fsync.

        Two threads: the PNG is encoded (when it has to be) and written on one while this one makes the
        thumbnail, so the thumbnail's resize and encode overlap the PNG's fsync. The thumbnail's file follows
        the PNG's, so what a crash can leave is a PNG without a thumbnail, never the reverse; either way
        start-up reconciliation removes files that have no record."""
        image_path = self.image_path(image_name)
        thumb_path = self.thumbnail_path(image_name)
        # The two threads never share an Image object (Pillow's are not safe to use from two threads at once).
        thumb_source = image.copy()
        if staged is not None:
            png_job = self._png_writers.submit(_publish_staged, staged, image_path)
        else:
            png_job = self._png_writers.submit(self._write_png, image_path, image, text_chunks, png, compress_level)
        try:
            thumbnail = _thumbnail_webp(thumb_source)
        except BaseException:
            concurrent.futures.wait([png_job])
            _unlink(image_path)
            raise
        try:
            png_file = png_job.result()
        except BaseException:
            _unlink(image_path)  # in case it failed after the rename (the folder's fsync)
            raise
        try:
            thumb_stat = _atomic_write(thumb_path, thumbnail)
        except BaseException:
            _unlink(image_path)
            raise
        return WrittenImage(
            width=image.width,
            height=image.height,
            png=png_file,
            thumbnail=FileBytes(thumbnail, thumb_stat.st_mtime, thumb_stat.st_size),
        )

    def _write_png(
        self, path: Path, image: Image.Image, text_chunks: dict[str, str], png: bytes | None, compress_level: int
    ) -> FileBytes:
        data = png if png is not None else encode_png(image, text_chunks, compress_level)
        written = _atomic_write(path, data)
        return FileBytes(data, written.st_mtime, written.st_size)

    def write_thumbnail(self, image_name: str) -> None:
        """Rebuild a missing thumbnail from the image (start-up reconciliation)."""
        data = self.read(self.image_path(image_name))
        from PIL import Image

        with Image.open(io.BytesIO(data.data)) as image:
            image.load()
            _atomic_write(self.thumbnail_path(image_name), encode_thumbnail(image))

    def delete(self, image_name: str) -> None:
        _unlink(self.image_path(image_name))
        _unlink(self.thumbnail_path(image_name))

    # Reading

    def read(self, path: Path) -> FileBytes:
        """The whole file, if it is a regular file; FileNotFoundError for anything else (symlink, folder)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise FileNotFoundError(f"{path.name} is not a readable file") from exc
        with open(fd, "rb", closefd=True) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileNotFoundError(f"{path.name} is not a regular file")
            data = file.read()
        return FileBytes(data, info.st_mtime, len(data))

    def open_image(self, image_name: str) -> Image.Image:
        data = self.read(self.image_path(image_name))
        from PIL import Image

        with Image.open(io.BytesIO(data.data)) as image:
            image.load()
            return image.copy()

    # Reconciliation

    def listing(self) -> tuple[set[str], set[str], list[Path]]:
        """(image names, thumbnail image names, every other entry) in the two folders."""
        images: set[str] = set()
        thumbnails: set[str] = set()
        strays: list[Path] = []
        for folder, suffix, found in ((self.images_dir, ".png", images), (self.thumbnails_dir, ".webp", thumbnails)):
            with os.scandir(folder) as entries:
                for entry in entries:
                    image_name = entry.name.removesuffix(suffix) + ".png" if entry.name.endswith(suffix) else ""
                    if is_image_name(image_name) and entry.is_file(follow_symlinks=False):
                        found.add(image_name)
                    else:
                        strays.append(Path(entry.path))
        return images, thumbnails, strays

    def remove_stray(self, path: Path) -> bool:
        """Remove a stray file or symlink (never what a symlink points at); folders are left alone. True when
        it is gone, also when someone else removed it first (another server on a shared root)."""
        try:
            if path.is_dir() and not path.is_symlink():
                log.warning("left %s in place: a folder, not a file we can remove", path)
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        return True


def encode_png(image: Image.Image, text_chunks: dict[str, str], compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    if image.mode not in PNG_MODES:
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text_chunks.items():
        # iTXt keeps any Unicode; tEXt is Latin-1 only. InvokeAI and A1111 read both.
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=compress_level)
    return out.getvalue()


def encode_thumbnail(image: Image.Image) -> bytes:
    return _thumbnail_webp(image.copy())


def _thumbnail_webp(thumb: Image.Image) -> bytes:
    """The WebP thumbnail of `thumb`, which it resizes in place (pass a copy of anything still in use)."""
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert("RGBA" if _has_alpha(thumb) else "RGB")
    # thumbnail() keeps the aspect ratio and never enlarges. A reducing gap of 1 averages whole blocks of pixels
    # first (512 -> 256 is all box average: 0.5 ms) and leaves only what remains of the ratio to LANCZOS (6 ms for
    # all of it); side by side the two thumbnails look the same (PSNR 36 dB between them on a photo).
    from PIL import Image

    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS, reducing_gap=THUMBNAIL_REDUCING_GAP)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _stage(temp: Path, data: bytes) -> tuple[Path, bytes] | None:
    try:
        length = kept_length(data)
    except MustReencode as why:
        log.debug("re-encoding an uploaded PNG: %s", why)
        return None
    # Slicing copies: only done when something follows IEND.
    kept = data if length == len(data) else data[:length]
    write_synced(temp, kept)
    return temp, kept


def _publish_staged(staged: StagedPng, path: Path) -> FileBytes:
    # Never waits on the pool it runs in: the staging job was submitted first, so it runs or has run.
    result = staged.job.result()
    assert result is not None, "a staged PNG whose layout was refused is re-encoded, not published"
    temp, data = result
    written = publish(temp, path)
    return FileBytes(data, written.st_mtime, written.st_size)


def _atomic_write(path: Path, data: bytes) -> os.stat_result:
    # The temporary name starts with TEMP_PREFIX so start-up reconciliation recognises leftovers.
    return atomic_write(path, data, temp_name=f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

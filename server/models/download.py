"""Fetching a model from an http(s) URL or a Hugging Face repo into a temporary folder of ours.

The file is streamed to disk (never held in memory), with progress in the log; the caller probes it and
moves it into place. Failures raise the model errors of their kind (server/models/errors.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import urllib.parse
from pathlib import Path

from server.models.errors import ModelsUnavailable, PathNotFound, UnsupportedModel
from server.models.model_files import MODEL_SUFFIXES

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHUNK = 1024 * 1024
_WRITE_BATCH = 8 * 1024 * 1024
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def file_name(url: str, content_disposition: str | None) -> str:
    """The model file's name: from Content-Disposition if the server gives one, else the URL's path."""
    if content_disposition:
        match = _FILENAME.search(content_disposition)
        if match:
            name = urllib.parse.unquote(match.group(1)).strip()
            if name:
                return os.path.basename(name.replace("\\", "/"))
    return os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


async def download_url(url: str, work_dir: Path) -> Path:
    """Stream `url` into `work_dir/<its file name>` and return that path."""
    import httpx

    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0)) as client:
            async with client.stream("GET", url) as response:
                if response.status_code == 404:
                    raise PathNotFound(f"{url} answered 404: there is no file at that address")
                if response.status_code >= 400:
                    raise ModelsUnavailable(f"{url} answered {response.status_code}; the model was not downloaded")
                name = file_name(str(response.url), response.headers.get("content-disposition"))
                if not name.lower().endswith(MODEL_SUFFIXES) or name.startswith("."):
                    raise UnsupportedModel(
                        f"{url} does not name a model file ({', '.join(MODEL_SUFFIXES)}); "
                        "give the address of the file itself",
                    )
                total = int(response.headers.get("content-length") or 0)
                target = work_dir / name
                await _stream_to(response, target, total, url)
                return target
    except httpx.HTTPError as exc:
        raise ModelsUnavailable(f"could not download {url}: {exc or type(exc).__name__}") from None


async def _stream_to(response, target: Path, total: int, url: str) -> None:
    done = 0
    last_log = time.monotonic()
    buffer = bytearray()
    f = await asyncio.to_thread(open, target, "wb")
    try:
        async for chunk in response.aiter_bytes(_CHUNK):
            buffer += chunk
            done += len(chunk)
            if len(buffer) >= _WRITE_BATCH:
                await asyncio.to_thread(f.write, bytes(buffer))
                buffer.clear()
            if time.monotonic() - last_log > 2.0:
                last_log = time.monotonic()
                share = f" ({done * 100 // total}%)" if total else ""
                log.info("downloading %s: %d MB%s", url, done // 2**20, share)
        if buffer:
            await asyncio.to_thread(f.write, bytes(buffer))
        await asyncio.to_thread(os.fsync, f.fileno())
    finally:
        await asyncio.to_thread(f.close)
    if total and done != total:
        raise ModelsUnavailable(f"{url} ended after {done} of {total} bytes; the model was not downloaded")
    log.info("downloaded %s (%d bytes)", url, done)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_repo(repo_id: str, work_dir: Path) -> Path:
    """A Hugging Face repo's diffusers files (no duplicate .bin / .ckpt weights) in `work_dir/<name>`.
    Blocking: run it in a thread."""
    if offline():
        raise ModelsUnavailable(
            f"no network access: cannot fetch the Hugging Face repo {repo_id} (HF_HUB_OFFLINE is set); "
            "download it elsewhere and import its folder by path",
        )
    from huggingface_hub import snapshot_download

    target = work_dir / repo_id.split("/")[1]
    try:
        snapshot_download(
            repo_id,
            local_dir=target,
            allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"],
            ignore_patterns=["*.fp16.safetensors", "*.non_ema.safetensors", "*.ckpt"],
        )
    except Exception as exc:
        raise ModelsUnavailable(f"could not fetch the Hugging Face repo {repo_id}: {exc}") from None
    return target

"""A1111's model hashes (server/http/a1111/hashes.py): what is hashed, that nothing waits for it, and that a
file is hashed once while it stays as it is."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest

from server.http.a1111 import hashes
from server.http.a1111.hashes import ModelHashes


def test_a_checkpoint_is_the_sha256_of_the_whole_file(tmp_path: Path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(os.urandom(3 * hashes.CHUNK + 17))  # several blocks, the last one short
    assert hashes.sha256_of(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_a_diffusers_folder_is_its_files_in_path_order(tmp_path: Path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "weights.bin").write_bytes(b"\x01\x02")
    (folder / ".cache" / "ignored").write_text("not part of the model")
    expected = hashlib.sha256(b"model_index.json\0{}unet/weights.bin\0\x01\x02").hexdigest()
    assert hashes.sha256_of(folder) == expected
    # A renamed file is another model.
    (folder / "unet" / "weights.bin").rename(folder / "unet" / "other.bin")
    assert hashes.sha256_of(folder) != expected


def test_nothing_waits_for_a_hash_and_each_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    calls: list[Path] = []
    real = hashes.sha256_of

    def counted(path: Path, stop=None) -> str:
        calls.append(path)
        return real(path, stop)

    monkeypatch.setattr(hashes, "sha256_of", counted)
    cache = tmp_path / "cache" / "hashes.json"

    async def scenario() -> None:
        store = ModelHashes(cache)
        missing = tmp_path / "gone.safetensors"
        assert await store.known([checkpoint, missing]) == [None, None]  # queued, not waited for
        await store.settled()
        assert await store.known([checkpoint, missing]) == [expected, None]
        assert await store.known([checkpoint]) == [expected]
        assert calls == [checkpoint]
        # Another process (a restart) reads it from the cache file.
        assert await ModelHashes(cache).known([checkpoint]) == [expected]
        assert calls == [checkpoint]
        # A changed file (size or mtime) is hashed again.
        checkpoint.write_bytes(b"other weights")
        store = ModelHashes(cache)
        assert await store.known([checkpoint]) == [None]
        await store.settled()
        assert await store.known([checkpoint]) == [hashlib.sha256(b"other weights").hexdigest()]
        assert calls == [checkpoint, checkpoint]

    asyncio.run(scenario())


def test_a_damaged_cache_file_means_hashing_again(tmp_path: Path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"weights")
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")

    async def scenario() -> list[str | None]:
        store = ModelHashes(cache)
        await store.known([checkpoint])
        await store.settled()
        return await store.known([checkpoint])

    assert asyncio.run(scenario()) == [hashlib.sha256(b"weights").hexdigest()]


def test_a_stopped_hash_leaves_its_thread(tmp_path: Path):
    checkpoint = tmp_path / "big.safetensors"
    checkpoint.write_bytes(b"\0" * (2 * hashes.CHUNK))
    stop = threading.Event()
    stop.set()
    with pytest.raises(hashes.Stopped):
        hashes.sha256_of(checkpoint, stop)

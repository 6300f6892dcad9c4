"""The loaded-model cache: least recently used first, bounded in bytes, in one or two tiers.

On a GPU there are two tiers: parts on the device (at most `vram_cache_gb`) and parts waiting in RAM (at most
`ram_cache_gb`). The least recently used part on the device moves to RAM when room is needed, and back when a
node uses it again, without a read from disk; the parts the running node uses never move. With `offload:
model` the device budget is 0, so the device keeps only the running node's parts (diffusers' model CPU
offload). With `offload: sequential`, and on the CPU, there is one tier, RAM (sequentially offloaded parts
stream to the device a layer at a time as they run: server/models/offload.py). Thread-safe; moves and
evictions happen on the worker thread that loads."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

Key = tuple[Any, ...]


class CacheTier(msgspec.Struct, kw_only=True):
    bytes: int
    limit_bytes: int | None
    parts: int


class CachedPart(msgspec.Struct, kw_only=True):
    model: str
    submodel: str
    bytes: int
    device: str
    # `vram`: counted against vram_cache_gb (on the accelerator); `ram`: waiting in RAM.
    tier: Literal["ram", "vram"]


class CacheState(msgspec.Struct, kw_only=True):
    """What the model cache holds, for `/api/v1/app/memory`."""

    device: str | None
    ram: CacheTier
    vram: CacheTier | None
    parts: list[CachedPart]
    loads: int
    hits: int
    moves_to_ram: int
    moves_to_device: int
    # What torch's allocator holds on a CUDA device now, and the most it held since the server started (the
    # model cache's parts and the activations of runs); null elsewhere.
    device_allocated_bytes: int | None = None
    device_peak_bytes: int | None = None


@dataclass
class _Entry:
    value: Any
    size: int
    # Whether the weights sit on the accelerator (the device tier) rather than in RAM.
    on_device: bool = False


class ModelCache:
    """Keys are `(model key, submodel, path, mtime)`; values are loaded parts (torch modules or anything else)."""

    def __init__(self, ram_limit_bytes: int) -> None:
        self.ram_limit_bytes = ram_limit_bytes
        # Set with the device: None on the CPU, where there is no second tier.
        self.vram_limit_bytes: int | None = None
        self.device: Any = None
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.ram_bytes = 0
        self.device_bytes = 0
        # The keys the running node used: they stay where they are until the next node starts.
        self._in_use: set[Key] = set()
        self._evicted = False
        self.moves_to_ram = 0
        self.moves_to_device = 0

    def use_device(self, device: Any, vram_limit_bytes: int | None) -> None:
        self.device, self.vram_limit_bytes = device, vram_limit_bytes

    def cached_keys(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def get(self, key: Key) -> Any | None:
        """The cached value (moved back to the device if it waited in RAM), or None; it is now in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self._in_use.add(key)
            if not entry.on_device and self._tiered(entry.value):
                # Room first: moving in and then out would need both on the device at once.
                self._free_device(entry.size)
                self._to_device(entry)
            self._fit()
            return entry.value

    def put(self, key: Key, value: Any) -> None:
        size = size_bytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._count(old, -1)
            entry = _Entry(value, size, on_device=self._tiered(value))
            self._entries[key] = entry
            self._count(entry, +1)
            self._in_use.add(key)
            self._fit()

    def begin_node(self) -> None:
        """A node starts: what the previous one used may now move or leave."""
        with self._lock:
            self._in_use.clear()
        self._release_if_evicted()

    def make_room(self, incoming: int) -> None:
        """Before a read from disk of about `incoming` bytes, let least recently used parts go (not the running
        node's) so the new one fits: evicting only after it is in memory would hold both at once."""
        if incoming <= 0:
            return
        with self._lock:
            if self.vram_limit_bytes is not None:
                self._free_device(incoming)
            else:
                for key, entry in list(self._entries.items()):
                    if self.ram_bytes + incoming <= self.ram_limit_bytes:
                        break
                    if key not in self._in_use:
                        self._evict(key, entry)
            self._fit()
        self._release_if_evicted()

    def state(self, loads: int, hits: int) -> CacheState:
        with self._lock:
            entries = list(self._entries.items())
            ram = CacheTier(
                bytes=self.ram_bytes,
                limit_bytes=self.ram_limit_bytes,
                parts=sum(1 for _, entry in entries if not entry.on_device),
            )
            vram = None
            if self.vram_limit_bytes is not None or self.device_bytes:
                vram = CacheTier(
                    bytes=self.device_bytes,
                    limit_bytes=self.vram_limit_bytes,
                    parts=sum(1 for _, entry in entries if entry.on_device),
                )
        device = str(self.device) if self.device is not None else None
        return CacheState(
            device=device,
            ram=ram,
            vram=vram,
            parts=[
                CachedPart(
                    model=key[0],
                    submodel=key[1],
                    bytes=entry.size,
                    device=device if entry.on_device and device else "cpu",
                    tier="vram" if entry.on_device else "ram",
                )
                for key, entry in entries
            ],
            loads=loads,
            hits=hits,
            moves_to_ram=self.moves_to_ram,
            moves_to_device=self.moves_to_device,
        )

    # under the lock

    def _count(self, entry: _Entry, sign: int) -> None:
        if entry.on_device:
            self.device_bytes += sign * entry.size
        else:
            self.ram_bytes += sign * entry.size

    def _tiered(self, value: Any) -> bool:
        """Whether a cached value lives on the accelerator and may move between it and RAM."""
        return self.vram_limit_bytes is not None and _is_module(value) and size_bytes(value) > 0

    def _fit(self) -> None:
        """Least recently used first: parts over the device budget move to RAM (not those the running node
        uses), parts over the RAM budget leave (the newest stays even when it alone exceeds it)."""
        if self.vram_limit_bytes is not None:
            for key, entry in list(self._entries.items()):
                if self.device_bytes <= self.vram_limit_bytes:
                    break
                if entry.on_device and key not in self._in_use:
                    self._to_ram(entry)
        for key, entry in list(self._entries.items()):
            if self.ram_bytes <= self.ram_limit_bytes or len(self._entries) <= 1:
                break
            if not entry.on_device and key != next(reversed(self._entries)):
                self._evict(key, entry)

    def _free_device(self, incoming: int) -> None:
        """Move least recently used parts (not the running node's) to RAM until `incoming` bytes fit."""
        assert self.vram_limit_bytes is not None
        for key, entry in list(self._entries.items()):
            if self.device_bytes + incoming <= self.vram_limit_bytes:
                break
            if entry.on_device and key not in self._in_use:
                self._to_ram(entry)

    def _evict(self, key: Key, entry: _Entry) -> None:
        del self._entries[key]
        self._count(entry, -1)
        self._evicted = True

    def _to_ram(self, entry: _Entry) -> None:
        self._count(entry, -1)
        entry.value.to("cpu")
        entry.on_device = False
        self._count(entry, +1)
        self.moves_to_ram += 1

    def _to_device(self, entry: _Entry) -> None:
        self._count(entry, -1)
        entry.value.to(self.device)
        entry.on_device = True
        self._count(entry, +1)
        self.moves_to_device += 1

    def _release_if_evicted(self) -> None:
        with self._lock:
            evicted, self._evicted = self._evicted, False
        if evicted:
            # Weights dropped from the cache are garbage once no node holds them; hand the pages back to the
            # system, or the process keeps the peak of every model it ever held.
            gc.collect()
            release_freed_memory()


# The floating dtypes of safetensors (`safetensors_io.DTYPE_SIZES`).
_FLOATING = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"})


def estimated_bytes(path: Path, submodel: str | None, dtype: Any) -> int:
    """What a part will take in memory once loaded, from its safetensors headers (a diffusers part's folder,
    or a whole checkpoint file when `submodel` is None): floating tensors in `dtype`. 0 when unknown."""
    from server.models.safetensors_io import HeaderError, read_header

    if submodel is None:
        files = [path] if path.suffix == ".safetensors" else []
    else:
        files = sorted((path / submodel).glob("*.safetensors")) if (path / submodel).is_dir() else []
    target = dtype.itemsize if dtype is not None else 4
    total = 0
    for file in files:
        try:
            header = read_header(file)
        except (OSError, HeaderError):
            return 0
        for info in header.tensors.values():
            count = 1
            for side in info.shape:
                count *= side
            # FP8 included: diffusers casts every floating tensor to the dtype it loads in.
            floating = info.dtype in _FLOATING
            total += count * (target if floating else (info.end - info.start) // max(count, 1))
    return total


def release_freed_memory() -> None:
    """glibc keeps freed heap pages for reuse; malloc_trim returns them, so RSS falls after an eviction."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def size_bytes(value: Any) -> int:
    parameters = getattr(value, "parameters", None)
    if parameters is None:
        return 0
    total = sum(p.numel() * p.element_size() for p in value.parameters())
    return total + sum(b.numel() * b.element_size() for b in value.buffers())

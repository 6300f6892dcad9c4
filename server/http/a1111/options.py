"""A1111's `/options`: the few that change what we generate (`sd_model_checkpoint`, `sd_vae`,
`CLIP_stop_at_last_layers`), the few clients read (`send_seed`, `samples_format`...), and whatever else a client
sets, kept as it was given. They live in `<root>/configs/a1111_options.json`, written atomically, so they survive a
restart; the server's own settings file stays ours alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from server.fileio import atomic_write

DEFAULTS: dict[str, Any] = {
    "sd_model_checkpoint": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "send_seed": True,
    "send_size": True,
    "samples_format": "png",
    "samples_save": True,
    "eta_noise_seed_delta": 0,
    "sd_checkpoint_hash": None,
}


class OptionsStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._values: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._values is None:
            stored: dict[str, Any] = {}
            if self.path.exists():
                try:
                    decoded = msgspec.json.decode(self.path.read_bytes())
                    stored = decoded if isinstance(decoded, dict) else {}
                except msgspec.DecodeError:
                    stored = {}  # a damaged file: the defaults, until the next write replaces it
            self._values = {**DEFAULTS, **stored}
        return self._values

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            return dict(await asyncio.to_thread(self._read))

    async def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            values = {**await asyncio.to_thread(self._read), **changes}
            stored = {key: value for key, value in values.items() if DEFAULTS.get(key, object()) != value}
            await asyncio.to_thread(atomic_write, self.path, msgspec.json.encode(stored))
            self._values = values
            return dict(values)

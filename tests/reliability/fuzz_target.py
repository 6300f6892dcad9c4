"""A throwaway server worth fuzzing: a root with the tiny model (diffusers folder and LDM checkpoint, so
convert and merge have something to work on), a few uploaded images, a board and one generated image.
Shared by tests/reliability/test_fuzz.py (short form) and bench/fuzz_soak.py (long form)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from server.config import Settings

API = "/api/v1"


def fuzz_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for a server that may only read and write inside `root`: `search_roots` is the root itself,
    so no search, import, convert or merge destination the fuzzer invents can reach anything else."""
    return Settings(root=str(root), watch=False, search_roots=[str(root)], **overrides)


def place_models(settings: Settings, tiny_diffusers: Path | None = None, tiny_checkpoint: Path | None = None) -> None:
    """The tiny model in autoimport, as a diffusers folder `tiny` and an LDM checkpoint `tiny-ckpt`; copies of
    already written ones when given (quicker), else written here."""
    import shutil

    from server.models.tiny import write_tiny_model
    from tests.models.conftest import settle

    main = settings.autoimport_dir / "main"
    main.mkdir(parents=True, exist_ok=True)
    if tiny_diffusers is not None:
        shutil.copytree(tiny_diffusers, main / "tiny")
    else:
        write_tiny_model(main / "tiny", "diffusers")
    if tiny_checkpoint is not None:
        shutil.copyfile(tiny_checkpoint, main / "tiny-ckpt.safetensors")
    else:
        write_tiny_model(main / "tiny-ckpt.safetensors", "checkpoint")
    # Sync waits for files modified in the last seconds to settle; these are complete.
    settle(main / "tiny")
    settle(main / "tiny-ckpt.safetensors")


def _png(width: int, height: int, shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, 128)).save(out, format="PNG")
    return out.getvalue()


def t2i_graph(model_name: str = "tiny", seed: int = 1) -> dict[str, Any]:
    """The contract's standard text-to-image graph at 64×64, 2 steps."""
    model = {"model_name": model_name, "base_model": "sd-1", "model_type": "main"}
    return {
        "id": "t2i",
        "nodes": {
            "model": {"id": "model", "type": "main_model_loader", "model": model},
            "pos": {"id": "pos", "type": "compel", "prompt": "a lighthouse"},
            "neg": {"id": "neg", "type": "compel", "prompt": ""},
            "noise": {"id": "noise", "type": "noise", "seed": seed, "width": 64, "height": 64},
            "denoise": {"id": "denoise", "type": "denoise_latents", "steps": 2, "cfg_scale": 7.5, "scheduler": "euler"},
            "decode": {"id": "decode", "type": "l2i"},
        },
        "edges": [
            {"source": {"node_id": "model", "field": "clip"}, "destination": {"node_id": "pos", "field": "clip"}},
            {"source": {"node_id": "model", "field": "clip"}, "destination": {"node_id": "neg", "field": "clip"}},
            {"source": {"node_id": "model", "field": "unet"}, "destination": {"node_id": "denoise", "field": "unet"}},
            {
                "source": {"node_id": "pos", "field": "conditioning"},
                "destination": {"node_id": "denoise", "field": "positive_conditioning"},
            },
            {
                "source": {"node_id": "neg", "field": "conditioning"},
                "destination": {"node_id": "denoise", "field": "negative_conditioning"},
            },
            {"source": {"node_id": "noise", "field": "noise"}, "destination": {"node_id": "denoise", "field": "noise"}},
            {
                "source": {"node_id": "denoise", "field": "latents"},
                "destination": {"node_id": "decode", "field": "latents"},
            },
            {"source": {"node_id": "model", "field": "vae"}, "destination": {"node_id": "decode", "field": "vae"}},
        ],
    }


@dataclass
class Seeded:
    """What the server holds before fuzzing starts (names the fuzzer's examples can point at)."""

    image_names: list[str] = field(default_factory=list)
    board_id: str = ""
    session_id: str = ""
    model_keys: list[str] = field(default_factory=list)


def seed_server(base_url: str, headers: dict[str, str] | None = None, timeout: float = 120.0) -> Seeded:
    """Register the models, upload three images (one on a board, one intermediate), run one generation."""
    seeded = Seeded()
    with httpx.Client(base_url=base_url + API, headers=headers, timeout=60) as api:
        response = api.post("/models/sync")
        response.raise_for_status()
        models = api.get("/models/").json()["models"]
        seeded.model_keys = [f"{m['base_model']}/{m['model_type']}/{m['model_name']}" for m in models]
        assert {"sd-1/main/tiny", "sd-1/main/tiny-ckpt"} <= set(seeded.model_keys), seeded.model_keys
        board = api.post("/boards/", json={"board_name": "fuzzed"})
        board.raise_for_status()
        seeded.board_id = board.json()["board_id"]
        for i, params in enumerate(({}, {"board_id": seeded.board_id}, {"is_intermediate": "true"})):
            files = {"file": (f"seed{i}.png", _png(48 + 16 * i, 32, 60 * i), "image/png")}
            uploaded = api.post("/images/upload", files=files, params=params)
            uploaded.raise_for_status()
            seeded.image_names.append(uploaded.json()["image_name"])
        session = api.post("/sessions/", json=t2i_graph())
        session.raise_for_status()
        seeded.session_id = session.json()["id"]
        api.put(f"/sessions/{seeded.session_id}/invoke").raise_for_status()
        deadline = time.monotonic() + timeout
        while True:
            state = api.get(f"/sessions/{seeded.session_id}").json()
            if state["status"] in ("completed", "failed", "canceled"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the seed generation did not finish: {state['status']}")
            time.sleep(0.1)
        assert state["status"] == "completed", state.get("errors")
        seeded.image_names.append(state["results"]["decode"]["image"]["image_name"])
    return seeded

"""Helpers for the model-manager tests: tiny models copied into a root, fake headers of real model
families, and a recorder of the events the manager emits."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.events import Event, ModelsChanged

API = "/api/v1/models"


def settle(path: Path) -> Path:
    """Make a file or folder look long finished (mtime a minute ago), as after a download or a `mv`
    of an old file; the manager waits for recently modified files to stop changing before probing."""
    past = time.time() - 60
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (past, past))
    return path


def put_model(source: Path, dest: Path, *, settled: bool = True) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest)
    else:
        shutil.copyfile(source, dest)
    return settle(dest) if settled else dest


def write_safetensors(path: Path, shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Path:
    """A valid safetensors file with zero-filled F16 tensors of the given shapes (real model families'
    key names and shapes, without their size where the shapes are small)."""
    import math

    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        f.write(b"\0" * offset)
    return path


def main_checkpoint_shapes(context: int, in_channels: int = 4, text: str = "sd-1") -> dict[str, list[int]]:
    """The tensors the probe reads from an LDM checkpoint of one family."""
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": [32, in_channels, 3, 3],
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [32, context],
        "first_stage_model.encoder.conv_in.weight": [8, 3, 3, 3],
    }
    text_key = {
        "sd-1": "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "sd-2": "cond_stage_model.model.ln_final.weight",
        "sdxl": "conditioner.embedders.1.model.ln_final.weight",
        "sdxl-refiner": "conditioner.embedders.0.model.ln_final.weight",
    }[text]
    shapes[text_key] = [8]
    return shapes


# The tiny models beyond SD-1, the pipeline diffusers runs each as, and the file suffix of each format.
TINY_BASES = ("sd-2", "sdxl", "sdxl-refiner")
PIPELINE_OF_BASE = {
    "sd-1": "StableDiffusionPipeline",
    "sd-2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}
SUFFIX = {"diffusers": "", "checkpoint": ".safetensors", "ckpt": ".ckpt"}


@pytest.fixture(scope="session")
def tiny_base_files(tmp_path_factory: pytest.TempPathFactory, tiny_model_files) -> dict[tuple[str, str], Path]:
    """(base, format) -> the seed-0 tiny model of every base in every format, written once per test run
    (read-only: copy it into a root before a test changes it). SD-1's are `tiny_model_files`."""
    from server.models.tiny import write_tiny_model

    folder = tmp_path_factory.mktemp("tiny-bases")
    files = {("sd-1", fmt): path for fmt, path in tiny_model_files.items()}
    for base in TINY_BASES:
        for fmt, suffix in SUFFIX.items():
            files[base, fmt] = write_tiny_model(folder / f"{base}{suffix}", fmt, base=base)
    return files


def pipeline_class(base: str):
    import diffusers

    return getattr(diffusers, PIPELINE_OF_BASE[base])


def generate(pipe, base: str, seed: int = 42):
    """One 64x64 image through the diffusers pipeline `pipe` of `base`, as a float array; the refiner
    (an img2img pipeline) refines a fixed gradient."""
    import numpy as np
    import torch

    pipe.set_progress_bar_config(disable=True)
    kwargs: dict = {"negative_prompt": "blurry", "num_inference_steps": 4}
    if base == "sdxl-refiner":
        ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)
        kwargs.update(image=torch.from_numpy(np.stack([np.outer(ramp, ramp)] * 3))[None], strength=0.5)
    else:
        kwargs.update(height=64, width=64)
    generator = torch.Generator().manual_seed(seed)
    return pipe("a lighthouse at dusk", generator=generator, output_type="np", **kwargs).images[0]


class Recorder:
    """Every models_changed event the app emits, in order."""

    def __init__(self) -> None:
        self.events: list[ModelsChanged] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, ModelsChanged):
            self.events.append(event)

    def clear(self) -> None:
        self.events.clear()


@pytest.fixture
def events(client: TestClient) -> Iterator[Recorder]:
    recorder = Recorder()
    hub = client.app.state.services.events
    hub.add_listener(recorder)
    yield recorder
    hub.remove_listener(recorder)


@pytest.fixture
def root(client: TestClient, settings) -> Path:
    """The running app's root folder (layout created), after its start-up sync finished."""
    manager = client.app.state.services.models
    client.portal.call(manager.first_sync.wait)
    return settings.root_path


def sync(client: TestClient) -> dict:
    response = client.post(f"{API}/sync")
    assert response.status_code == 200, response.text
    return response.json()


def listed(client: TestClient, **params) -> dict[str, dict]:
    response = client.get(f"{API}/", params=params)
    assert response.status_code == 200, response.text
    return {f"{m['base_model']}/{m['model_type']}/{m['model_name']}": m for m in response.json()["models"]}

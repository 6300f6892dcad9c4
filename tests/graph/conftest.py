"""Shared by the graph tests: the contract's standard text-to-image graph, an app with the tiny model
registered, a recorder of the events it emits, and diffusers' own pipeline as the parity reference."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from diffusers import StableDiffusionPipeline
from starlette.testclient import TestClient

from server.app import build_app
from server.config import Settings
from server.events import Event, SessionComplete
from server.graph.standard import txt2img_graph
from tests.conftest import BASE_URL

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}


def t2i_graph(
    *,
    prompt: str = "a lighthouse at dusk",
    seed: int = 42,
    size: int = 64,
    steps: int = 4,
    scheduler: str = "euler",
    cfg_scale: float = 7.5,
    model: dict[str, str] | None = None,
    metadata: bool = True,
) -> dict[str, Any]:
    """The standard text-to-image graph of docs/api.md, at test size."""
    return txt2img_graph(
        model or MODEL,
        prompt,
        seed=seed,
        width=size,
        height=size,
        steps=steps,
        cfg_scale=cfg_scale,
        scheduler=scheduler,
        metadata=metadata,
    )


WAIT = 120.0


class Recorder:
    """Every event the hub publishes, in order, with waiting for one to arrive."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._condition = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._condition:
            self.events.append(event)
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT) -> Event:
        with self._condition:
            found: list[Event] = []

            def seen() -> bool:
                found[:] = [event for event in self.events if predicate(event)]
                return bool(found)

            assert self._condition.wait_for(seen, timeout), "the expected event did not arrive"
            return found[0]

    def wait_finished(self, session_id: str) -> SessionComplete:
        return self.wait_for(lambda e: isinstance(e, SessionComplete) and e.session_id == session_id)  # type: ignore[return-value]

    def of(self, session_id: str, kind: type[Event] | None = None) -> list[Event]:
        with self._condition:
            return [
                e
                for e in self.events
                if getattr(e, "session_id", None) == session_id and (kind is None or isinstance(e, kind))
            ]


def with_settings(make_settings: Callable[..., Settings], name: str, **changes: Any) -> Settings:
    """Another installation (a root, and on PostgreSQL a database, of its own) with these settings."""
    return make_settings(root=str(make_settings().root_path.parent / name), **changes)


def register_tiny(client: TestClient, files: dict, fmt: str = "diffusers") -> None:
    """Register the tiny model (named `tiny`) where the session fixture wrote it; nothing writes to it."""
    response = client.post("/api/v1/models/import", json={"location": str(files[fmt])})
    assert response.status_code == 201, response.text
    assert response.json()["model_name"] == "tiny"


@contextlib.contextmanager
def generation_app(settings: Settings, files: dict, fmt: str = "diffusers") -> Iterator[tuple[TestClient, Recorder]]:
    """A client on an app with the tiny model registered, and the recorder of its events."""
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        register_tiny(client, files, fmt)
        recorder = Recorder()
        client.app.state.services.events.add_listener(recorder)
        yield client, recorder


@pytest.fixture
def generation(settings: Settings, tiny_model_files) -> Iterator[tuple[TestClient, Recorder]]:
    with generation_app(settings, tiny_model_files) as pair:
        yield pair


def run_graph(client: TestClient, recorder: Recorder, graph: dict[str, Any]) -> dict[str, Any]:
    """POST, invoke, wait for session_complete; the finished session."""
    created = client.post("/api/v1/sessions/", json=graph)
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    assert client.put(f"/api/v1/sessions/{session_id}/invoke").status_code == 202
    recorder.wait_finished(session_id)
    return client.get(f"/api/v1/sessions/{session_id}").json()


def assert_same_pixels(ours: Any, theirs: Any, message: str = "") -> None:
    """The same image, to the last bit of each 8-bit value, but for rounding: on the CPU the last float bit of a
    convolution depends on the alignment of its buffers, which differs between two models' allocations, so a
    value sitting on a rounding boundary may land one step either way. A real difference (a wrong step, scale or
    mask) moves many values by many steps; that fails."""
    import numpy as np

    ours, theirs = np.asarray(ours, dtype=np.int16), np.asarray(theirs, dtype=np.int16)
    assert ours.shape == theirs.shape, f"{message} shapes {ours.shape} != {theirs.shape}"
    diff = np.abs(ours - theirs)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (
        f"{message} {int((diff > 0).sum())} of {diff.size} values differ, by up to {int(diff.max())}"
    )


def load_sd_pipeline(folder: Any, **components: Any) -> StableDiffusionPipeline:
    """diffusers' own pipeline over a model folder (components given replace the folder's), without the safety
    checker or a progress bar: the reference the parity tests hold our graphs to."""
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False, **components
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd_pipeline(tiny_model_files) -> StableDiffusionPipeline:
    """The tiny model's pipeline, one per test module. A test that loads an adapter into a pipeline loads its own
    with `load_sd_pipeline`, so no adapter leaks into another test's reference."""
    return load_sd_pipeline(tiny_model_files["diffusers"])

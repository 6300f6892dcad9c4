"""What a node sees while it runs on the worker thread: its tensors, models, images, progress and cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from server.events import Emit, GeneratorProgress
from server.graph.preview import latents_preview

if TYPE_CHECKING:
    from PIL import Image

    from server.config import Settings
    from server.graph.fields import LoraField
    from server.images.schema import ImageCategory, ImageDTO
    from server.images.service import ImageService, PublishGuard
    from server.models.loader import ModelLoader
    from server.models.schema import ModelConfig, ModelIdentifier

T = TypeVar("T")

# Above this many pixels `vae_tiling: auto` tiles: a whole SD VAE decode at 2048² needs ~10 GiB of activations,
# while 1536² and below (SDXL's sizes, a 1.5× hires pass) decode whole and keep the pipelines' exact pixels.
VAE_TILING_AUTO_PIXELS = 1536 * 1536


class Canceled(Exception):
    """Raised inside a node when its session was canceled; the executor marks the session `canceled`."""


class NodeError(Exception):
    """A failure a person can act on (missing image, wrong sizes...); its message becomes the session error."""


@dataclass
class RunServices:
    """What nodes may reach: passed in by the executor, never looked up globally."""

    settings: Settings
    emit: Emit
    loader: ModelLoader
    images: ImageService
    loop: asyncio.AbstractEventLoop
    # On a shared queue: whether this run still holds its session, asked before each image is published.
    publish_guard: PublishGuard | None = None


@dataclass
class InvocationContext:
    services: RunServices
    session_id: str
    node_id: str
    source_node_id: str
    # The session's tensors by name; outputs refer to them by name.
    tensors: dict[str, Any]
    # Prefix for the names of tensors this invocation creates (derived from its cache key when it has one).
    name_prefix: str
    cancel: threading.Event
    # The session's graph as JSON, encoded once on demand (the image service strips its accumulators).
    graph_json: Callable[[], str] | None = None
    produced: dict[str, Any] = field(default_factory=dict)
    _last_preview: float = float("-inf")

    # tensors
    def put_tensor(self, field_name: str, value: Any) -> str:
        name = f"{self.name_prefix}.{field_name}"
        self.tensors[name] = value
        self.produced[name] = value
        return name

    def get_tensor(self, name: str) -> Any:
        try:
            return self.tensors[name]
        except KeyError:
            raise NodeError(f"tensor {name!r} is not available in this session; wire the node that makes it") from None

    # models
    def load_model(self, model: ModelIdentifier, submodel: str | None = None) -> Any:
        """A part of a main model (`unet`, `text_encoder`...), or a whole model of another type."""
        return self.services.loader.load(model, submodel, session_id=self.session_id)

    def load_loras(self, loras: list[LoraField]) -> list[tuple[Any, float]]:
        """The LoRA files of a UNet or CLIP handle, read (or from the cache), with their weights."""
        return [(self.load_model(lora.lora), lora.weight) for lora in loras]

    def pipeline_config(self, model: ModelIdentifier) -> dict[str, Any]:
        """The model's pipeline settings (`model_index.json`: `force_zeros_for_empty_prompt`...)."""
        models = self.services.loader.models
        try:
            return models.pipeline_config(models.get(model.base_model, model.model_type, model.model_name))
        except KeyError:
            return {}

    def registered(self, model_type: str, base_models: Sequence[str]) -> list[ModelConfig]:
        """The registered models of a type and bases (the embeddings a prompt may name, say)."""
        return self.services.loader.models.list_models(list(base_models), model_type)

    def unet_runner(self, unet: Any) -> Any:
        """What runs the UNet's forward pass: the module, or its torch.compile'd form (`compile: unet`)."""
        if self.services.settings.compile == "unet":
            return self.services.loader.compiled_unet(unet)
        return unet

    def vae_tiled(self, width: int, height: int) -> bool:
        """Whether the VAE works on an image of this size in tiles (the `vae_tiling` setting)."""
        setting = self.services.settings.vae_tiling
        return setting == "on" or (setting == "auto" and width * height > VAE_TILING_AUTO_PIXELS)

    @property
    def device(self) -> Any:
        return self.services.loader.device

    @property
    def dtype(self) -> Any:
        return self.services.loader.dtype

    # progress and cancel
    def check_canceled(self) -> None:
        if self.cancel.is_set():
            raise Canceled()

    def progress(self, step: int, total_steps: int, latents: Any) -> None:
        """Report a finished step; attach a preview of the latents (when there are any: an upscaler's tiles have
        none) at most every `preview_interval_ms`."""
        now = time.monotonic()
        preview = None
        due = step == total_steps or (now - self._last_preview) * 1000 >= self.services.settings.preview_interval_ms
        if latents is not None and due:
            preview = latents_preview(latents)
            self._last_preview = now
        self.services.emit(
            GeneratorProgress(
                session_id=self.session_id,
                node_id=self.node_id,
                source_node_id=self.source_node_id,
                step=step,
                total_steps=total_steps,
                progress_image=preview,
            )
        )

    # images (the image service is async and lives on the event loop; the worker waits for it)
    def call_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.services.loop).result()

    def image_dto(self, image_name: str) -> ImageDTO:
        dto = self.call_async(self.services.images.get_dto(image_name))
        if dto is None:
            raise NodeError(f"image {image_name!r} does not exist")
        return dto

    def open_image(self, image_name: str) -> Image.Image:
        try:
            return self.call_async(self.services.images.open_image(image_name))
        except LookupError:
            raise NodeError(f"image {image_name!r} does not exist") from None

    def save_image(
        self,
        image: Image.Image,
        *,
        is_intermediate: bool = False,
        board_id: str | None = None,
        metadata: str | None = None,
        category: ImageCategory = "general",
    ) -> ImageDTO:
        return self.call_async(
            self.services.images.save(
                image,
                category=category,
                is_intermediate=is_intermediate,
                session_id=self.session_id,
                node_id=self.node_id,
                board_id=board_id,
                metadata=metadata,
                graph=self.graph_json() if self.graph_json is not None else None,
                guard=self.services.publish_guard,
            )
        )

"""`/health` and the `/api/v1/app/*` routes."""

from __future__ import annotations

from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import __version__
from server.graph.context import VAE_TILING_AUTO_PIXELS
from server.graph.graph import Graph
from server.graph.schedulers import SCHEDULER_NAMES
from server.graph.standard import GenerationSettings, SettingsProblem, build_graph
from server.http.errors import ApiError, ErrorItem
from server.http.io import json_response, operation
from server.http.state import services
from server.models.loader import ModelLoader
from server.models.model_cache import CacheState

_HEALTH_BODY = b'{"status":"ok"}'


class Health(msgspec.Struct):
    status: str


class Version(msgspec.Struct):
    version: str


class Folders(msgspec.Struct):
    models: str
    autoimport: str
    images: str
    thumbnails: str
    configs: str
    databases: str


class MemorySettings(msgspec.Struct, kw_only=True):
    """How generation uses the device and memory: the settings, and what `auto` became once torch ran."""

    # The setting (`auto`, `float16`...) and the dtype in use (null until the first generation loads torch).
    precision: str
    dtype: str | None
    attention: str
    vae_tiling: str
    # `vae_tiling: auto` tiles images with more pixels than this.
    vae_tiling_above_pixels: int
    ram_cache_bytes: int
    # Null on the CPU, and before the first generation on a GPU (its size is not known yet).
    vram_cache_bytes: int | None
    offload: str
    compile: str
    channels_last: bool


class AppConfig(msgspec.Struct, kw_only=True):
    version: str
    schedulers: list[str]
    device: str
    precision: str
    generation: MemorySettings
    folders: Folders
    token_required: bool
    upload_max_bytes: int
    # Why models.yaml could not be read, when it could not; the file is left untouched until fixed.
    models_yaml_error: str | None = None
    # `sqlite`, or `postgresql (URL without its password)` when servers and workers share a database.
    database: str = "sqlite"


@operation("Liveness probe; answers before torch is loaded", tags=("app",), responses={200: Health})
async def health(request: Request) -> Response:
    return Response(_HEALTH_BODY, media_type="application/json")


@operation("Server version", tags=("app",), responses={200: Version})
async def version(request: Request) -> Response:
    return json_response(Version(version=__version__))


@operation("Public settings", tags=("app",), responses={200: AppConfig})
async def app_config(request: Request) -> Response:
    svc = services(request)
    settings = svc.settings
    root = settings.root_path

    def rel(path: Path) -> str:
        return str(path.relative_to(root))

    return json_response(
        AppConfig(
            version=__version__,
            schedulers=list(SCHEDULER_NAMES),
            device=svc.executor.device_name,
            precision=settings.precision,
            generation=memory_settings(svc.executor.loader),
            folders=Folders(
                models=rel(settings.models_dir),
                autoimport=rel(settings.autoimport_dir),
                images=rel(settings.images_dir),
                thumbnails=rel(settings.thumbnails_dir),
                configs=rel(settings.configs_dir),
                databases=rel(settings.db_path.parent),
            ),
            token_required=settings.token is not None,
            upload_max_bytes=settings.upload_max_bytes,
            models_yaml_error=svc.models.yaml_error,
            database=svc.db.describe(),
        )
    )


def memory_settings(loader: ModelLoader) -> MemorySettings:
    settings = loader.settings
    return MemorySettings(
        precision=settings.precision,
        dtype=str(loader.dtype).removeprefix("torch.") if loader.dtype is not None else None,
        attention=settings.attention,
        vae_tiling=settings.vae_tiling,
        vae_tiling_above_pixels=VAE_TILING_AUTO_PIXELS,
        ram_cache_bytes=loader.cache.ram_limit_bytes,
        vram_cache_bytes=loader.cache.vram_limit_bytes,
        offload=settings.offload,
        compile=settings.compile,
        channels_last=settings.channels_last,
    )


@operation(
    "What the model cache holds: each part's size and device, bytes per tier against its limit",
    tags=("app",),
    responses={200: CacheState},
)
async def memory(request: Request) -> Response:
    return json_response(services(request).executor.loader.state())


@operation(
    "The standard generation graph for these settings (what the web UI and `imagegraph generate` run)",
    tags=("app",),
    body=GenerationSettings,
    responses={200: Graph, 422: None},
)
async def standard_graph(request: Request, *, body: GenerationSettings) -> Response:
    try:
        return json_response(build_graph(body))
    except SettingsProblem as exc:
        raise ApiError(422, str(exc), [ErrorItem(loc=["body", exc.field], msg=str(exc))]) from None


# Paths below /api/v1 (every resource module lists its routes relative to that mount).
routes = [
    Route("/app/version", version, methods=["GET"]),
    Route("/app/config", app_config, methods=["GET"]),
    Route("/app/memory", memory, methods=["GET"]),
    Route("/app/graph", standard_graph, methods=["POST"]),
]

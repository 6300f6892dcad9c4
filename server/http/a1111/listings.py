"""A1111's options and its lists (checkpoints, VAEs, samplers, schedulers, upscalers, LoRAs, embeddings,
scripts), answered from our registered models; the server's flags and memory; a model rescan."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.http.a1111 import schema as s
from server.http.a1111 import translate
from server.http.a1111.state import TAGS, catalogue_of, problem, state_of
from server.http.io import json_response, operation
from server.http.state import services


@operation("A1111's options (model, VAE, clip skip and the rest), kept across restarts", tags=TAGS)
async def get_options(request: Request) -> Response:
    values = await state_of(request).options.get()
    catalogue = await catalogue_of(request)
    try:
        model = translate.main_model(catalogue, values)
    except translate.RequestProblem:
        model = None  # none registered, or the one chosen is gone: reported when a generation asks for it
    if not values.get("sd_model_checkpoint"):
        values["sd_model_checkpoint"] = translate.model_title(model) if model is not None else None
    # A1111 keeps the checkpoint's full sha256 here (null until it is known: see hashes.py).
    values["sd_checkpoint_hash"] = catalogue.hashes.get(model.key) if model is not None else None
    return json_response(values)


@operation("Set A1111 options; a model or VAE that is not registered is 422", tags=TAGS, body=dict[str, Any])
async def set_options(request: Request, *, body: dict[str, Any]) -> Response:
    catalogue = await catalogue_of(request)
    changes = dict(body)
    try:
        if changes.get("sd_model_checkpoint"):
            model = translate.find_model(
                catalogue.mains,
                str(changes["sd_model_checkpoint"]),
                "sd_model_checkpoint",
                "checkpoint",
                catalogue.hashes,
            )
            changes["sd_model_checkpoint"] = translate.model_title(model)
        if changes.get("sd_vae") and changes["sd_vae"] not in ("Automatic", "None"):
            translate.find_model(catalogue.vaes, str(changes["sd_vae"]), "sd_vae", "VAE", catalogue.hashes)
        changes.pop("sd_checkpoint_hash", None)  # follows the checkpoint
        if "CLIP_stop_at_last_layers" in changes:
            translate.clip_skip(changes["CLIP_stop_at_last_layers"])
    except translate.RequestProblem as exc:
        raise problem(exc.field, str(exc)) from None
    await state_of(request).options.update(changes)
    return json_response(None)


@operation(
    "Registered main models as A1111 lists checkpoints; `hash`/`sha256` are null until hashed (in the background)",
    tags=TAGS,
    responses={200: list[s.SdModel]},
)
async def sd_models(request: Request) -> Response:
    catalogue = await catalogue_of(request)
    return json_response(
        [
            s.SdModel(
                title=translate.model_title(c),
                model_name=c.model_name,
                hash=catalogue.short_hash(c),
                sha256=catalogue.hashes.get(c.key),
                filename=c.path,
                config=c.config,
            )
            for c in catalogue.mains
        ]
    )


@operation("Registered VAEs", tags=TAGS, responses={200: list[s.SdVae]})
async def sd_vae(request: Request) -> Response:
    vaes = (await catalogue_of(request)).vaes
    return json_response([s.SdVae(model_name=c.model_name, filename=c.path) for c in vaes])


@operation("Samplers, by A1111's names", tags=TAGS, responses={200: list[s.Sampler]})
async def samplers(request: Request) -> Response:
    return json_response(
        [
            s.Sampler(name=name, aliases=translate.SAMPLER_ALIASES.get(name, []), options={"imagegraph": ours})
            for name, ours in translate.SAMPLERS.items()
        ]
    )


@operation("Schedule types, by A1111's names", tags=TAGS, responses={200: list[s.SchedulerItem]})
async def schedulers(request: Request) -> Response:
    return json_response(
        [
            s.SchedulerItem(
                name=name.lower().replace(" ", "_"), label=name, aliases=None, default_rho=-1, need_inner_model=False
            )
            for name in translate.SCHEDULERS
        ]
    )


@operation(
    "Upscalers: Lanczos, Nearest, None and the registered `upscale` models",
    tags=TAGS,
    responses={200: list[s.Upscaler]},
)
async def upscalers(request: Request) -> Response:
    models = (await catalogue_of(request)).upscalers
    builtin = [
        s.Upscaler(name=n, model_name=None, model_path=None, model_url=None, scale=4) for n in translate.PIXEL_UPSCALERS
    ]
    return json_response(
        builtin
        + [
            s.Upscaler(name=c.model_name, model_name=c.model_name, model_path=c.path, model_url=None, scale=4)
            for c in models
        ]
    )


@operation("Latent upscale modes for the hires pass", tags=TAGS, responses={200: list[s.LatentUpscaleMode]})
async def latent_upscale_modes(request: Request) -> Response:
    return json_response([s.LatentUpscaleMode(name=name) for name in translate.LATENT_UPSCALERS])


@operation("Registered LoRAs, for `<lora:name:weight>`", tags=TAGS, responses={200: list[s.Lora]})
async def loras(request: Request) -> Response:
    found = (await catalogue_of(request)).loras
    return json_response([s.Lora(name=c.model_name, alias=c.model_name, path=c.path, metadata={}) for c in found])


@operation("Registered textual-inversion embeddings, by name", tags=TAGS, responses={200: s.Embeddings})
async def embeddings_list(request: Request) -> Response:
    found = (await catalogue_of(request)).embeddings
    loaded = {
        c.model_name: s.EmbeddingItem(step=None, sd_checkpoint=None, sd_checkpoint_name=None, shape=0, vectors=0)
        for c in found
    }
    return json_response(s.Embeddings(loaded=loaded, skipped={}))


def empty_list(summary: str):
    @operation(summary, tags=TAGS, responses={200: list[s.NamedItem]})
    async def endpoint(request: Request) -> Response:
        return json_response([])

    return endpoint


@operation("Scripts (none: A1111's scripts are its own)", tags=TAGS, responses={200: s.ScriptsList})
async def scripts(request: Request) -> Response:
    return json_response(s.ScriptsList(txt2img=[], img2img=[]))


@operation("The server's flags, A1111-style", tags=TAGS)
async def cmd_flags(request: Request) -> Response:
    settings = services(request).settings
    return json_response({"api": True, "listen": settings.host != "127.0.0.1", "port": settings.port, "nowebui": False})


@operation("Memory use", tags=TAGS, responses={200: s.Memory})
async def memory(request: Request) -> Response:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return json_response(s.Memory(ram={"used": peak}, cuda={}))


@operation("Look for new model files (our sync)", tags=TAGS)
async def refresh_checkpoints(request: Request) -> Response:
    await (await services(request).models.ready()).sync()
    return json_response(None)

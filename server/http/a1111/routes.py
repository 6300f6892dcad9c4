"""`/sdapi/v1/*`: AUTOMATIC1111's API over our queue, gallery and models (docs/api.md §AUTOMATIC1111-compatible
API). Requests become the standard graphs (server/graph/standard) through translate.py; images come back as
base64 PNGs, the same files the gallery holds, with the A1111 infotext in their `parameters` chunk."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
from typing import Any

import msgspec
from PIL import Image, ImageFilter, ImageOps
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import __version__
from server.graph.schedulers import SCHEDULER_NAMES
from server.http.a1111 import schema as s
from server.http.a1111 import translate
from server.http.a1111.jobs import JobFailed, Jobs
from server.http.a1111.options import OptionsStore
from server.http.errors import ApiError, ErrorItem
from server.http.io import json_response, operation
from server.http.state import services
from server.images.foreign import parse_a1111
from server.images.upload import UploadRejected, decode_upload
from server.models.schema import ModelConfig
from server.services import Services

TAGS = ("a1111",)
_PNG_LEVEL = 1  # what goes back over the wire once; the gallery keeps its own file


class A1111State:
    def __init__(self, svc: Services) -> None:
        self.jobs = Jobs(svc)
        self.options = OptionsStore(svc.settings.configs_dir / "a1111_options.json")


def _state(request: Request) -> A1111State:
    state = getattr(request.app.state, "a1111", None)
    svc = services(request)
    if state is None or state.jobs.services is not svc:
        state = request.app.state.a1111 = A1111State(svc)
    return state


def _problem(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, message, [ErrorItem(loc=["body", *field.split(".")], msg=message)])


async def _catalogue(request: Request) -> translate.Catalogue:
    models = await services(request).models.ready()
    usable = [c for c in models.list_models() if c.error is None]

    def of(kind: str) -> list[ModelConfig]:
        return sorted((c for c in usable if c.model_type == kind), key=lambda c: c.model_name)

    return translate.Catalogue(
        mains=of("main"), vaes=of("vae"), loras=of("lora"), embeddings=of("embedding"), upscalers=of("upscale")
    )


def _image_bytes(text: str, field: str) -> bytes:
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _problem(field, f"`{field}` is not base64 image data") from None


def _decoded(text: str, field: str) -> Image.Image:
    try:
        return decode_upload(_image_bytes(text, field)).image
    except UploadRejected as exc:
        status = 413 if "large" in exc.detail or "pixels" in exc.detail else 415
        raise _problem(field, f"`{field}`: {exc.detail}", status) from None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


async def _upload(svc: Services, image: Image.Image) -> str:
    data = await asyncio.to_thread(_png, image)
    return (await svc.images.upload(data, category="user", is_intermediate=True, board_id=None)).image_name


async def _base64_of(svc: Services, image_name: str) -> str:
    cached = await svc.images.get_file(image_name, thumbnail=False)
    return base64.b64encode(cached.body).decode()


def _fit(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A1111's img2img resize modes done in pixels before the graph resizes: 1 crop to the aspect, 2 fit inside
    and fill the rest from the edges; 0 and 3 leave it to the graph (a plain resize)."""
    image = image.convert("RGB")
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == 2:
        fitted = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        canvas = fitted.resize((width, height), Image.Resampling.LANCZOS)
        canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
        return canvas
    return image


def _mask(image: Image.Image, body: s.Img2ImgRequest) -> Image.Image:
    mask = image.convert("L") if image.mode != "RGBA" else image.getchannel("A")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


def _plan(body: Any, catalogue: translate.Catalogue, options: dict[str, Any], **images: str | None) -> translate.Plan:
    try:
        plan = translate.plan(body, catalogue, options, **images)
    except translate.RequestProblem as exc:
        raise _problem(exc.field, str(exc)) from None
    for index, item in enumerate(plan.settings):
        text = translate.infotext(plan, item, body, body.prompt, body.negative_prompt)
        plan.settings[index] = msgspec.structs.replace(item, infotext=text)
    return plan


async def _generate(request: Request, body: Any, plan: translate.Plan) -> Response:
    state, svc = _state(request), services(request)
    try:
        result = await state.jobs.generate(plan.settings)
    except JobFailed as exc:
        raise ApiError(422, f"the generation failed: {exc}") from None
    made = [name for name in result.image_names if name is not None]
    images = [await _base64_of(svc, name) for name in made] if body.send_images else []
    parameters = msgspec.to_builtins(body)
    for key in ("init_images", "mask"):
        if key in parameters and not getattr(body, "include_init_images", False):
            parameters[key] = None
    first = plan.settings[0]
    infotexts = [item.infotext for item, name in zip(plan.settings, result.image_names, strict=True) if name]
    info = {
        "prompt": body.prompt,
        "all_prompts": [body.prompt] * len(plan.settings),
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [body.negative_prompt] * len(plan.settings),
        "seed": plan.seeds[0],
        "all_seeds": plan.seeds,
        "subseed": plan.subseeds[0],
        "all_subseeds": plan.subseeds,
        "subseed_strength": body.subseed_strength,
        "width": first.width,
        "height": first.height,
        "sampler_name": plan.sampler_name,
        "scheduler": plan.scheduler_label,
        "cfg_scale": body.cfg_scale,
        "steps": body.steps,
        "batch_size": body.batch_size,
        "n_iter": body.n_iter,
        "restore_faces": bool(body.restore_faces),
        "face_restoration_model": None,
        "sd_model_name": plan.model.model_name,
        "sd_model_hash": None,
        "sd_vae_name": plan.vae.model_name if plan.vae else None,
        "sd_vae_hash": None,
        "seed_resize_from_w": body.seed_resize_from_w,
        "seed_resize_from_h": body.seed_resize_from_h,
        "denoising_strength": body.denoising_strength,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": body.styles,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": plan.clip_skip + 1,
        "is_using_inpainting_conditioning": plan.model.variant == "inpaint",
        "version": f"imagegraph {__version__}",
        # Ours, beyond A1111: what was not done as asked, and the sessions (and gallery images) that ran.
        "warnings": plan.warnings,
        "session_ids": result.session_ids,
        "image_names": made,
    }
    return json_response(
        s.GenerationResponse(images=images, parameters=parameters, info=msgspec.json.encode(info).decode())
    )


@operation(
    "Text to image, as A1111's API: every image a session of the queue, stored in the gallery",
    tags=TAGS,
    body=s.Txt2ImgRequest,
    responses={200: s.GenerationResponse, 422: None},
)
async def txt2img(request: Request, *, body: s.Txt2ImgRequest) -> Response:
    state = _state(request)
    plan = _plan(body, await _catalogue(request), await state.options.get())
    return await _generate(request, body, plan)


@operation(
    "Image to image and inpainting, as A1111's API (`init_images`, `mask`); outside the mask the init image stays",
    tags=TAGS,
    body=s.Img2ImgRequest,
    responses={200: s.GenerationResponse, 413: None, 415: None, 422: None},
)
async def img2img(request: Request, *, body: s.Img2ImgRequest) -> Response:
    state, svc = _state(request), services(request)
    if not body.init_images:
        raise _problem("init_images", "`init_images` needs one image (base64)")
    catalogue = await _catalogue(request)
    options = await state.options.get()
    _plan(body, catalogue, options, init_image="-")  # names and values checked before anything is uploaded
    init = _fit(_decoded(body.init_images[0], "init_images"), body.width, body.height, body.resize_mode)
    mask_name = None
    if body.mask:
        mask = _mask(_decoded(body.mask, "mask"), body)
        if mask.size != init.size:
            mask = mask.resize(init.size, Image.Resampling.LANCZOS)
        mask_name = await _upload(svc, mask)
    plan = _plan(body, catalogue, options, init_image=await _upload(svc, init), mask_image=mask_name)
    return await _generate(request, body, plan)


@operation("A1111's options (model, VAE, clip skip and the rest), kept across restarts", tags=TAGS)
async def get_options(request: Request) -> Response:
    values = await _state(request).options.get()
    if not values.get("sd_model_checkpoint"):
        catalogue = await _catalogue(request)
        usable = [c for c in catalogue.mains if c.base_model in ("sd-1", "sd-2", "sdxl")]
        values["sd_model_checkpoint"] = translate.model_title(usable[0]) if usable else None
    return json_response(values)


@operation("Set A1111 options; a model or VAE that is not registered is 422", tags=TAGS, body=dict[str, Any])
async def set_options(request: Request, *, body: dict[str, Any]) -> Response:
    catalogue = await _catalogue(request)
    changes = dict(body)
    try:
        if changes.get("sd_model_checkpoint"):
            model = translate.find_model(
                catalogue.mains, str(changes["sd_model_checkpoint"]), "sd_model_checkpoint", "checkpoint"
            )
            changes["sd_model_checkpoint"] = translate.model_title(model)
        if changes.get("sd_vae") and changes["sd_vae"] not in ("Automatic", "None"):
            translate.find_model(catalogue.vaes, str(changes["sd_vae"]), "sd_vae", "VAE")
        if "CLIP_stop_at_last_layers" in changes:
            translate.clip_skip(changes["CLIP_stop_at_last_layers"])
    except translate.RequestProblem as exc:
        raise _problem(exc.field, str(exc)) from None
    await _state(request).options.update(changes)
    return json_response(None)


@operation("Registered main models as A1111 lists checkpoints", tags=TAGS, responses={200: list[s.SdModel]})
async def sd_models(request: Request) -> Response:
    models = (await _catalogue(request)).mains
    return json_response(
        [
            s.SdModel(
                title=translate.model_title(c),
                model_name=c.model_name,
                hash=None,
                sha256=None,
                filename=c.path,
                config=c.config,
            )
            for c in models
        ]
    )


@operation("Registered VAEs", tags=TAGS, responses={200: list[s.SdVae]})
async def sd_vae(request: Request) -> Response:
    vaes = (await _catalogue(request)).vaes
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
    models = (await _catalogue(request)).upscalers
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
    found = (await _catalogue(request)).loras
    return json_response([s.Lora(name=c.model_name, alias=c.model_name, path=c.path, metadata={}) for c in found])


@operation("Registered textual-inversion embeddings, by name", tags=TAGS, responses={200: s.Embeddings})
async def embeddings_list(request: Request) -> Response:
    found = (await _catalogue(request)).embeddings
    loaded = {
        c.model_name: s.EmbeddingItem(step=None, sd_checkpoint=None, sd_checkpoint_name=None, shape=0, vectors=0)
        for c in found
    }
    return json_response(s.Embeddings(loaded=loaded, skipped={}))


def _empty_list(summary: str):
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


@operation(
    "Progress of the A1111 job running now, with a preview",
    tags=TAGS,
    query=s.ProgressQuery,
    responses={200: s.ProgressResponse},
)
async def progress(request: Request, *, query: s.ProgressQuery) -> Response:
    jobs = _state(request).jobs
    job = jobs.current
    if job is None:
        state = s.ProgressState(False, False, "", 0, "0", 0, 0, 0)
        return json_response(
            s.ProgressResponse(progress=0, eta_relative=0, state=state, current_image=None, textinfo=None)
        )
    total = len(job.session_ids)
    done = job.done + (job.step / job.steps if job.steps else 0)
    fraction = min(done / total, 1.0)
    elapsed = time.monotonic() - job.started
    eta = elapsed / fraction - elapsed if fraction > 0 else 0
    state = s.ProgressState(
        skipped=job.skipped,
        interrupted=job.interrupted,
        job=f"job {job.done + 1} of {total}",
        job_count=len(jobs.jobs),
        job_timestamp=job.timestamp,
        job_no=job.done,
        sampling_step=job.step,
        sampling_steps=job.steps,
    )
    preview = None
    if job.preview and not query.skip_current_image:
        preview = job.preview.split(",", 1)[-1]
    return json_response(
        s.ProgressResponse(progress=fraction, eta_relative=eta, state=state, current_image=preview, textinfo=None)
    )


@operation("Stop the A1111 job running now (its images so far are returned to its caller)", tags=TAGS)
async def interrupt(request: Request) -> Response:
    await _state(request).jobs.interrupt()
    return json_response(None)


@operation("Skip the image being made now; the job goes on", tags=TAGS)
async def skip(request: Request) -> Response:
    await _state(request).jobs.skip()
    return json_response(None)


@operation("Look for new model files (our sync)", tags=TAGS)
async def refresh_checkpoints(request: Request) -> Response:
    await (await services(request).models.ready()).sync()
    return json_response(None)


@operation(
    "The generation parameters in an image, as A1111 infotext",
    tags=TAGS,
    body=s.PngInfoRequest,
    responses={200: s.PngInfoResponse, 413: None, 415: None, 422: None},
)
async def png_info(request: Request, *, body: s.PngInfoRequest) -> Response:
    if not body.image:
        raise _problem("image", "`image` is required (base64)")
    try:
        decoded = await asyncio.to_thread(decode_upload, _image_bytes(body.image, "image"))
    except UploadRejected as exc:
        raise _problem("image", f"`image`: {exc.detail}", 415) from None
    chunks = decoded.metadata.chunks
    text = chunks.get("parameters") or _infotext_of(decoded.metadata.metadata)
    items = {key: value for key, value in chunks.items() if key != "parameters"}
    return json_response(s.PngInfoResponse(info=text, items=items, parameters=_parameters_of(text)))


def _infotext_of(metadata: str | None) -> str:
    """A1111 infotext from our (InvokeAI's) or ComfyUI's metadata, as parsed on upload."""
    if not metadata:
        return ""
    try:
        fields = msgspec.json.decode(metadata)
    except msgspec.DecodeError:
        return ""
    if not isinstance(fields, dict):
        return ""
    if isinstance(fields.get("parameters"), str):
        return fields["parameters"]
    names = {ours: theirs for theirs, ours in translate.SAMPLERS.items()}
    scheduler = str(fields.get("scheduler") or "")
    pairs = [
        ("Steps", fields.get("steps")),
        ("Sampler", names.get(scheduler, scheduler or None) if scheduler != "dpmpp_2m_k" else "DPM++ 2M"),
        ("Schedule type", "Karras" if scheduler == "dpmpp_2m_k" else None),
        ("CFG scale", fields.get("cfg_scale")),
        ("Seed", fields.get("seed")),
        ("Size", f"{fields['width']}x{fields['height']}" if fields.get("width") and fields.get("height") else None),
        (
            "Model",
            (fields.get("model") or {}).get("model_name")
            if isinstance(fields.get("model"), dict)
            else fields.get("model"),
        ),
        ("Denoising strength", fields.get("strength")),
    ]
    lines = [str(fields.get("positive_prompt") or "")]
    if fields.get("negative_prompt"):
        lines.append(f"Negative prompt: {fields['negative_prompt']}")
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs if value is not None))
    return "\n".join(lines)


def _parameters_of(text: str) -> dict[str, Any]:
    if not text:
        return {}
    parsed = parse_a1111(text)
    result: dict[str, Any] = {
        "Prompt": parsed.get("positive_prompt", ""),
        "Negative prompt": parsed.get("negative_prompt", ""),
    }
    for pair in text.strip().split("\n")[-1].split(", "):
        key, sep, value = pair.partition(": ")
        if sep:
            result[key.strip()] = value.strip()
    return result


async def _upscaled(request: Request, body: s.ExtrasImageRequest, image: Image.Image) -> Image.Image:
    """One image through `upscaler_1` to the requested size: Lanczos/Nearest in pixels, a registered model
    through the queue (`esrgan`, then a Lanczos resize to the size asked)."""
    image = image.convert("RGB")
    if body.resize_mode == 1:
        width, height = body.upscaling_resize_w, body.upscaling_resize_h
    else:
        width, height = round(image.width * body.upscaling_resize), round(image.height * body.upscaling_resize)
    if width < 1 or height < 1:
        raise _problem("upscaling_resize", "the upscaled size must be at least 1×1")
    name = body.upscaler_1
    if name == "None":
        return image
    if name in ("Lanczos", "Nearest"):
        resample = Image.Resampling.LANCZOS if name == "Lanczos" else Image.Resampling.NEAREST
        if body.resize_mode == 1 and body.upscaling_crop:
            return await asyncio.to_thread(ImageOps.fit, image, (width, height), resample)
        return await asyncio.to_thread(image.resize, (width, height), resample)
    catalogue = await _catalogue(request)
    try:
        model = translate.find_model(catalogue.upscalers, name, "upscaler_1", "upscaler")
    except translate.RequestProblem as exc:
        raise _problem(exc.field, str(exc)) from None
    svc = services(request)
    source = await _upload(svc, image)
    graph = {
        "nodes": {
            "source": {"id": "source", "type": "image", "image": {"image_name": source}},
            "upscale": {
                "id": "upscale",
                "type": "esrgan",
                "model": msgspec.to_builtins(model.identifier),
                "is_intermediate": True,
            },
            "resize": {
                "id": "resize",
                "type": "img_resize",
                "width": width,
                "height": height,
                "resample_mode": "lanczos",
            },
        },
        "edges": [
            {
                "source": {"node_id": "source", "field": "image"},
                "destination": {"node_id": "upscale", "field": "image"},
            },
            {
                "source": {"node_id": "upscale", "field": "image"},
                "destination": {"node_id": "resize", "field": "image"},
            },
        ],
    }
    try:
        result = await _state(request).jobs.run([graph], ("resize",))
    except JobFailed as exc:
        raise ApiError(422, f"the upscale failed: {exc}") from None
    if result.image_names[0] is None:
        raise ApiError(409, "the upscale was interrupted")
    return await svc.images.open_image(result.image_names[0])


@operation(
    "Upscale one image (Lanczos, Nearest or a registered upscale model)",
    tags=TAGS,
    body=s.ExtrasImageRequest,
    responses={200: s.ExtrasImageResponse, 413: None, 415: None, 422: None},
)
async def extra_single_image(request: Request, *, body: s.ExtrasImageRequest) -> Response:
    if not body.image:
        raise _problem("image", "`image` is required (base64)")
    result = await _upscaled(request, body, _decoded(body.image, "image"))
    encoded = base64.b64encode(await asyncio.to_thread(_png, result)).decode()
    return json_response(
        s.ExtrasImageResponse(image=encoded, html_info=f"{body.upscaler_1}: {result.width}×{result.height}")
    )


@operation(
    "Upscale several images",
    tags=TAGS,
    body=s.ExtrasBatchRequest,
    responses={200: s.ExtrasBatchResponse, 413: None, 415: None, 422: None},
)
async def extra_batch_images(request: Request, *, body: s.ExtrasBatchRequest) -> Response:
    if not body.imageList:
        raise _problem("imageList", "`imageList` needs at least one image")
    images = [_decoded(item.data, f"imageList.{index}.data") for index, item in enumerate(body.imageList)]
    out = []
    for image in images:
        result = await _upscaled(request, body, image)
        out.append(base64.b64encode(await asyncio.to_thread(_png, result)).decode())
    return json_response(
        s.ExtrasBatchResponse(images=out, html_info=f"{len(out)} image(s) upscaled with {body.upscaler_1}")
    )


# Paths below /sdapi/v1.
routes = [
    Route("/txt2img", txt2img, methods=["POST"]),
    Route("/img2img", img2img, methods=["POST"]),
    Route("/options", get_options, methods=["GET"]),
    Route("/options", set_options, methods=["POST"]),
    Route("/sd-models", sd_models, methods=["GET"]),
    Route("/sd-vae", sd_vae, methods=["GET"]),
    Route("/samplers", samplers, methods=["GET"]),
    Route("/schedulers", schedulers, methods=["GET"]),
    Route("/upscalers", upscalers, methods=["GET"]),
    Route("/latent-upscale-modes", latent_upscale_modes, methods=["GET"]),
    Route("/loras", loras, methods=["GET"]),
    Route("/embeddings", embeddings_list, methods=["GET"]),
    Route("/hypernetworks", _empty_list("Hypernetworks (none)"), methods=["GET"]),
    Route("/face-restorers", _empty_list("Face restorers (none installed)"), methods=["GET"]),
    Route("/realesrgan-models", _empty_list("Real-ESRGAN models by A1111's list (see /upscalers)"), methods=["GET"]),
    Route("/prompt-styles", _empty_list("Prompt styles (none)"), methods=["GET"]),
    Route("/scripts", scripts, methods=["GET"]),
    Route("/cmd-flags", cmd_flags, methods=["GET"]),
    Route("/memory", memory, methods=["GET"]),
    Route("/progress", progress, methods=["GET"]),
    Route("/interrupt", interrupt, methods=["POST"]),
    Route("/skip", skip, methods=["POST"]),
    Route("/refresh-checkpoints", refresh_checkpoints, methods=["POST"]),
    Route("/png-info", png_info, methods=["POST"]),
    Route("/extra-single-image", extra_single_image, methods=["POST"]),
    Route("/extra-batch-images", extra_batch_images, methods=["POST"]),
]

assert {ours for ours in translate.SAMPLERS.values()} <= set(SCHEDULER_NAMES)

"""txt2img and img2img through the queue, and the progress, interrupt and skip of the job running now."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from server import __version__
from server.http.a1111 import schema as s
from server.http.a1111 import translate
from server.http.a1111.images import base64_of, decode_image, fit, inpaint_mask, masked_region, upload_image
from server.http.a1111.jobs import JobFailed
from server.http.a1111.state import TAGS, catalogue_of, problem, state_of
from server.http.errors import ApiError
from server.http.io import json_response, operation
from server.http.state import services


def _plan(body: Any, catalogue: translate.Catalogue, options: dict[str, Any], **images: Any) -> translate.Plan:
    try:
        plan = translate.plan(body, catalogue, options, **images)
    except translate.RequestProblem as exc:
        raise problem(exc.field, str(exc)) from None
    for index, item in enumerate(plan.settings):
        text = translate.infotext(plan, item, body, body.prompt, body.negative_prompt)
        plan.settings[index] = msgspec.structs.replace(item, infotext=text)
    return plan


async def _generate(request: Request, body: Any, plan: translate.Plan) -> Response:
    state, svc = state_of(request), services(request)
    try:
        result = await state.jobs.generate(plan.settings)
    except JobFailed as exc:
        raise ApiError(422, f"the generation failed: {exc}") from None
    made = [name for name in result.image_names if name is not None]
    images = [await base64_of(svc, name) for name in made] if body.send_images else []
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
        "sd_model_hash": plan.model_hash,
        "sd_vae_name": plan.vae.model_name if plan.vae else None,
        "sd_vae_hash": plan.vae_hash,
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
    state = state_of(request)
    plan = _plan(body, await catalogue_of(request), await state.options.get())
    return await _generate(request, body, plan)


@operation(
    "Image to image and inpainting, as A1111's API (`init_images`, `mask`); outside the mask the init image stays",
    tags=TAGS,
    body=s.Img2ImgRequest,
    responses={200: s.GenerationResponse, 413: None, 415: None, 422: None},
)
async def img2img(request: Request, *, body: s.Img2ImgRequest) -> Response:
    state, svc = state_of(request), services(request)
    if not body.init_images:
        raise problem("init_images", "`init_images` needs one image (base64)")
    catalogue = await catalogue_of(request)
    options = await state.options.get()
    _plan(body, catalogue, options, init_image="-")  # names and values checked before anything is uploaded
    if body.inpaint_full_res_padding < 0:
        raise problem("inpaint_full_res_padding", "inpaint_full_res_padding must be 0 or more")
    init = decode_image(body.init_images[0], "init_images").convert("RGB")
    only_masked = bool(body.mask and body.inpaint_full_res)
    if not only_masked:
        init = fit(init, body.width, body.height, body.resize_mode)
    mask_name, region = None, None
    if body.mask:
        mask = inpaint_mask(decode_image(body.mask, "mask"), body)
        if mask.size != init.size:
            from PIL import Image

            mask = mask.resize(init.size, Image.Resampling.LANCZOS)
        if only_masked:
            # A1111's "only masked": the box around the mask, at the request's size, pasted back at its own.
            region = masked_region(mask, body.inpaint_full_res_padding, body.width, body.height)
            if region is None:
                init = fit(init, body.width, body.height, body.resize_mode)  # nothing painted: as a whole
                mask = mask.resize(init.size)
        mask_name = await upload_image(svc, mask)
    plan = _plan(
        body, catalogue, options, init_image=await upload_image(svc, init), mask_image=mask_name, region=region
    )
    return await _generate(request, body, plan)


@operation(
    "Progress of the A1111 job running now, with a preview",
    tags=TAGS,
    query=s.ProgressQuery,
    responses={200: s.ProgressResponse},
)
async def progress(request: Request, *, query: s.ProgressQuery) -> Response:
    jobs = state_of(request).jobs
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
    await state_of(request).jobs.interrupt()
    # A1111 answers `{}` here (and null for /skip); clients such as webuiapi hand the body back as the result.
    return json_response({})


@operation("Skip the image being made now; the job goes on", tags=TAGS)
async def skip(request: Request) -> Response:
    await state_of(request).jobs.skip()
    return json_response(None)

"""An A1111 request as our GenerationSettings (one per image: A1111's `n_iter` × `batch_size` with consecutive
seeds), and A1111's names for our samplers, models and upscalers. Names that we do not know are refused with the
list of those we do; features we do not have (face restoration, scripts) are warnings, as A1111 itself ignores a
missing extension."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from server import __version__
from server.graph.standard import GenerationSettings
from server.graph.standard.a1111_prompt import PromptSyntaxError, extract_loras, mark_embeddings
from server.http.a1111.hashes import SHORT, short
from server.models import embeddings
from server.models.schema import ModelConfig

# A1111 sampler name (and its old aliases) → ours.
SAMPLERS: dict[str, str] = {
    "Euler a": "euler_a",
    "Euler": "euler",
    "LMS": "lms",
    "Heun": "heun",
    "DPM++ 2M": "dpmpp_2m",
    "DDIM": "ddim",
    "DDPM": "ddpm",
    "PLMS": "pndm",
    "UniPC": "unipc",
}
SAMPLER_ALIASES: dict[str, list[str]] = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "Heun": ["k_heun"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DDIM": ["ddim"],
    "DDPM": ["ddpm"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
}
# A1111's schedule types; "Karras" changes DPM++ 2M (our dpmpp_2m_k), the others use the sampler's own.
SCHEDULERS = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "Simple", "Normal")
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
_HEX = re.compile(r"[0-9a-f]{10}|[0-9a-f]{64}")


class RequestProblem(ValueError):
    """A request that makes no generation; `field` names the part at fault (A1111's field name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Plan:
    """The generations one request asks for, and what its `info` reports."""

    settings: list[GenerationSettings]
    seeds: list[int]
    subseeds: list[int]
    sampler_name: str
    scheduler_label: str
    model: ModelConfig
    vae: ModelConfig | None
    clip_skip: int
    warnings: list[str] = field(default_factory=list)
    # A1111's short hashes, where known (see hashes.py).
    model_hash: str | None = None
    vae_hash: str | None = None


def sampler_for(name: str | None, scheduler: str | None) -> tuple[str, str, str]:
    """(our scheduler, A1111 sampler name, A1111 schedule type) for a request's names."""
    label = name or "Euler"
    schedule = scheduler or "Automatic"
    if label.endswith(" Karras") and label[: -len(" Karras")] in SAMPLERS:
        label, schedule = label[: -len(" Karras")], "Karras"  # A1111 before 1.9 named them so
    for known, aliases in SAMPLER_ALIASES.items():
        if label.lower() == known.lower() or label.lower() in aliases:
            label = known
            break
    if label not in SAMPLERS:
        raise RequestProblem("sampler_name", f"unknown sampler {label!r}; known: {', '.join(SAMPLERS)}")
    matched = next((s for s in SCHEDULERS if s.lower() == schedule.lower()), None)
    if matched is None:
        raise RequestProblem("scheduler", f"unknown scheduler {schedule!r}; known: {', '.join(SCHEDULERS)}")
    ours = SAMPLERS[label]
    if matched == "Karras" and ours == "dpmpp_2m":
        ours = "dpmpp_2m_k"
    return ours, label, matched


def model_title(config: ModelConfig) -> str:
    return f"{config.model_name} [{config.base_model}]"


def find_model(
    configs: Sequence[ModelConfig],
    wanted: str,
    field_name: str,
    kind: str,
    hashes: Mapping[str, str] | None = None,
) -> ModelConfig:
    """A model by our title, A1111's (`name.safetensors [short hash]`), file name, name, or its hash (short or
    sha256, alone or in the brackets) where `hashes` (key → sha256) knows it."""
    text = wanted.strip()
    stem, bracket = text, ""
    if text.endswith("]") and " [" in text:
        stem, bracket = text[:-1].rsplit(" [", 1)
    stem = stem.rsplit("/", 1)[-1]
    for suffix in (".safetensors", ".ckpt", ".pt", ".bin", ".pth"):
        stem = stem.removesuffix(suffix)
    for config in configs:
        if text in (model_title(config), config.model_name):
            return config
    for candidate in (bracket, text):
        if _HEX.fullmatch(candidate.lower()) and hashes:
            for config in configs:
                sha = hashes.get(config.key)
                if sha is not None and candidate.lower() in (sha, sha[:SHORT]):
                    return config
    for config in configs:
        if stem == config.model_name:
            return config
    names = ", ".join(model_title(c) for c in configs) or "none are registered"
    raise RequestProblem(field_name, f"unknown {kind} {wanted!r}; known: {names}")


@dataclass
class Catalogue:
    """What the translation needs to know of the registered models."""

    mains: list[ModelConfig]
    vaes: list[ModelConfig]
    loras: list[ModelConfig]
    embeddings: list[ModelConfig]
    upscalers: list[ModelConfig]
    # Model key → sha256, for the main models and VAEs whose hash is known yet.
    hashes: dict[str, str] = field(default_factory=dict)

    def short_hash(self, config: ModelConfig | None) -> str | None:
        return short(self.hashes.get(config.key)) if config is not None else None


def plan(
    request: Any,
    catalogue: Catalogue,
    options: dict[str, Any],
    *,
    init_image: str | None = None,
    mask_image: str | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> Plan:
    """The settings for every image of a txt2img or img2img request. `init_image` / `mask_image`: the request's
    images, already in the gallery (the routes upload and prepare them)."""
    overrides = {**options, **request.override_settings}
    warnings: list[str] = []
    model = main_model(catalogue, overrides)
    scheduler, sampler_name, schedule = sampler_for(request.sampler_name or request.sampler_index, request.scheduler)
    skip = clip_skip(overrides.get("CLIP_stop_at_last_layers", 1))
    vae = _vae(catalogue, overrides)
    if request.restore_faces:
        warnings.append("restore_faces: no face restoration model is installed; the images are as generated")
    if request.script_name:
        warnings.append(f"script {request.script_name!r} is not available here; it was ignored")
    for name in request.alwayson_scripts:
        warnings.append(f"always-on script {name!r} is not available here; it was ignored")
    if request.styles:
        warnings.append(f"no prompt styles are defined; ignored: {', '.join(request.styles)}")

    prompt, loras = _prompt_with_loras(request.prompt, "prompt", catalogue, model, warnings)
    negative, negative_loras = _prompt_with_loras(
        request.negative_prompt, "negative_prompt", catalogue, model, warnings
    )
    loras += negative_loras
    names = {c.model_name for c in catalogue.embeddings if c.base_model in embeddings.usable_bases(model.base_model)}
    prompt, negative = mark_embeddings(prompt, names), mark_embeddings(negative, names)

    count = request.n_iter * request.batch_size
    seed = request.seed if request.seed != -1 else random.randrange(2**32)
    subseed = request.subseed if request.subseed != -1 else random.randrange(2**32)
    seeds = [(seed + i) % 2**32 for i in range(count)]
    subseeds = [(subseed + i) % 2**32 for i in range(count)]
    for size_field in ("width", "height"):
        if getattr(request, size_field) % 8:
            raise RequestProblem(
                size_field, f"{size_field} must be a multiple of 8, not {getattr(request, size_field)}"
            )

    values: dict[str, Any] = {
        "model": msgspec.to_builtins(model.identifier),
        "prompt": prompt,
        "negative_prompt": negative,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "cfg_scale": request.cfg_scale,
        "scheduler": scheduler,
        "loras": loras,
        "vae": msgspec.to_builtins(vae.identifier) if vae is not None else None,
        "clip_skip": skip,
        "prompt_syntax": "a1111",
        "tiling": bool(request.tiling),
    }
    if request.refiner_checkpoint and request.refiner_checkpoint.lower() not in ("none", ""):
        refiner = find_model(
            [c for c in catalogue.mains if c.base_model == "sdxl-refiner"],
            request.refiner_checkpoint,
            "refiner_checkpoint",
            "refiner",
        )
        switch = request.refiner_switch_at if request.refiner_switch_at is not None else 0.8
        values["refiner"] = {"model": msgspec.to_builtins(refiner.identifier), "switch_at": switch}
    if init_image is not None:
        values["init_image"] = init_image
        values["strength"] = request.denoising_strength if request.denoising_strength is not None else 0.75
        if mask_image is not None:
            values["mask_image"] = mask_image
            _inpaint_fill(request, values, warnings)
            if region is not None:
                values["inpaint_region"] = dict(zip(("x", "y", "width", "height"), region, strict=True))
    elif getattr(request, "enable_hr", False):
        values["hires"] = _hires(request, catalogue, warnings)

    settings = []
    for seed_value, subseed_value in zip(seeds, subseeds, strict=True):
        variation = {}
        if request.subseed_strength > 0:
            variation = {"variation_seed": subseed_value, "variation_strength": request.subseed_strength}
        try:
            settings.append(msgspec.convert({**values, "seed": seed_value, **variation}, GenerationSettings))
        except msgspec.ValidationError as exc:
            raise RequestProblem(_a1111_field(str(exc)), str(exc)) from None
    return Plan(
        settings=settings,
        seeds=seeds,
        subseeds=subseeds,
        sampler_name=sampler_name,
        scheduler_label=schedule,
        model=model,
        vae=vae,
        clip_skip=skip,
        warnings=warnings,
        model_hash=catalogue.short_hash(model),
        vae_hash=catalogue.short_hash(vae),
    )


def _a1111_field(message: str) -> str:
    path = message.partition(" - at `$.")[2].rstrip("`")
    first = path.split(".", 1)[0].split("[", 1)[0]
    return {"hires": "hr_scale", "strength": "denoising_strength", "refiner": "refiner_switch_at"}.get(first, first)


def main_model(catalogue: Catalogue, overrides: dict[str, Any]) -> ModelConfig:
    """The checkpoint `sd_model_checkpoint` names, else the first usable one."""
    usable = [c for c in catalogue.mains if c.base_model in ("sd-1", "sd-2", "sdxl") and c.error is None]
    wanted = overrides.get("sd_model_checkpoint")
    if wanted:
        return find_model(usable, str(wanted), "override_settings.sd_model_checkpoint", "checkpoint", catalogue.hashes)
    if not usable:
        raise RequestProblem("override_settings.sd_model_checkpoint", "no main model is registered; add one first")
    return usable[0]


def _vae(catalogue: Catalogue, overrides: dict[str, Any]) -> ModelConfig | None:
    wanted = overrides.get("sd_vae")
    if not wanted or str(wanted) in ("Automatic", "None"):
        return None
    return find_model(catalogue.vaes, str(wanted), "override_settings.sd_vae", "VAE", catalogue.hashes)


def clip_skip(value: Any) -> int:
    """Our clip skip (layers skipped) for A1111's CLIP_stop_at_last_layers (the layer used, counted from the end)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 12:
        raise RequestProblem(
            "override_settings.CLIP_stop_at_last_layers", f"CLIP_stop_at_last_layers must be 1 to 12, not {value!r}"
        )
    return value - 1


def _prompt_with_loras(
    text: str, field_name: str, catalogue: Catalogue, model: ModelConfig, warnings: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    try:
        stripped, tags = extract_loras(text)
    except PromptSyntaxError as exc:
        raise RequestProblem(field_name, str(exc)) from None
    usable = {c.model_name: c for c in catalogue.loras if c.base_model == model.base_model}
    loras = []
    for tag in tags:
        config = usable.get(tag.name)
        if config is None:
            warnings.append(f"LoRA {tag.name!r} is not registered for {model.base_model} models; it was ignored")
        elif tag.weight != 0:
            loras.append({"lora": msgspec.to_builtins(config.identifier), "weight": tag.weight})
    return stripped, loras


def _hires(request: Any, catalogue: Catalogue, warnings: list[str]) -> dict[str, Any]:
    scale = request.hr_scale
    if request.hr_resize_x or request.hr_resize_y:
        scale = max(request.hr_resize_x / request.width, request.hr_resize_y / request.height)
    if scale <= 1:
        raise RequestProblem("hr_scale", "the hires pass must make the image larger (hr_scale above 1)")
    strength = request.denoising_strength if request.denoising_strength else 0.7
    hires: dict[str, Any] = {"scale": min(scale, 4.0), "strength": strength}
    if request.hr_second_pass_steps:
        hires["steps"] = request.hr_second_pass_steps
    upscaler = request.hr_upscaler or "Latent"
    if upscaler in LATENT_UPSCALERS:
        hires["latent_mode"], hires["antialias"] = LATENT_UPSCALERS[upscaler]
    elif upscaler in PIXEL_UPSCALERS:
        # A1111 resizes the decoded first image; "None" is its plain resize, Lanczos.
        hires["image_resize"] = "nearest" if upscaler == "Nearest" else "lanczos"
    else:
        found = find_model(catalogue.upscalers, upscaler, "hr_upscaler", "upscaler")
        hires["upscaler"] = msgspec.to_builtins(found.identifier)
    return hires


def _inpaint_fill(request: Any, values: dict[str, Any], warnings: list[str]) -> None:
    # 1 (original) is what our inpaint graph does; 2 and 3 start the masked area from noise alone, which is
    # what a denoise at strength 1 does inside the mask.
    if request.inpainting_fill in (2, 3):
        values["strength"] = 1.0
        warnings.append("inpainting_fill latent noise/nothing: the masked area is denoised from noise (strength 1)")


def infotext(plan: Plan, settings: GenerationSettings, request: Any, prompt: str, negative: str) -> str:
    """A1111's parameters text for one image (what it writes into its PNGs and `info.infotexts`)."""
    pairs: list[tuple[str, Any]] = [
        ("Steps", settings.steps),
        ("Sampler", plan.sampler_name),
        ("Schedule type", plan.scheduler_label),
        ("CFG scale", _number(settings.cfg_scale)),
        ("Seed", settings.seed),
        ("Size", f"{settings.width}x{settings.height}"),
    ]
    if plan.model_hash:
        pairs.append(("Model hash", plan.model_hash))
    pairs.append(("Model", plan.model.model_name))
    if settings.variation_strength > 0:
        pairs += [("Variation seed", settings.variation_seed), ("Variation seed strength", settings.variation_strength)]
    if plan.vae_hash:
        pairs.append(("VAE hash", plan.vae_hash))
    if plan.vae is not None:
        pairs.append(("VAE", plan.vae.model_name))
    if settings.init_image is not None:
        pairs.append(("Denoising strength", _number(settings.strength)))
    if plan.clip_skip:
        pairs.append(("Clip skip", plan.clip_skip + 1))
    if settings.tiling:
        pairs.append(("Tiling", "True"))
    if settings.hires is not None:
        pairs += [
            ("Denoising strength", _number(settings.hires.strength)),
            ("Hires upscale", _number(settings.hires.scale)),
        ]
        pairs.append(("Hires upscaler", request.hr_upscaler or "Latent"))
        if settings.hires.steps:
            pairs.append(("Hires steps", settings.hires.steps))
    if settings.refiner is not None:
        pairs += [("Refiner", settings.refiner.model.model_name), ("Refiner switch at", settings.refiner.switch_at)]
    if settings.mask_image is not None:
        pairs.append(("Mask blur", request.mask_blur if request.mask_blur is not None else request.mask_blur_x))
    if settings.inpaint_region is not None:
        pairs += [("Inpaint area", "Only masked"), ("Masked area padding", request.inpaint_full_res_padding)]
    pairs.append(("Version", f"imagegraph {__version__}"))
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"

"""AUTOMATIC1111's `/sdapi/v1` request and response bodies, with its field names and defaults (its
`modules/api/models.py` is the reference). Unknown fields are ignored, as A1111 ignores them; a wrong type or a
value out of range is a 422 naming the field."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Steps = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Size = Annotated[int, msgspec.Meta(ge=64, le=4096)]
Count = Annotated[int, msgspec.Meta(ge=1, le=64)]
Seed = Annotated[int, msgspec.Meta(ge=-1, le=2**32 - 1)]
Strength = Annotated[float, msgspec.Meta(ge=0, le=1)]


class GenerationRequest(msgspec.Struct, kw_only=True):
    """The fields txt2img and img2img share."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = []
    seed: Seed = -1
    subseed: Seed = -1
    subseed_strength: Strength = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: Count = 1
    n_iter: Count = 1
    steps: Steps = 50
    cfg_scale: Annotated[float, msgspec.Meta(ge=0, le=200)] = 7.0
    width: Size = 512
    height: Size = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    denoising_strength: Strength | None = None
    override_settings: dict[str, Any] = {}
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    script_name: str | None = None
    script_args: list[Any] = []
    alwayson_scripts: dict[str, Any] = {}
    send_images: bool = True
    save_images: bool = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False


class Txt2ImgRequest(GenerationRequest, kw_only=True):
    enable_hr: bool = False
    hr_scale: Annotated[float, msgspec.Meta(ge=1, le=4)] = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    hr_resize_x: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0
    hr_resize_y: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 0
    firstphase_width: int = 0
    firstphase_height: int = 0


class Img2ImgRequest(GenerationRequest, kw_only=True):
    init_images: Annotated[list[str], msgspec.Meta(max_length=64)] = []
    resize_mode: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    denoising_strength: Strength | None = 0.75
    mask: str | None = None
    mask_blur: Annotated[int, msgspec.Meta(ge=0, le=256)] | None = None
    mask_blur_x: Annotated[int, msgspec.Meta(ge=0, le=256)] = 4
    mask_blur_y: Annotated[int, msgspec.Meta(ge=0, le=256)] = 4
    inpainting_fill: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0
    include_init_images: bool = False


class GenerationResponse(msgspec.Struct):
    images: list[str]
    parameters: dict[str, Any]
    # A JSON document as a string, as A1111 sends it.
    info: str


class ExtrasImageRequest(msgspec.Struct, kw_only=True):
    image: str = ""
    resize_mode: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: Annotated[float, msgspec.Meta(gt=0, le=8)] = 2.0
    upscaling_resize_w: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 512
    upscaling_resize_h: Annotated[int, msgspec.Meta(ge=0, le=8192)] = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class ExtrasImageResponse(msgspec.Struct):
    image: str
    html_info: str


class ExtrasFile(msgspec.Struct):
    data: str
    name: str = ""


class ExtrasBatchRequest(ExtrasImageRequest, kw_only=True):
    imageList: Annotated[list[ExtrasFile], msgspec.Meta(max_length=64)] = []


class ExtrasBatchResponse(msgspec.Struct):
    images: list[str]
    html_info: str


class PngInfoRequest(msgspec.Struct, kw_only=True):
    image: str = ""


class PngInfoResponse(msgspec.Struct):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(msgspec.Struct):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(msgspec.Struct):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None
    textinfo: str | None


class ProgressQuery(msgspec.Struct, kw_only=True):
    skip_current_image: bool = False


class SdModel(msgspec.Struct):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class NamedItem(msgspec.Struct):
    name: str


class SdVae(msgspec.Struct):
    model_name: str
    filename: str


class Sampler(msgspec.Struct):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(msgspec.Struct):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class Upscaler(msgspec.Struct):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float


class LatentUpscaleMode(msgspec.Struct):
    name: str


class Lora(msgspec.Struct):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class EmbeddingItem(msgspec.Struct):
    step: int | None
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    shape: int
    vectors: int


class Embeddings(msgspec.Struct):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class ScriptsList(msgspec.Struct):
    txt2img: list[str]
    img2img: list[str]


class PromptStyle(msgspec.Struct):
    name: str
    prompt: str | None
    negative_prompt: str | None


class Memory(msgspec.Struct):
    ram: dict[str, Any]
    cuda: dict[str, Any]

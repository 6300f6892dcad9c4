"""ControlNet inside the denoising loop (torch work, on the worker thread): the control image prepared as
diffusers' StableDiffusionControlNetPipeline prepares it, and each step's residuals for the UNet.

Control modes (InvokeAI's, after A1111's "control mode"): `balanced` is the pipeline's plain ControlNet;
`more_control` is its guess mode (the ControlNet sees only the prompt's half of the batch, its outputs scaled
up layer by layer); `more_prompt` weakens the shallow layers' residuals (A1111's "my prompt is more important");
`unbalanced` does both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# A1111's "my prompt is more important": layer i of 13 residuals is weighted 0.825 ** (12 - i).
SOFT_INJECTION_BASE = 0.825
_RESIZE_MODES = {"just_resize": "default", "crop_resize": "crop", "fill_resize": "fill"}


@dataclass
class PreparedControl:
    model: Any  # a diffusers ControlNetModel
    image: Any  # 1 × 3 × H × W in [0, 1], on the model's device
    weight: float
    begin: float
    end: float
    mode: str


def prepare_image(image: Any, width: int, height: int, resize_mode: str, device: Any, dtype: Any) -> Any:
    """The control image at the generation's size, as the ControlNet pipeline feeds it (RGB, [0, 1])."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
    tensor = processor.preprocess(image, height=height, width=width, resize_mode=_RESIZE_MODES[resize_mode])
    return tensor.to(device=device, dtype=dtype)


def residuals(
    controls: Sequence[PreparedControl],
    index: int,
    total: int,
    model_input: Any,
    timestep: Any,
    context: Any,
    added: dict[str, Any] | None,
    guided: bool,
) -> tuple[list[Any] | None, Any | None]:
    """The summed down-block and mid-block residuals of every ControlNet active at step `index` of `total`
    (none active: (None, None)). `model_input` and `context` are the UNet's, negative half first when guided."""
    import torch

    down_sum: list[Any] | None = None
    mid_sum: Any | None = None
    for control in controls:
        # StableDiffusionControlNetPipeline's controlnet_keep: on while the step lies inside [begin, end].
        if index / total < control.begin or (index + 1) / total > control.end:
            continue
        guess = control.mode in ("more_control", "unbalanced")
        if guess and guided:
            sample, embeds, image = model_input.chunk(2)[1], context.chunk(2)[1], control.image
            extra = {key: value.chunk(2)[1] for key, value in added.items()} if added else None
        else:
            sample, embeds = model_input, context
            image = torch.cat([control.image] * 2) if guided else control.image
            extra = added
        kwargs = {"added_cond_kwargs": extra} if extra is not None else {}
        down, mid = control.model(
            sample,
            timestep,
            encoder_hidden_states=embeds,
            controlnet_cond=image,
            conditioning_scale=control.weight,
            guess_mode=guess,
            return_dict=False,
            **kwargs,
        )
        if control.mode in ("more_prompt", "unbalanced"):
            count = len(down)
            down = [d * SOFT_INJECTION_BASE ** (count - 1 - i) for i, d in enumerate(down)]
        if guess and guided:
            # The negative half gets no control, as the pipeline's guess mode does.
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        down_sum = list(down) if down_sum is None else [a + b for a, b in zip(down_sum, down, strict=True)]
        mid_sum = mid if mid_sum is None else mid_sum + mid
    return down_sum, mid_sum

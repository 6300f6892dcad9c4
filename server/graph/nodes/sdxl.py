"""SDXL: the base and refiner model loaders and their prompt nodes (InvokeAI's names and fields).

A prompt node's conditioning carries what the SDXL UNet's added embedding needs besides the text: the second
encoder's pooled output and the time ids (original size, crop and target size; for the refiner, the aesthetic
score instead of the target size), as StableDiffusionXLPipeline computes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from server.graph import prompts
from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import TextConditioning
from server.graph.fields import ClipField, ConditioningField, UNetField, VaeField
from server.graph.nodes.base import WIRE_REQUIRED, Node, Output, model_input
from server.graph.nodes.conditioning import ConditioningOutput
from server.models.schema import ModelIdentifier

if TYPE_CHECKING:
    from server.models.catalogue import ModelCatalogue

Pixels = Annotated[int, msgspec.Meta(ge=0, le=16384)]
CHUNK_TOKENS = 77  # one chunk of CLIP tokens, with its start and end
Score = Annotated[float, msgspec.Meta(ge=0, le=10)]


class SDXLModelLoaderOutput(Output, tag="sdxl_model_loader_output"):
    unet: UNetField
    clip: ClipField
    clip2: ClipField
    vae: VaeField


class SDXLModelLoaderNode(Node, tag="sdxl_model_loader", kw_only=True):
    """An SDXL main model: its UNet, both text encoders (CLIP-L, OpenCLIP-G) and VAE."""

    model: Annotated[ModelIdentifier, model_input("main", bases=("sdxl",))]
    output = SDXLModelLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> SDXLModelLoaderOutput:
        return SDXLModelLoaderOutput(
            unet=UNetField(model=self.model),
            clip=ClipField(model=self.model, submodel="text_encoder"),
            clip2=ClipField(model=self.model, submodel="text_encoder_2"),
            vae=VaeField(model=self.model),
        )


class SDXLRefinerModelLoaderOutput(Output, tag="sdxl_refiner_model_loader_output"):
    unet: UNetField
    clip2: ClipField
    vae: VaeField


class SDXLRefinerModelLoaderNode(Node, tag="sdxl_refiner_model_loader", kw_only=True):
    """An SDXL refiner: its UNet, its one text encoder (OpenCLIP-G) and VAE."""

    model: Annotated[ModelIdentifier, model_input("main", bases=("sdxl-refiner",))]
    output = SDXLRefinerModelLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> SDXLRefinerModelLoaderOutput:
        return SDXLRefinerModelLoaderOutput(
            unet=UNetField(model=self.model),
            clip2=ClipField(model=self.model, submodel="text_encoder_2"),
            vae=VaeField(model=self.model),
        )


def _encode(
    ctx: InvocationContext, prompt: str, clip: ClipField, *, pooled: bool, truncate: bool = True
) -> tuple[Any, Any]:
    tokenizer, text_encoder = prompts.text_encoder_for(ctx, clip)
    prompt = prompts.with_embeddings(ctx, prompt, clip, tokenizer, text_encoder)
    with prompts.prepared(ctx, clip, text_encoder, sdxl=True):
        return prompts.encode_sdxl_part(
            prompt, tokenizer, text_encoder, clip.skipped_layers, pooled=pooled, truncate=truncate
        )


def _padded(embeds: Any, tokens: int, empty: Any) -> Any:
    """`embeds` made `tokens` long with an encoding of the empty prompt, one chunk at a time."""
    import torch

    if embeds.shape[1] >= tokens:
        return embeds
    return torch.cat([embeds, empty.repeat(1, (tokens - embeds.shape[1]) // empty.shape[1], 1)], dim=1)


def _second_encoder(clip2: ClipField) -> ClipField:
    if clip2.submodel != "text_encoder_2":
        raise NodeError("`clip2` takes the second text encoder: wire the `clip2` output of an SDXL loader into it")
    return clip2


class SDXLCompelPromptNode(Node, tag="sdxl_compel_prompt", kw_only=True):
    """Encode a prompt for SDXL: `prompt` through the first text encoder, `style` through the second (the
    prompt when empty), with the size and crop the UNet is conditioned on. Prompt weighting and `<name>`
    embeddings as in `compel`."""

    prompt: str = ""
    style: str = ""
    original_width: Pixels = 1024
    original_height: Pixels = 1024
    crop_top: Pixels = 0
    crop_left: Pixels = 0
    target_width: Pixels = 1024
    target_height: Pixels = 1024
    clip: Annotated[ClipField | None, WIRE_REQUIRED] = None
    clip2: Annotated[ClipField | None, WIRE_REQUIRED] = None
    # Past 75 tokens: `truncate` as diffusers' pipeline, or `chunks` of 75 through both encoders (A1111), as `compel`.
    long_prompt: Literal["truncate", "chunks"] = "truncate"
    output = ConditioningOutput
    category = "conditioning"

    def referenced_models(self, models: ModelCatalogue) -> list[ModelIdentifier]:
        return [
            *prompts.mentioned_embeddings(self.prompt, self.clip, models),
            *prompts.mentioned_embeddings(self.style, self.clip2, models),
        ]

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.clip is not None and self.clip2 is not None
        import torch

        truncate = self.long_prompt == "truncate"
        clip2 = _second_encoder(self.clip2)
        first, _ = _encode(ctx, self.prompt, self.clip, pooled=False, truncate=truncate)
        second, pooled = _encode(ctx, self.style or self.prompt, clip2, pooled=True, truncate=truncate)
        padding = None
        if max(first.shape[1], second.shape[1]) > CHUNK_TOKENS:
            # A style of another length than the prompt: the shorter side takes empty chunks. The empty prompt's
            # chunk through both also pads the shorter of the positive and negative conditioning (denoise.py).
            empty = torch.cat(
                [_encode(ctx, "", self.clip, pooled=False)[0], _encode(ctx, "", clip2, pooled=False)[0]], dim=-1
            )
            tokens = max(first.shape[1], second.shape[1])
            first, second = (
                _padded(first, tokens, empty[..., : first.shape[-1]]),
                _padded(second, tokens, empty[..., first.shape[-1] :]),
            )
            padding = empty
        conditioning = TextConditioning(
            embeds=torch.cat([first, second], dim=-1),
            pooled=pooled,
            time_ids=(
                self.original_height,
                self.original_width,
                self.crop_top,
                self.crop_left,
                self.target_height,
                self.target_width,
            ),
            empty=not self.prompt and not self.style,
            padding=padding,
        )
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", conditioning))
        )


class SDXLRefinerCompelPromptNode(Node, tag="sdxl_refiner_compel_prompt", kw_only=True):
    """Encode a prompt for the SDXL refiner (its one text encoder), conditioned on the original size, crop and
    an aesthetic score (diffusers' defaults: 6 for the prompt, 2.5 for the negative prompt)."""

    style: str = ""
    original_width: Pixels = 1024
    original_height: Pixels = 1024
    crop_top: Pixels = 0
    crop_left: Pixels = 0
    aesthetic_score: Score = 6.0
    clip2: Annotated[ClipField | None, WIRE_REQUIRED] = None
    output = ConditioningOutput
    category = "conditioning"

    def referenced_models(self, models: ModelCatalogue) -> list[ModelIdentifier]:
        return prompts.mentioned_embeddings(self.style, self.clip2, models)

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.clip2 is not None
        embeds, pooled = _encode(ctx, self.style, _second_encoder(self.clip2), pooled=True)
        conditioning = TextConditioning(
            embeds=embeds,
            pooled=pooled,
            time_ids=(self.original_height, self.original_width, self.crop_top, self.crop_left, self.aesthetic_score),
            empty=not self.style,
        )
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", conditioning))
        )

"""`compel`: a prompt → CLIP embeddings, with prompt weighting (`word++`, `(word)1.3`, `[word]`, `.blend()`...)
by the `compel` library, the one InvokeAI uses.

A prompt without any weighting syntax is encoded the way diffusers' pipeline encodes it (tokenize to 77,
run the text encoder), which is what compel computes for it too (tests/graph/test_denoise.py checks both)
but without compel's parser, a few milliseconds per prompt that a small model would feel."""

from __future__ import annotations

import re
from typing import Annotated, Any

from server.graph.context import InvocationContext
from server.graph.fields import ClipField, ConditioningField
from server.graph.nodes.base import WIRE_REQUIRED, Node, Output

# Any of these may be compel syntax (weights, groups, blends, escapes); such prompts go through compel.
_COMPEL_SYNTAX = re.compile(r"""[()\[\]+\-"\\]|\.(?:and|blend|swap)\b""")


class ConditioningOutput(Output, tag="conditioning_output"):
    conditioning: ConditioningField


class CompelNode(Node, tag="compel", kw_only=True):
    """Encode a prompt (with compel weighting syntax) for `denoise_latents`."""

    prompt: str = ""
    clip: Annotated[ClipField | None, WIRE_REQUIRED] = None
    output = ConditioningOutput
    category = "conditioning"

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.clip is not None
        tokenizer = ctx.load_model(self.clip.model, "tokenizer")
        text_encoder = ctx.load_model(self.clip.model, "text_encoder")
        embeddings = encode_prompt(self.prompt, tokenizer, text_encoder)
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", embeddings))
        )


def encode_prompt(prompt: str, tokenizer: Any, text_encoder: Any) -> Any:
    import torch

    with torch.inference_mode():
        if _COMPEL_SYNTAX.search(prompt) is None:
            return plain_embeddings(prompt, tokenizer, text_encoder)
        from compel import Compel

        # Long prompts are truncated to the encoder's 77 tokens, as the diffusers pipeline does.
        return Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=True)(prompt)


def plain_embeddings(prompt: str, tokenizer: Any, text_encoder: Any) -> Any:
    """StableDiffusionPipeline.encode_prompt for one prompt, without weighting."""
    tokens = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(text_encoder.device)
    return text_encoder(tokens.input_ids.to(text_encoder.device), attention_mask=mask)[0]

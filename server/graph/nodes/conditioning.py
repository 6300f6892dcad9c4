"""`compel`: a prompt → CLIP embeddings, with prompt weighting (`word++`, `(word)1.3`, `[word]`...) by the
`compel` library, the one InvokeAI uses. An unweighted prompt gives exactly the pipeline's embeddings."""

from __future__ import annotations

from typing import Annotated

from server.graph.context import InvocationContext
from server.graph.fields import ClipField, ConditioningField
from server.graph.nodes.base import WIRE_REQUIRED, Node, Output


class ConditioningOutput(Output, tag="conditioning_output"):
    conditioning: ConditioningField


class CompelNode(Node, tag="compel", kw_only=True):
    """Encode a prompt (with compel weighting syntax) for `denoise_latents`."""

    prompt: str = ""
    clip: Annotated[ClipField | None, WIRE_REQUIRED] = None
    output = ConditioningOutput
    category = "conditioning"

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        import torch
        from compel import Compel

        assert self.clip is not None
        tokenizer = ctx.load_model(self.clip.model, "tokenizer")
        text_encoder = ctx.load_model(self.clip.model, "text_encoder")
        # Long prompts are truncated to the encoder's 77 tokens, as the diffusers pipeline does.
        compel = Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=True)
        with torch.inference_mode():
            embeddings = compel(self.prompt)
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", embeddings))
        )

"""`compel`: a prompt → CLIP embeddings, with prompt weighting (`word++`, `(word)1.3`, `[word]`, `.blend()`...),
`<name>` textual-inversion embeddings, and whatever the CLIP handle carries (LoRAs, skipped layers). The torch
work is in server/graph/prompts.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from server.graph import prompts
from server.graph.context import InvocationContext
from server.graph.fields import ClipField, ConditioningField
from server.graph.nodes.base import WIRE_REQUIRED, Node, Output

if TYPE_CHECKING:
    from server.models.catalogue import ModelCatalogue
    from server.models.schema import ModelIdentifier


class ConditioningOutput(Output, tag="conditioning_output"):
    conditioning: ConditioningField


class CompelNode(Node, tag="compel", kw_only=True):
    """Encode a prompt (with compel weighting syntax) for `denoise_latents`. `<name>` uses the registered
    embedding of that name (textual inversion); a name that is no registered embedding stays plain text."""

    prompt: str = ""
    clip: Annotated[ClipField | None, WIRE_REQUIRED] = None
    output = ConditioningOutput
    category = "conditioning"

    def referenced_models(self, models: ModelCatalogue) -> list[ModelIdentifier]:
        return prompts.mentioned_embeddings(self.prompt, self.clip, models)

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.clip is not None
        tokenizer, text_encoder = prompts.text_encoder_for(ctx, self.clip)
        prompt = prompts.with_embeddings(ctx, self.prompt, self.clip, tokenizer, text_encoder)
        with prompts.prepared(ctx, self.clip, text_encoder):
            embeddings = prompts.encode_prompt(prompt, tokenizer, text_encoder)
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", embeddings))
        )

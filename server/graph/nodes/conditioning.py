"""`compel`: a prompt → CLIP embeddings, with prompt weighting (`word++`, `(word)1.3`, `[word]`, `.blend()`...),
`<name>` textual-inversion embeddings, and whatever the CLIP handle carries (LoRAs, skipped layers). The torch
work is in server/graph/prompts.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from server.graph import prompts
from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import ConditioningSchedule, TextConditioning, as_conditioning
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
    # Past 75 tokens: `truncate` as diffusers' pipeline does, or `chunks` of 75 encoded one by one (A1111).
    long_prompt: Literal["truncate", "chunks"] = "truncate"
    output = ConditioningOutput
    category = "conditioning"

    def referenced_models(self, models: ModelCatalogue) -> list[ModelIdentifier]:
        return prompts.mentioned_embeddings(self.prompt, self.clip, models)

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.clip is not None
        tokenizer, text_encoder = prompts.text_encoder_for(ctx, self.clip)
        prompt = prompts.with_embeddings(ctx, self.prompt, self.clip, tokenizer, text_encoder)
        truncate = self.long_prompt == "truncate"
        with prompts.prepared(ctx, self.clip, text_encoder):
            embeddings = prompts.encode_prompt(prompt, tokenizer, text_encoder, truncate=truncate)
            padding = None
            if embeddings.shape[1] > tokenizer.model_max_length:
                padding = prompts.plain_embeddings("", tokenizer, text_encoder)
        value = embeddings if padding is None else TextConditioning(embeds=embeddings, padding=padding)
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("conditioning", value))
        )


Fractions = Annotated[list[Annotated[float, msgspec.Meta(gt=0, le=1)]], msgspec.Meta(min_length=1, max_length=1000)]


class ConditioningScheduleNode(Node, tag="conditioning_schedule", kw_only=True):
    """Prompts that take turns over the steps (A1111's `[from:to:when]` and `[a|b]`): `conditionings` (from a
    `collect`, in the order of its edges) each last until the fraction of the steps at the same place in `until`
    (ascending; the last is 1). Wire the result to `denoise_latents` as any conditioning."""

    conditionings: Annotated[list[ConditioningField] | None, WIRE_REQUIRED] = None
    until: Fractions = msgspec.field(default_factory=lambda: [1.0])
    output = ConditioningOutput
    category = "conditioning"

    def invoke(self, ctx: InvocationContext) -> ConditioningOutput:
        assert self.conditionings is not None
        if len(self.conditionings) != len(self.until):
            raise NodeError(
                f"{len(self.conditionings)} conditionings but {len(self.until)} `until` fractions: give one each"
            )
        if any(b <= a for a, b in zip(self.until, self.until[1:], strict=False)) or self.until[-1] != 1:
            raise NodeError("`until` must rise and end at 1 (the last conditioning lasts to the end)")
        entries = []
        for until, field in zip(self.until, self.conditionings, strict=True):
            value = as_conditioning(ctx.get_tensor(field.conditioning_name))
            if isinstance(value, ConditioningSchedule):
                raise NodeError("a conditioning schedule cannot hold another schedule; list its entries instead")
            entries.append((until, value))
        schedule = ConditioningSchedule(entries=entries)
        return ConditioningOutput(
            conditioning=ConditioningField(conditioning_name=ctx.put_tensor("schedule", schedule))
        )

"""Prompts into embeddings (torch work, on the worker thread), with everything a CLIP handle carries: the text
encoder's LoRAs, skipped layers, and textual-inversion embeddings named in the prompt.

Weighting syntax (`word++`, `(word)1.3`, `.blend()`...) goes through the `compel` library, the one InvokeAI
uses. A prompt without any such syntax is encoded the way diffusers' pipeline encodes it (tokenize to 77, run
the text encoder), which is what compel computes for it too (tests/graph/test_denoise.py checks both) but
without compel's parser, a few milliseconds per prompt that a small model would feel."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from server.graph.context import InvocationContext, NodeError
from server.graph.fields import ClipField
from server.models import adapters, embeddings
from server.models.schema import ModelIdentifier

# Any of these may be compel syntax (weights, groups, blends, escapes); such prompts go through compel.
_COMPEL_SYNTAX = re.compile(r"""[()\[\]+\-"\\]|\.(?:and|blend|swap)\b""")


def text_encoder_for(ctx: InvocationContext, clip: ClipField) -> tuple[Any, Any]:
    """(tokenizer, text encoder) of the handle's encoder (SDXL's second one is `text_encoder_2`)."""
    tokenizer_part = "tokenizer" if clip.submodel == "text_encoder" else "tokenizer_2"
    return ctx.load_model(clip.model, tokenizer_part), ctx.load_model(clip.model, clip.submodel)


def mentioned_embeddings(prompt: str, clip: ClipField | None, models: Any) -> list[ModelIdentifier]:
    """The registered embeddings `prompt` uses through `<name>` (of the handle's base)."""
    names = embeddings.mentioned(prompt)
    if not names or clip is None:
        return []
    base = clip.model.base_model
    registered = embeddings.by_name(models.list_models(list(embeddings.usable_bases(base)), "embedding"), base)
    return [registered[name].identifier for name in names if name in registered]


def with_embeddings(ctx: InvocationContext, prompt: str, clip: ClipField, tokenizer: Any, text_encoder: Any) -> str:
    """`prompt` with every `<name>` of a registered embedding (of the model's base) replaced by its tokens."""
    names = embeddings.mentioned(prompt)
    if not names:
        return prompt
    base = clip.model.base_model
    registered = embeddings.by_name(ctx.registered("embedding", embeddings.usable_bases(base)), base)
    tokens: dict[str, list[str]] = {}
    for name in names:
        config = registered.get(name)
        if config is None:
            continue  # not an embedding: plain text
        embedding = ctx.load_model(config.identifier)
        try:
            tokens[name] = embeddings.install(embedding, tokenizer, text_encoder, clip.submodel)
        except embeddings.EmbeddingError as exc:
            raise NodeError(str(exc)) from None
    return embeddings.expand(prompt, tokens)


@contextlib.contextmanager
def prepared(ctx: InvocationContext, clip: ClipField, text_encoder: Any, *, sdxl: bool = False) -> Iterator[None]:
    """The text encoder as the handle wants it for one encode: its LoRAs on, its last layers skipped."""
    loras = ctx.load_loras(clip.loras)
    try:
        with (
            adapters.active(text_encoder, clip.submodel, loras, sdxl=sdxl),
            skipped_layers(text_encoder, clip.skipped_layers),
        ):
            yield
    except adapters.AdapterError as exc:
        raise NodeError(str(exc)) from None


@contextlib.contextmanager
def skipped_layers(text_encoder: Any, count: int) -> Iterator[None]:
    """Run the text encoder without its last `count` layers: its output is then the hidden state of layer
    n - count, normalised by the final layer norm, which is what diffusers' `clip_skip` and A1111's "CLIP skip"
    compute. Nothing is copied or changed but the list of layers, which is put back afterwards."""
    if count == 0:
        yield
        return
    encoder = text_encoder.text_model.encoder if hasattr(text_encoder, "text_model") else text_encoder.encoder
    layers = encoder.layers
    if count >= len(layers):
        raise NodeError(f"this text encoder has {len(layers)} layers: skip at most {len(layers) - 1}")
    encoder.layers = layers[: len(layers) - count]
    try:
        yield
    finally:
        encoder.layers = layers


def encode_prompt(prompt: str, tokenizer: Any, text_encoder: Any, *, truncate: bool = True) -> Any:
    """The prompt's embeddings. `truncate`: to the encoder's 77 tokens, as the diffusers pipeline does; else a
    long prompt is encoded in 77-token chunks joined along the tokens (compel's and A1111's way), and
    `BREAK`-style conjunctions keep every chunk."""
    import torch

    with torch.inference_mode():
        if truncate and _COMPEL_SYNTAX.search(prompt) is None:
            return plain_embeddings(prompt, tokenizer, text_encoder)
        from compel import Compel

        return Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=truncate)(prompt)


def plain_embeddings(prompt: str, tokenizer: Any, text_encoder: Any) -> Any:
    """StableDiffusionPipeline.encode_prompt for one prompt, without weighting."""
    tokens = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(text_encoder.device)
    return text_encoder(tokens.input_ids.to(text_encoder.device), attention_mask=mask)[0]


def encode_sdxl_part(
    prompt: str, tokenizer: Any, text_encoder: Any, skipped: int, *, pooled: bool, truncate: bool = True
) -> tuple[Any, Any]:
    """One SDXL text encoder's contribution: the penultimate layer's hidden states (not normalised), as
    StableDiffusionXLPipeline.encode_prompt takes them, and (the second encoder) its pooled, projected output.
    Skipped layers move the hidden states earlier; the pooled output always comes from the whole encoder.
    `truncate`: as in `encode_prompt`; a long prompt's pooled output is its first chunk's, as A1111's."""
    import torch

    with torch.inference_mode():
        if truncate and _COMPEL_SYNTAX.search(prompt) is None:
            tokens = tokenizer(
                prompt,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(text_encoder.device)
            output = text_encoder(tokens, output_hidden_states=True)
            return output.hidden_states[-(skipped + 2)], (output[0] if pooled else None)
        from compel import Compel, ReturnedEmbeddingsType

        compel = Compel(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            truncate_long_prompts=truncate,
            returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
            requires_pooled=pooled,
        )
        with skipped_layers(text_encoder, skipped):
            result = compel(prompt)
        if not pooled:
            return result, None
        if not truncate:
            # compel pools the prompt's text as written, syntax and all; A1111 the first chunk: for BREAK chunks
            # (a conjunction) the first part's text, for a long prompt its first 77 tokens (compel's already).
            parts = compel.parse_prompt_string(prompt).prompts
            if len(parts) > 1 and hasattr(parts[0], "children"):
                first = "".join(getattr(fragment, "text", "") for fragment in parts[0].children)
                return result[0], compel.conditioning_provider.get_pooled_embeddings([first], device=compel.device)
        # compel's pooled output is that of the encoder as it ran; with layers skipped, ask the whole one.
        whole = compel(prompt)[1] if skipped else result[1]
        return result[0], whole

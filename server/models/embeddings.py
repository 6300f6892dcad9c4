"""Textual-inversion embeddings: read from the layouts people have, and put into a tokenizer and text encoder
so a prompt can use them.

Each embedding gets tokens of its own (`<emb…>`, `<emb…>_1`, … one per vector, as diffusers names them), added
to the tokenizer once and given their vectors in the text encoder's input embeddings every time they are
used. Nothing else changes: the rows of every other token are untouched, so prompts without the tokens give
what they gave before. `<name>` in a prompt becomes those tokens (inside any weighting syntax, so
`(<name>)1.2` still weighs it); a name that is no registered embedding stays plain text."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.models.offload import hooks_removed

# A1111: `<name>`; names never hold angle brackets or colons (`<lora:x:1>` is A1111's LoRA syntax, not ours).
MENTION = re.compile(r"<([^<>:\s][^<>:]*)>")


# The refiner's only text encoder is SDXL's second one, so SDXL embeddings work there through their `clip_g`
# vectors (a refiner run after an SDXL base gets the same prompt, embeddings and all).
_ALSO_USABLE = {"sdxl-refiner": ("sdxl",)}


def usable_bases(model_base: str) -> tuple[str, ...]:
    """The bases whose embeddings a model of `model_base` takes, its own first (it wins a shared name)."""
    return (model_base, *_ALSO_USABLE.get(model_base, ()))


def by_name(configs: list[Any], model_base: str) -> dict[str, Any]:
    """Embedding configs by name, a model's own base winning over the others it can use."""
    order = usable_bases(model_base)
    ranked = sorted(configs, key=lambda c: order.index(c.base_model) if c.base_model in order else len(order))
    found: dict[str, Any] = {}
    for config in ranked:
        found.setdefault(config.model_name, config)
    return found


class EmbeddingError(Exception):
    """An embedding that cannot be used here; the message says which and why."""


@dataclass
class Embedding:
    label: str  # the model key, for messages
    token: str  # the first of its tokens
    # part (text_encoder / text_encoder_2) -> vectors, n × width
    vectors: dict[str, Any]

    def tokens(self, count: int) -> list[str]:
        return [self.token] + [f"{self.token}_{i}" for i in range(1, count)]

    def parameters(self) -> Any:
        """For the model cache's byte count."""
        return iter(self.vectors.values())

    def buffers(self) -> Any:
        return iter(())


def widths(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """part -> vector width, from an embedding file's tensor shapes alone (for checks before loading it)."""
    if "clip_l" in shapes and "clip_g" in shapes:
        return {"text_encoder": shapes["clip_l"][-1], "text_encoder_2": shapes["clip_g"][-1]}
    found = [shape for key, shape in shapes.items() if key == "emb_params" or key.startswith("string_to_param.")]
    if not found and len(shapes) == 1:
        found = list(shapes.values())
    return {"text_encoder": found[0][-1]} if len(found) == 1 and found[0] else {}


def read_embedding(path: Path, label: str) -> Embedding:
    """A1111 `.pt` (`string_to_param`) and `.safetensors` (`emb_params`; SDXL `clip_l`/`clip_g`), diffusers
    `learned_embeds.*` (one tensor under the token it was trained for). Pickles only through `weights_only`."""
    from server.models.weights import read_state_dict

    file = path
    if path.is_dir():
        candidates = [path / name for name in ("learned_embeds.safetensors", "learned_embeds.bin")]
        file = next((c for c in candidates if c.is_file()), candidates[0])
    tensors = read_state_dict(file)
    stamp = f"{file}:{file.stat().st_mtime_ns}:{file.stat().st_size}"
    token = f"<emb{hashlib.sha256(stamp.encode()).hexdigest()[:12]}>"
    if "clip_l" in tensors and "clip_g" in tensors:
        vectors = {"text_encoder": tensors["clip_l"], "text_encoder_2": tensors["clip_g"]}
    else:
        found = [value for key, value in tensors.items() if key == "emb_params" or key.startswith("string_to_param.")]
        if not found and len(tensors) == 1:
            found = list(tensors.values())
        if len(found) != 1:
            raise EmbeddingError(f"{label} holds no embedding vectors we recognise ({', '.join(list(tensors)[:4])})")
        vectors = {"text_encoder": found[0]}
    vectors = {part: (v[None] if v.ndim == 1 else v).detach().float() for part, v in vectors.items()}
    for part, value in vectors.items():
        if value.ndim != 2 or value.shape[0] == 0:
            raise EmbeddingError(f"{label}: its {part} vectors have the shape {tuple(value.shape)}, not n × width")
    return Embedding(label=label, token=token, vectors=vectors)


def install(embedding: Embedding, tokenizer: Any, text_encoder: Any, part: str) -> list[str]:
    """Make the embedding's tokens mean its vectors in this tokenizer and text encoder; returns the tokens."""
    import torch

    vectors = embedding.vectors.get(part)
    if vectors is None:
        raise EmbeddingError(f"embedding {embedding.label} has no vectors for this model's {part}")
    table = text_encoder.get_input_embeddings()
    width = table.weight.shape[1]
    if vectors.shape[1] != width:
        raise EmbeddingError(
            f"embedding {embedding.label} has vectors of width {vectors.shape[1]}, but this text encoder takes "
            f"{width}: it was made for another base model"
        )
    tokens = embedding.tokens(vectors.shape[0])
    missing = [token for token in tokens if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    with hooks_removed(text_encoder):
        if max(ids) >= table.weight.shape[0]:
            text_encoder.resize_token_embeddings(len(tokenizer))
        table = text_encoder.get_input_embeddings()
        with torch.no_grad():
            table.weight[ids] = vectors.to(table.weight.device, table.weight.dtype)
    return tokens


def mentioned(prompt: str) -> list[str]:
    """The names written as `<name>` in a prompt, in order, once each."""
    return list(dict.fromkeys(match.group(1) for match in MENTION.finditer(prompt)))


def expand(prompt: str, tokens_by_name: dict[str, list[str]]) -> str:
    """`<name>` -> that embedding's tokens, for the names given; other `<...>` text stays as it is."""

    def replace(match: re.Match[str]) -> str:
        tokens = tokens_by_name.get(match.group(1))
        return " ".join(tokens) if tokens else match.group(0)

    return MENTION.sub(replace, prompt)

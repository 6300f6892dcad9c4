"""LoRA and LyCORIS adapters on loaded UNets and text encoders, through diffusers and peft.

An adapter file is read once (`read_lora`) and injected into a module the first time a run asks for it; it
stays there, switched off, for as long as that module is in memory (at most `ADAPTERS_PER_MODULE` of them,
least recently used out first). `active(...)` switches a run's adapters on with their weights and off again
afterwards, so the module computes exactly what its base weights compute for every run without them, and a
weight change costs nothing but a scale.

Layouts: kohya (`lora_unet_*`, `lora_te_*`, SDXL's `lora_te1_`/`lora_te2_`, LoCon's conv layers) and
diffusers/PEFT files are converted and injected by diffusers' own LoRA loaders (`lora_state_dict`,
`load_lora_into_unet`, `load_lora_into_text_encoder`). LyCORIS LoHa (`hada_*`) and LoKr (`lokr_*`) files,
which those loaders cannot read for SD UNets, are mapped onto the module's own names here and injected with
peft's LoHa / LoKr tuners."""

from __future__ import annotations

import contextlib
import hashlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.models.offload import hooks_removed

ADAPTERS_PER_MODULE = 16
# What the converted state dict's keys start with, for each part a LoRA may change.
PART_PREFIXES = {"unet": "unet.", "text_encoder": "text_encoder.", "text_encoder_2": "text_encoder_2."}
# LyCORIS / kohya key prefixes and the part each one targets.
_KOHYA_PARTS = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
)
_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
_LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
_INJECTED = "_imagegraph_adapters"


class AdapterError(Exception):
    """An adapter that cannot be used with this model; the message says which and why."""


@dataclass
class LoraWeights:
    """A LoRA or LyCORIS file as read: its tensors (on the CPU) and what kind it is."""

    name: str  # the adapter's name inside a module: unique per file version
    label: str  # what a person calls it (the model key)
    kind: str  # "lora" (kohya, diffusers/PEFT, LoCon), "loha" or "lokr"
    tensors: dict[str, Any]
    nbytes: int = 0
    # Which parts (unet, text_encoder, text_encoder_2) it has weights for, filled when first converted.
    parts: set[str] = field(default_factory=set)

    def parameters(self) -> Iterator[Any]:
        """For the model cache's byte count."""
        return iter(self.tensors.values())

    def buffers(self) -> Iterator[Any]:
        return iter(())


def read_lora(path: Path, label: str) -> LoraWeights:
    """Read a LoRA file (or a diffusers LoRA folder); pickles only through `weights_only`."""
    from server.models.weights import read_state_dict

    file = path
    if path.is_dir():
        candidates = [path / name for name in ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")]
        file = next((c for c in candidates if c.is_file()), candidates[0])
    tensors = read_state_dict(file)
    stamp = f"{file}:{file.stat().st_mtime_ns}:{file.stat().st_size}"
    name = "lora_" + hashlib.sha256(stamp.encode()).hexdigest()[:16]
    kind = (
        "loha" if any(".hada_w1" in k for k in tensors) else "lokr" if any(".lokr_w" in k for k in tensors) else "lora"
    )
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values() if hasattr(t, "numel"))
    return LoraWeights(name=name, label=label, kind=kind, tensors=tensors, nbytes=nbytes)


@contextlib.contextmanager
def active(module: Any, part: str, loras: Sequence[tuple[LoraWeights, float]], *, sdxl: bool) -> Iterator[None]:
    """Run the block with `loras` switched on in `module` at their weights (the same LoRA twice adds up), and
    every adapter off again afterwards, whatever happens."""
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    weights: OrderedDict[str, float] = OrderedDict()
    for lora, weight in loras:
        if _inject(module, part, lora, sdxl=sdxl):
            weights[lora.name] = weights.get(lora.name, 0.0) + weight
    if not weights:
        yield
        return
    import torch

    # peft sets requires_grad on the adapters' parameters as it switches them. Offloaded sequentially, those
    # are placeholders the hooks made during an inference-mode run, which only inference mode may change.
    with torch.inference_mode():
        set_adapter_layers(module, enabled=True)
        set_weights_and_activate_adapters(module, list(weights), list(weights.values()))
    try:
        yield
    finally:
        with torch.inference_mode():
            set_adapter_layers(module, enabled=False)


def _inject(module: Any, part: str, lora: LoraWeights, *, sdxl: bool) -> bool:
    """Put `lora`'s weights for `part` into `module` unless they are there; False when it has none for it."""
    injected: OrderedDict[str, bool] = module.__dict__.setdefault(_INJECTED, OrderedDict())
    if lora.name in injected:
        injected.move_to_end(lora.name)
        return injected[lora.name]
    # Offloaded sequentially, a module's layers hold no real weights between runs: peft must see them.
    with hooks_removed(module):
        return _inject_new(module, part, lora, injected, sdxl=sdxl)


def _inject_new(module: Any, part: str, lora: LoraWeights, injected: OrderedDict[str, bool], *, sdxl: bool) -> bool:
    while len(injected) >= ADAPTERS_PER_MODULE:
        old, present = injected.popitem(last=False)
        if present:
            _remove(module, old)
    try:
        with warnings.catch_warnings():
            # peft warns whenever a second adapter joins a module; holding several is what we do on purpose.
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            present = (
                _inject_lycoris(module, part, lora) if lora.kind != "lora" else _inject_lora(module, part, lora, sdxl)
            )
    except Exception as exc:
        _remove(module, lora.name)  # never leave a half-injected adapter behind
        raise AdapterError(f"LoRA {lora.label} does not fit this model's {part}: {_first_line(exc)}") from exc
    injected[lora.name] = present
    if present:
        lora.parts.add(part)
        from diffusers.utils.peft_utils import set_adapter_layers

        set_adapter_layers(module, enabled=False)
    return present


def _inject_lora(module: Any, part: str, lora: LoraWeights, sdxl: bool) -> bool:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    loader: Any = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    unet_config = module.config if part == "unet" else None
    state_dict, alphas = loader.lora_state_dict(dict(lora.tensors), unet_config=unet_config)
    if not any(key.startswith(PART_PREFIXES[part]) for key in state_dict):
        return False
    if part == "unet":
        loader.load_lora_into_unet(state_dict, alphas, module, adapter_name=lora.name)
    else:
        loader.load_lora_into_text_encoder(state_dict, alphas, module, prefix=part, adapter_name=lora.name)
    return True


def _inject_lycoris(module: Any, part: str, lora: LoraWeights) -> bool:
    """LoHa / LoKr: each kohya-style key names a module of `module` with `_` for `.`; peft's tuner does the rest."""
    from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model, set_peft_model_state_dict

    names = _module_names(module)
    suffixes = _LOHA if lora.kind == "loha" else _LOKR
    grouped: dict[str, dict[str, Any]] = {}
    for key, tensor in lora.tensors.items():
        stem, _, leaf = key.rpartition(".")
        target = _target_of(stem, part)
        if target is None:
            continue
        path = names.get(target) or names.get(target.removeprefix("text_model_"))
        if path is None:
            raise AdapterError(f"its layer {stem!r} is not in this model")
        if leaf in suffixes or leaf == "alpha":
            grouped.setdefault(path, {})[leaf] = tensor
    if not grouped:
        return False
    ranks, alphas, state = {}, {}, {}
    for path, tensors in grouped.items():
        rank = _lycoris_rank(tensors, lora.kind)
        ranks[re.escape(path)] = rank
        alpha = tensors.get("alpha")
        full_lokr = lora.kind == "lokr" and "lokr_w2" in tensors and "lokr_w1" in tensors
        # LyCORIS scales a LoKr of two full factors by 1, whatever its alpha; peft scales by alpha / r.
        alphas[re.escape(path)] = float(rank) if alpha is None or full_lokr else float(alpha)
        state.update({f"{path}.{leaf}": value for leaf, value in tensors.items() if leaf != "alpha"})
    first = next(iter(ranks))
    common: dict[str, Any] = {"r": ranks[first], "alpha": alphas[first], "target_modules": list(grouped)}
    if lora.kind == "loha":
        config: Any = LoHaConfig(**common, rank_pattern=ranks, alpha_pattern=alphas)
    else:
        config = LoKrConfig(**common, rank_pattern=ranks, alpha_pattern=alphas, decompose_both=False)
    inject_adapter_in_model(config, module, adapter_name=lora.name)
    result = set_peft_model_state_dict(module, state, adapter_name=lora.name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise AdapterError(f"{len(unexpected)} of its weights have no place in this model ({unexpected[0]})")
    return True


def _lycoris_rank(tensors: dict[str, Any], kind: str) -> int:
    """The rank peft must be told so that it builds the factors the file has: a LoKr's full `lokr_w2` needs a
    rank of at least half its larger side (peft decomposes it below that), a decomposed one its own rank."""
    if kind == "loha":
        return int(tensors["hada_w1_b"].shape[0])
    if "lokr_w2_b" in tensors:
        return int(tensors["lokr_w2_b"].shape[0])
    return int(max(tensors["lokr_w2"].shape))


def _target_of(stem: str, part: str) -> str | None:
    for prefix, target_part in _KOHYA_PARTS:
        if stem.startswith(prefix):
            return stem[len(prefix) :] if target_part == part else None
    return None


def _module_names(module: Any) -> dict[str, str]:
    """A module path with `_` for `.` (how kohya-style files name layers) -> the path itself."""
    return {name.replace(".", "_"): name for name, _ in module.named_modules() if name}


def _remove(module: Any, name: str) -> None:
    from diffusers.utils.peft_utils import delete_adapter_layers

    with contextlib.suppress(Exception):
        delete_adapter_layers(module, name)
    peft_config = getattr(module, "peft_config", None)
    if isinstance(peft_config, dict):
        peft_config.pop(name, None)
    module.__dict__.get(_INJECTED, {}).pop(name, None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

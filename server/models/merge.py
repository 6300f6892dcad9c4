"""Merging two or three models tensor by tensor, streaming from and to safetensors.

Only one tensor of each input is in memory at a time (read through safetensors' memory map) and the output
is written as it is computed, so merging two 2 GB models needs about one tensor of memory, not 6 GB.

With alpha = 0 every algorithm gives the first model; alpha weighs the others in:
- weighted_sum:   (1 - a) * A + a * B
- sigmoid:        A + (B - A) * s(a), with s(a) = a^2 (3 - 2a)                (smoothstep)
- inv_sigmoid:    A + (B - A) * s(a), with s(a) = 0.5 - sin(asin(1 - 2a) / 3)  (its inverse)
- add_difference: A + (B - C) * a                                            (three models)
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from server.models import safetensors_io

if TYPE_CHECKING:
    import torch

# Parts of a diffusers pipeline that are merged; everything else (VAE, tokenizers, scheduler) is copied
# from the first model.
MERGED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
# Tensors of a single-file checkpoint that are merged: the UNet and the text encoder(s).
MERGED_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "conditioner.")


class MergeError(ValueError):
    """The models cannot be merged (a sentence naming the first problem)."""


def factor(interp: str, alpha: float) -> float:
    if interp == "sigmoid":
        return alpha * alpha * (3 - 2 * alpha)
    if interp == "inv_sigmoid":
        return 0.5 - math.sin(math.asin(1.0 - 2.0 * alpha) / 3.0)
    return alpha


def combine(interp: str, alpha: float, tensors: list[torch.Tensor]) -> torch.Tensor:
    """One merged tensor, computed in float32 and returned in the first model's dtype."""
    first = tensors[0]
    if not first.is_floating_point():
        return first  # integer buffers (e.g. position ids) are not weights
    a, b = first.float(), tensors[1].float()
    if interp == "weighted_sum":
        out = (1 - alpha) * a + alpha * b
    elif interp == "add_difference":
        out = a + (b - tensors[2].float()) * alpha
    else:
        out = a + (b - a) * factor(interp, alpha)
    return out.to(first.dtype)


def mismatches(
    headers: list[safetensors_io.Header], names: list[str], merged: set[str], what: str
) -> list[tuple[str, str]]:
    """(tensor, sentence) for each tensor of `merged` whose shape or presence differs between the models."""
    found = []
    first = headers[0]
    for tensor in sorted(merged):
        shape = first.tensors[tensor].shape
        for name, header in zip(names[1:], headers[1:], strict=True):
            other = header.tensors.get(tensor)
            if other is None or other.shape != shape:
                where = f"{list(other.shape)} in `{name}`" if other is not None else f"missing from `{name}`"
                found.append((tensor, f"{what} tensor `{tensor}` is {list(shape)} in `{names[0]}` but {where}"))
                break
    return found


def _refuse(found: list[tuple[str, str]]) -> None:
    raise MergeError(
        f"cannot merge: {found[0][1]} ({len(found)} such tensors); set force to take those tensors from the first model"
    )


def merge_file(
    sources: list[Path],
    names: list[str],
    out: Path,
    *,
    alpha: float,
    interp: str,
    force: bool,
    what: str,
    prefixes: tuple[str, ...] | None = None,
) -> None:
    """Merge one safetensors file per model into `out` (the first model's layout, dtypes and metadata).
    `prefixes`: only tensors under these are merged, the rest come from the first model."""
    from safetensors import safe_open

    headers = [safetensors_io.read_header(path) for path in sources]
    first = headers[0]
    merged = {n for n in first.tensors if prefixes is None or n.startswith(prefixes)}
    found = mismatches(headers, names, merged, what)
    if found and not force:
        _refuse(found)
    skip = {tensor for tensor, _ in found}
    layout = sorted(first.tensors.items(), key=lambda item: item[1].start)

    def tensors() -> Iterator[torch.Tensor]:
        handles = [safe_open(str(path), framework="pt") for path in sources]
        for name, _ in layout:
            if name in merged and name not in skip:
                yield combine(interp, alpha, [h.get_tensor(name) for h in handles])
            else:
                yield handles[0].get_tensor(name)

    safetensors_io.write_streaming(
        out, [(name, info.dtype, info.shape) for name, info in layout], tensors(), metadata=first.metadata or None
    )


def _weights_file(component: Path) -> Path:
    files = sorted(p for p in component.glob("*.safetensors") if not p.name.startswith("."))
    plain = [p for p in files if p.name.count(".") == 1]  # not diffusion_pytorch_model.fp16.safetensors
    chosen = plain or files
    if not chosen:
        raise MergeError(
            f"{component.parent.name}/{component.name} has no .safetensors weights; merging reads safetensors only "
            "(convert the model first)"
        )
    if len(chosen) > 1:
        raise MergeError(
            f"{component.parent.name}/{component.name} has sharded weights, which merging does not support"
        )
    return chosen[0]


def merge_diffusers(
    sources: list[Path], names: list[str], out: Path, *, alpha: float, interp: str, force: bool
) -> None:
    """Merge diffusers folders into a new folder `out`: UNet and text encoder(s) merged, the rest copied
    from the first model."""
    first = sources[0]
    components = [c for c in MERGED_COMPONENTS if (first / c).is_dir()]
    weights: dict[str, list[Path]] = {}
    for component in components:
        for source in sources:
            if not (source / component).is_dir():
                raise MergeError(f"`{names[sources.index(source)]}` has no {component}, which `{names[0]}` has")
        weights[component] = [_weights_file(source / component) for source in sources]
    out.mkdir(parents=True)
    for entry in first.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.name in components:
            (out / entry.name).mkdir()
            for part in entry.iterdir():
                if part.is_file() and not part.name.endswith((".safetensors", ".bin")):
                    shutil.copy2(part, out / entry.name / part.name)
        elif entry.is_dir():
            shutil.copytree(entry, out / entry.name)
        else:
            shutil.copy2(entry, out / entry.name)
    for component in components:
        files = weights[component]
        merge_file(
            files,
            names,
            out / component / files[0].name,
            alpha=alpha,
            interp=interp,
            force=force,
            what=component,
        )


def check_diffusers(sources: list[Path], names: list[str], force: bool) -> None:
    """Raise MergeError before anything is written when the models cannot be merged."""
    first = sources[0]
    for component in (c for c in MERGED_COMPONENTS if (first / c).is_dir()):
        files = []
        for name, source in zip(names, sources, strict=True):
            if not (source / component).is_dir():
                raise MergeError(f"`{name}` has no {component}, which `{names[0]}` has")
            files.append(_weights_file(source / component))
        if not force:
            headers = [safetensors_io.read_header(f) for f in files]
            found = mismatches(headers, names, set(headers[0].tensors), component)
            if found:
                _refuse(found)


def check_checkpoints(sources: list[Path], names: list[str], force: bool) -> None:
    headers = [safetensors_io.read_header(path) for path in sources]
    if force:
        return
    merged = {n for n in headers[0].tensors if n.startswith(MERGED_PREFIXES)}
    found = mismatches(headers, names, merged, "checkpoint")
    if found:
        _refuse(found)


def merge_checkpoints(
    sources: list[Path], names: list[str], out: Path, *, alpha: float, interp: str, force: bool
) -> None:
    """Merge single-file .safetensors checkpoints: UNet and text encoder tensors merged, the VAE and
    buffers from the first model, whose metadata (and so embedded configs) the result keeps."""
    merge_file(
        sources, names, out, alpha=alpha, interp=interp, force=force, what="checkpoint", prefixes=MERGED_PREFIXES
    )

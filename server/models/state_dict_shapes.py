"""Tensor names and shapes of a single weights file, without reading the weights: the safetensors header, or
for `.ckpt/.pt/.pth/.bin` a `torch.load(weights_only=True, mmap=True)` that maps the tensors instead of
reading them and refuses any pickle that would run code."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from server.models import safetensors_io
from server.models.probe_result import Incomplete, NotAModel, Unreadable, UnsafeFile


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a single weights file, without reading the weights. NotAModel if unreadable."""
    shapes, _, _ = read(path)
    return shapes


def read(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, Any]]:
    """Tensor name -> shape, string metadata, and other top-level values (e.g. `global_step`)."""
    if path.name.lower().endswith(".safetensors"):
        try:
            header = safetensors_io.read_header(path)
        except safetensors_io.IncompleteFile as exc:
            raise Incomplete(str(exc)) from None
        except safetensors_io.HeaderError as exc:
            raise NotAModel(str(exc)) from None
        return {name: info.shape for name, info in header.tensors.items()}, header.metadata, {}
    return _read_pickle(path)


def _read_pickle(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, Any]]:
    import pickle

    import torch

    if path.stat().st_size == 0:
        raise Incomplete(f"{path.name} is empty")
    is_zip = zipfile.is_zipfile(path)
    try:
        # weights_only: an untrusted pickle must never run code; mmap maps tensors instead of reading
        # them (zip-format files only; the legacy format is small-file territory anyway).
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names the global it refused to import ("Unsupported global: GLOBAL
        # pathlib.Path.touch", "...GLOBAL posix.system..."): the pickle wanted to call code.
        if "GLOBAL" in str(exc):
            raise UnsafeFile(
                f"{path.name} is a pickle that would run code when loaded, so it was refused; "
                "only files holding plain tensors are accepted (convert it to .safetensors with a tool you trust)"
            ) from None
        # torch's own first line advises loading with weights_only=False, which is not advice to pass on.
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise Unreadable(
            f"{path.name} could not be read as a PyTorch file of plain tensors"
            + (f": {reason[0]}" if reason else "")
            + "; it was not unpickled any further"
        ) from None
    except Exception as exc:
        # Untrusted bytes can make the unpickler fail any way at all (IndexError on a text file, ...).
        raise Unreadable(f"{path.name} could not be read as a PyTorch file: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise NotAModel(f"{path.name} holds a {type(data).__name__}, not a state dict")
    extra = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int | float | str)}
    metadata = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    state = data["state_dict"] if isinstance(data.get("state_dict"), dict) else data
    shapes: dict[str, tuple[int, ...]] = {}
    # Nested dicts are flattened one level down: A1111 embeddings keep theirs in string_to_param.<token>.
    _collect_shapes(state, "", shapes, torch.Tensor, depth=0)
    return shapes, metadata, extra


def _collect_shapes(tree: dict, prefix: str, out: dict[str, tuple[int, ...]], tensor_type: Any, depth: int) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, tensor_type):
            out[name] = tuple(value.shape)
        elif isinstance(value, dict) and depth < 2:
            _collect_shapes(value, name + ".", out, tensor_type, depth + 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""Reading the tensors of a weights file: safetensors, or a PyTorch pickle through `weights_only` (a pickle that
would run code is refused, never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any


class UnreadableWeights(Exception):
    """The file cannot be read as plain tensors; the message says why."""


def read_state_dict(path: Path) -> dict[str, Any]:
    """Every tensor in the file by name; a pickle's nested dicts (`state_dict`, A1111's `string_to_param`) are
    flattened with dots. Blocking: call it off the event loop."""
    if path.name.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise UnreadableWeights(f"{path.name} could not be read as safetensors: {exc}") from None
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise UnreadableWeights(f"{path.name} is not a file of plain tensors; it was refused: {exc}") from None
    except Exception as exc:
        raise UnreadableWeights(f"{path.name} could not be read: {exc}") from None
    if not isinstance(data, dict):
        raise UnreadableWeights(f"{path.name} holds a {type(data).__name__}, not tensors by name")
    if isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    flat: dict[str, Any] = {}
    _flatten(data, "", flat, torch.Tensor)
    return flat


def _flatten(tree: dict[Any, Any], prefix: str, out: dict[str, Any], tensor_type: type, depth: int = 0) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, tensor_type):
            out[name] = value
        elif isinstance(value, dict) and depth < 2:
            _flatten(value, name + ".", out, tensor_type, depth + 1)

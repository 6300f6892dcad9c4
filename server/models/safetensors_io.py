"""Reading a safetensors header without reading tensors, and writing a safetensors file one tensor at a time.

The header is untrusted input: its length, offsets and shapes are checked against the file's size before
anything is believed, and it is never allowed to make us allocate more than the file holds. (safetensors'
own `safe_open` would import torch for a header read, and reports a file that is still being copied the same
way as a corrupt one; sync needs to tell the two apart.)"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import torch

# Real headers are well under 10 MB (SDXL with every key: ~200 KB); anything bigger is a lie.
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class HeaderError(ValueError):
    """The file is not a valid safetensors file."""


class IncompleteFile(HeaderError):
    """The header is valid but the file is shorter than it says: still being written, or truncated."""


class TensorInfo(msgspec.Struct, frozen=True):
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class Header(msgspec.Struct, frozen=True):
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int  # byte offset of the data section in the file
    data_size: int

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.tensors.get(name)
        return info.shape if info is not None else None


def read_header(path: Path) -> Header:
    """The tensors' names, dtypes, shapes and offsets, and the `__metadata__`, from the header alone.

    Raises IncompleteFile when the file is shorter than its header says, HeaderError when it is not a
    safetensors file at all."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise IncompleteFile(f"{path.name} is {size} bytes, too short for a safetensors header")
        length = int.from_bytes(prefix, "little")
        # The messages do not repeat the length: through a symlink, it would show a client 8 bytes of any file.
        if length > MAX_HEADER_BYTES:
            raise HeaderError(
                f"{path.name}: its first 8 bytes are not a plausible header length; not a safetensors file"
            )
        if length + 8 > size:
            raise IncompleteFile(f"{path.name} is {size} bytes, shorter than its header says it is")
        raw = f.read(length)
    try:
        header = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise HeaderError(f"{path.name}: header is not JSON; not a safetensors file") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{path.name}: header is not a JSON object")
    metadata_raw = header.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict):
        raise HeaderError(f"{path.name}: __metadata__ is not an object")
    metadata = {str(k): v for k, v in metadata_raw.items() if isinstance(v, str)}
    tensors: dict[str, TensorInfo] = {}
    data_size = 0
    for name, entry in header.items():
        tensors[name] = info = _tensor_info(path, name, entry)
        data_size = max(data_size, info.end)
    # As safetensors itself requires when it loads: the tensors tile the data section, no overlap, no gap.
    end = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != end:
            raise HeaderError(f"{path.name}: tensors overlap or leave gaps between them; not a valid safetensors file")
        end = info.end
    data_start = 8 + length
    if data_start + data_size > size:
        raise IncompleteFile(
            f"{path.name} is {size} bytes but its header describes {data_start + data_size}; "
            "it is still being written or was truncated"
        )
    return Header(tensors=tensors, metadata=metadata, data_start=data_start, data_size=data_size)


def _tensor_info(path: Path, name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderError(f"{path.name}: tensor {name!r} is not described by an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise HeaderError(f"{path.name}: tensor {name!r} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise HeaderError(f"{path.name}: tensor {name!r} has an invalid shape")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise HeaderError(f"{path.name}: tensor {name!r} has invalid data offsets")
    if math.prod(shape) * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
        raise HeaderError(f"{path.name}: tensor {name!r} has a shape that does not match its byte size")
    return TensorInfo(dtype=dtype, shape=tuple(shape), start=offsets[0], end=offsets[1])


# ---------------------------------------------------------------------------------------------------
# Writing


_TORCH_DTYPE_NAMES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "float32": "F32",
    "int64": "I64",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


def torch_dtype_name(dtype: torch.dtype) -> str:
    return _TORCH_DTYPE_NAMES[str(dtype).removeprefix("torch.")]


def write_streaming(
    path: Path,
    layout: Iterable[tuple[str, str, tuple[int, ...]]],
    tensors: Iterator[torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file whose layout `(name, dtype, shape)` is known up front, taking the tensors
    from `tensors` one at a time in that order, so memory stays at one tensor whatever the file's size."""
    layout = list(layout)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in layout:
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for (name, dtype, shape), tensor in zip(layout, tensors, strict=True):
            if torch_dtype_name(tensor.dtype) != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{name}: got {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            # numpy has no bfloat16: write the raw bytes through an integer view of the same width.
            f.write(data.view(_byte_view_dtype(tensor)).numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())


def _byte_view_dtype(tensor: torch.Tensor) -> torch.dtype:
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]

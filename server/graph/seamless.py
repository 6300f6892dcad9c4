"""Seamless (tileable) images: while a UNet or VAE runs, its convolutions pad circularly along the chosen axes
instead of with zeros, so what leaves one edge comes back in at the other (A1111's `tiling`, InvokeAI's
`seamless`). Nothing is copied and the model is put back as it was when the block ends: the next session that
does not ask for it sees the ordinary model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

AXES = ("x", "y")


@contextlib.contextmanager
def tiled(model: Any, axes: Sequence[str]) -> Iterator[None]:
    if not axes:
        yield
        return
    import torch
    import torch.nn.functional as F

    wrap_x, wrap_y = "x" in axes, "y" in axes
    patched = []
    for conv in model.modules():
        if not isinstance(conv, torch.nn.Conv2d) or conv.padding_mode != "zeros" or conv.padding == (0, 0):
            continue
        left, right, top, bottom = conv._reversed_padding_repeated_twice

        def forward(inputs: Any, weight: Any, bias: Any, conv: Any = conv, pads=(left, right, top, bottom)) -> Any:
            left, right, top, bottom = pads
            inputs = F.pad(inputs, (left, right, 0, 0), mode="circular" if wrap_x else "constant")
            inputs = F.pad(inputs, (0, 0, top, bottom), mode="circular" if wrap_y else "constant")
            return F.conv2d(inputs, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

        conv._conv_forward = forward  # type: ignore[method-assign,assignment]  # removed after
        patched.append(conv)
    try:
        yield
    finally:
        for conv in patched:
            del conv._conv_forward

"""`offload: sequential`: a part's weights stay in RAM and stream to the device one layer at a time while it
runs (accelerate's `cpu_offload`, what diffusers' `enable_sequential_cpu_offload` uses), for cards of 4-6 GB
where even one UNet does not fit beside its activations.

Between runs the module's own parameters are placeholders on the `meta` device; the real ones sit in the
hooks' weights map. Code that asks a module for its `.device` (ours, compel's, diffusers') to place its inputs
must get the device it computes on, not `meta`: an offloaded module's class becomes a subclass of its own
whose `device` says so. Changes to a module's layers (a LoRA injected or removed, an embedding's rows) happen
with the hooks taken off (`hooks_removed`), which puts the real weights back first."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# Modules that load all their weights (their children's too) when they run, rather than per child: peft's
# LoRA, LoHa and LoKr layers keep some weights in children they never call (ParameterDicts) or read a child's
# weight directly; the plain torch layers of these names are leaves, for which it changes nothing.
_PRELOADED = ["Linear", "Conv2d", "Conv1d", "Embedding"]
_DEVICE = "_imagegraph_execution_device"
_OFFLOADED_CLASSES: dict[type, type] = {}


def offload_sequentially(module: Any, device: Any) -> Any:
    """Keep `module`'s weights in RAM and run it on `device`, a layer's weights there at a time."""
    from accelerate import cpu_offload

    module.to("cpu")
    cpu_offload(module, execution_device=device, preload_module_classes=_PRELOADED)
    module.__dict__[_DEVICE] = device
    module.__class__ = _offloaded_class(type(module))
    return module


def is_offloaded(module: Any) -> bool:
    return _DEVICE in getattr(module, "__dict__", {})


@contextlib.contextmanager
def hooks_removed(module: Any) -> Iterator[None]:
    """Run the block on `module` as it was before offloading (real weights in place, its own class, no hooks;
    a no-op for a module that is not offloaded); offloaded again afterwards, layers added in the block too."""
    if not is_offloaded(module):
        yield
        return
    from accelerate.hooks import remove_hook_from_module

    device = module.__dict__.pop(_DEVICE)
    module.__class__ = module.__class__.__bases__[0]
    remove_hook_from_module(module, recurse=True)
    try:
        yield
    finally:
        offload_sequentially(module, device)


def _offloaded_class(cls: type) -> type:
    offloaded = _OFFLOADED_CLASSES.get(cls)
    if offloaded is None:
        # The same name, so code that tells models apart by class name still does.
        namespace = {"device": property(lambda self: self.__dict__[_DEVICE]), "__module__": cls.__module__}
        offloaded = type(cls.__name__, (cls,), namespace)
        offloaded.__qualname__ = cls.__qualname__
        _OFFLOADED_CLASSES[cls] = offloaded
    return offloaded

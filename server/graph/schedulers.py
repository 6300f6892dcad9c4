"""Scheduler names of the contract. The diffusers classes behind them are imported only when a graph runs."""

from __future__ import annotations

from typing import Any

SCHEDULER_NAMES = ("ddim", "ddpm", "euler", "euler_a", "heun", "lms", "pndm", "dpmpp_2m", "dpmpp_2m_k", "unipc")

# name -> (diffusers class, config overrides). The model's own scheduler config gives the noise schedule
# (betas, prediction type, spacing); the overrides pin what the name promises, whatever the model shipped.
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "lms": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "pndm": ("PNDMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpmpp_2m_k": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
assert tuple(_SCHEDULERS) == SCHEDULER_NAMES


def make_scheduler(name: str, config: Any) -> Any:
    """A fresh diffusers scheduler for `name` from a model's scheduler config (schedulers keep per-run state,
    so every denoise gets its own)."""
    import diffusers

    class_name, overrides = _SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    return cls.from_config(dict(config), **overrides)


def scheduler_class_name(name: str) -> str:
    return _SCHEDULERS[name][0]

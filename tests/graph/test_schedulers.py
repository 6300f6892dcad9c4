"""Each scheduler name gives the diffusers scheduler a user of that name expects (the A1111/InvokeAI meaning),
whatever the model's own scheduler config says. The expectations are written out here, not read from the
mapping in server/graph/schedulers.py, so a wrong entry there fails this test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.graph.schedulers import SCHEDULER_NAMES, make_scheduler, scheduler_class_name

# name -> (diffusers class, config values the name promises)
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "lms": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "pndm": ("PNDMScheduler", {}),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    "dpmpp_2m_k": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
}

# What a model may ship that a name must override: Karras sigmas on, and DPM-Solver's first-order SDE variant.
SHIPPED_OTHERWISE = {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver"}
SHIPPED_PLAIN = {"use_karras_sigmas": False, "algorithm_type": "dpmsolver"}


def test_every_name_is_expected_here() -> None:
    assert set(SCHEDULER_NAMES) == set(EXPECTED)


@pytest.fixture(scope="module")
def model_config(tiny_model_files) -> dict[str, Any]:
    return json.loads((tiny_model_files["diffusers"] / "scheduler" / "scheduler_config.json").read_text())


@pytest.mark.parametrize("shipped", [{}, SHIPPED_OTHERWISE, SHIPPED_PLAIN], ids=["as-is", "karras-sde", "plain"])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_a_name_gives_the_scheduler_it_promises(model_config, name: str, shipped: dict[str, Any]) -> None:
    config = {**model_config, **shipped}
    scheduler = make_scheduler(name, config)
    class_name, promised = EXPECTED[name]
    assert type(scheduler).__name__ == class_name
    assert scheduler_class_name(name) == class_name
    for key, value in promised.items():
        assert scheduler.config[key] == value, (name, key)
    # The noise schedule is the model's own.
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type"):
        if key in model_config:
            assert scheduler.config[key] == model_config[key], (name, key)


def test_karras_sigmas_change_the_steps_taken(model_config) -> None:
    # Not only a flag: the _k variant really takes other steps than its plain twin.
    plain, karras = make_scheduler("dpmpp_2m", model_config), make_scheduler("dpmpp_2m_k", model_config)
    plain.set_timesteps(10)
    karras.set_timesteps(10)
    assert plain.timesteps.tolist() != karras.timesteps.tolist()

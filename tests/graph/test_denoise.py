"""The denoise loop and the VAE functions give what diffusers' own pipelines give, pixel for pixel, for the
same components, seed, scheduler and steps (the benchmark compares speed on that basis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compel import Compel

from server.graph.denoise import decode_latents, denoise, encode_image, make_noise
from server.graph.prompts import encode_prompt
from server.graph.schedulers import SCHEDULER_NAMES, make_scheduler

PROMPT = "a lighthouse at dusk"


@pytest.fixture(scope="module")
def embeddings(sd_pipeline):
    compel = Compel(tokenizer=sd_pipeline.tokenizer, text_encoder=sd_pipeline.text_encoder)
    with torch.inference_mode():
        return compel(PROMPT), compel("")


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def ours(sd_pipeline, embeddings, scheduler: str, seed: int, size: int = 64, steps: int = 4, cfg: float = 7.5):
    positive, negative = embeddings
    latents = denoise(
        unet=sd_pipeline.unet,
        scheduler=make_scheduler(scheduler, sd_pipeline.scheduler.config),
        positive=positive,
        negative=negative,
        noise=make_noise(seed, size, size),
        init_latents=None,
        steps=steps,
        cfg_scale=cfg,
        strength=1.0,
        seed=seed,
    )
    return decode_latents(sd_pipeline.vae, latents)


def theirs(sd_pipeline, scheduler: str, seed: int, size: int = 64, steps: int = 4, cfg: float = 7.5):
    original = sd_pipeline.scheduler
    sd_pipeline.scheduler = make_scheduler(scheduler, original.config)
    try:
        return sd_pipeline(
            PROMPT,
            negative_prompt="",
            num_inference_steps=steps,
            guidance_scale=cfg,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]
    finally:
        sd_pipeline.scheduler = original


def test_unweighted_compel_prompt_is_the_pipelines_embedding(sd_pipeline, embeddings):
    positive, negative = embeddings
    expected_positive, expected_negative = sd_pipeline.encode_prompt(PROMPT, "cpu", 1, True, "")
    assert torch.equal(positive, expected_positive)
    assert torch.equal(negative, expected_negative)


@pytest.mark.parametrize(
    "prompt", ["a lighthouse at dusk", "", "lighthouse, " * 60 + "the end", "ÉTÉ à l'île, 1920s photo; f/2.8"]
)
def test_plain_prompts_skip_compels_parser_with_the_same_result(sd_pipeline, prompt):
    compel = Compel(tokenizer=sd_pipeline.tokenizer, text_encoder=sd_pipeline.text_encoder, truncate_long_prompts=True)
    with torch.inference_mode():
        expected = compel(prompt)
    got = encode_prompt(prompt, sd_pipeline.tokenizer, sd_pipeline.text_encoder)
    assert torch.equal(got, expected)
    assert torch.equal(got, sd_pipeline.encode_prompt(prompt, "cpu", 1, False)[0])


def test_weighted_prompts_go_through_compel(sd_pipeline):
    compel = Compel(tokenizer=sd_pipeline.tokenizer, text_encoder=sd_pipeline.text_encoder, truncate_long_prompts=True)
    for prompt in ("a lighthouse++ at (dusk)1.3", "a [lighthouse]", '("dusk", "dawn").blend(0.5, 0.5)', "sci-fi"):
        with torch.inference_mode():
            assert torch.equal(
                encode_prompt(prompt, sd_pipeline.tokenizer, sd_pipeline.text_encoder), compel(prompt)
            ), prompt


def test_prompt_weighting_changes_the_embedding(sd_pipeline, embeddings):
    compel = Compel(tokenizer=sd_pipeline.tokenizer, text_encoder=sd_pipeline.text_encoder)
    with torch.inference_mode():
        weighted = compel("a lighthouse++ at (dusk)1.3")
    assert weighted.shape == embeddings[0].shape
    assert not torch.equal(weighted, embeddings[0])


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_same_pixels_as_stable_diffusion_pipeline(sd_pipeline, embeddings, scheduler):
    expected = pixels(theirs(sd_pipeline, scheduler, seed=42))
    got = pixels(ours(sd_pipeline, embeddings, scheduler, seed=42))
    assert got.shape == (64, 64, 3)
    assert np.array_equal(got, expected), f"{scheduler}: max difference {np.abs(got - expected).max()}"


def test_cfg_at_most_one_skips_guidance_like_the_pipeline(sd_pipeline, embeddings):
    assert np.array_equal(
        pixels(ours(sd_pipeline, embeddings, "euler", 7, cfg=1.0)), pixels(theirs(sd_pipeline, "euler", 7, cfg=1.0))
    )


def test_seed_decides_the_image(sd_pipeline, embeddings):
    first = pixels(ours(sd_pipeline, embeddings, "euler", seed=1))
    again = pixels(ours(sd_pipeline, embeddings, "euler", seed=1))
    other = pixels(ours(sd_pipeline, embeddings, "euler", seed=2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_img2img_strength_zero_returns_the_input_latents(sd_pipeline, embeddings):
    image = ours(sd_pipeline, embeddings, "euler", seed=3)
    init = encode_image(sd_pipeline.vae, image)
    positive, negative = embeddings
    common = dict(unet=sd_pipeline.unet, positive=positive, negative=negative, noise=make_noise(9, 64, 64), steps=4)
    kept = denoise(
        **common,
        scheduler=make_scheduler("euler", sd_pipeline.scheduler.config),
        init_latents=init,
        cfg_scale=7.5,
        strength=0.0,
        seed=9,
    )
    assert torch.equal(kept, init)
    changed = denoise(
        **common,
        scheduler=make_scheduler("euler", sd_pipeline.scheduler.config),
        init_latents=init,
        cfg_scale=7.5,
        strength=0.5,
        seed=9,
    )
    assert changed.shape == init.shape and not torch.equal(changed, init)


def test_progress_and_stop_between_steps(sd_pipeline, embeddings):
    positive, negative = embeddings
    seen = []

    class Stop(Exception):
        pass

    def before():
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        denoise(
            unet=sd_pipeline.unet,
            scheduler=make_scheduler("euler", sd_pipeline.scheduler.config),
            positive=positive,
            negative=negative,
            noise=make_noise(0, 64, 64),
            init_latents=None,
            steps=6,
            cfg_scale=7.5,
            strength=1.0,
            seed=0,
            before_step=before,
            after_step=lambda step, total, latents: seen.append((step, total, tuple(latents.shape))),
        )
    assert seen == [(1, 6, (1, 4, 8, 8)), (2, 6, (1, 4, 8, 8))]

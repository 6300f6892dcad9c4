"""A1111's prompt syntax (editing, alternation, attention, BREAK, LoRA tags) and the per-step conditioning
schedule it runs on: parsed as A1111 parses it, and generating what a person would expect."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import pytest
from PIL import Image

from server.graph.standard import GenerationSettings, build_graph
from server.graph.standard.a1111_prompt import (
    LoraTag,
    extract_loras,
    mark_embeddings,
    parse_attention,
    prompt_schedule,
    schedule,
    to_compel,
)
from tests.graph.conftest import MODEL, run_graph

COMPLEX = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"


def test_the_schedule_of_a1111s_own_example():
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


def test_alternation_changes_every_step_and_editing_at_its_step():
    assert prompt_schedule("a [cat|dog]", 4) == [(1, "a cat"), (2, "a dog"), (3, "a cat"), (4, "a dog")]
    assert prompt_schedule("a [cat:dog:2]", 4) == [(2, "a cat"), (4, "a dog")]
    assert prompt_schedule("[to:1] [from::2]", 4) == [(1, " from"), (2, "to from"), (4, "to ")]
    # Brackets that are no editing stay for the attention syntax; a weight's colon is no separator.
    assert prompt_schedule("[word] [(big:1.2):small:0.5]", 10) == [(5, "[word] (big:1.2)"), (10, "[word] small")]
    assert len(prompt_schedule(COMPLEX, 6)) == 6
    # until fractions: an entry ending at step e of S lasts while the 0-based step is <= e.
    assert schedule("a [cat:dog:2]", 4) == [(0.75, "a cat"), (1.0, "a dog")]
    # Ending at the next-to-last step covers the last: the entry after it is never used.
    assert schedule("a [cat|dog]", 3) == [(2 / 3, "a cat"), (1.0, "a dog")]


def test_when_with_a_decimal_point_is_a_fraction_without_one_a_step():
    # A1111 1.6+ (its default; "old scheduling" read anything below 1 as a fraction).
    assert prompt_schedule("[a:b:1.0]", 10) == [(10, "a")]  # all the steps: no switch
    assert prompt_schedule("[a:b:1]", 10) == [(1, "a"), (10, "b")]  # step 1
    assert prompt_schedule("[a:b:.5]", 10) == prompt_schedule("[a:b: 0.5 ]", 10) == [(5, "a"), (10, "b")]
    assert prompt_schedule("[a:b:0]", 10) == prompt_schedule("[a:b:-1]", 10) == [(10, "b")]
    assert prompt_schedule("[a:b:x]", 10) == [(10, "[a:b:x]")]  # no number: brackets for the attention syntax


def test_a_hires_pass_has_a_schedule_over_its_own_steps():
    # A1111's examples: a fraction counts from 1 over the second pass, a step number from the first pass's end.
    assert prompt_schedule("a [b:.5] c", 10, first_pass_steps=10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, first_pass_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert prompt_schedule("[a:b:25]", 10, first_pass_steps=20) == [(5, "a"), (10, "b")]
    settings = {"model": MODEL, "prompt": "[red cat:blue dog:0.5] [sky:sea:1.5]", "steps": 4, "seed": 1}
    hires = {"scale": 2, "strength": 0.8, "steps": 10}
    graph = build_graph(msgspec.convert({**settings, "prompt_syntax": "a1111", "hires": hires}, GenerationSettings))
    nodes, edges = graph["nodes"], graph["edges"]
    wired = {
        e["destination"]["field"]: e["source"]["node_id"]
        for e in edges
        if e["destination"]["node_id"] == "hires_denoise"
    }
    assert wired["positive_conditioning"] == "hires_pos" and wired["negative_conditioning"] == "neg"
    # The hires pass runs 8 of its 10 steps, counted from 0 against the schedule over all 10 (as A1111's): `sky`
    # to its step 5, then `sea`; `red cat` ended with the first pass.
    assert nodes["hires_pos"]["until"] == [0.75, 1.0]
    assert [nodes[f"hires_pos_{i}"]["prompt"] for i in (1, 2)] == ["blue dog sky", "blue dog sea"]
    assert nodes["pos"]["until"] == [0.75, 1.0] and nodes["pos_1"]["prompt"] == "red cat sky"
    # Without editing, the hires pass takes the first pass's conditioning.
    plain = build_graph(
        msgspec.convert({**settings, "prompt": "a cat", "prompt_syntax": "a1111", "hires": hires}, GenerationSettings)
    )
    assert "hires_pos" not in plain["nodes"]


def test_image_to_image_counts_the_steps_it_runs_against_the_whole_schedule():
    settings = {"model": MODEL, "prompt": "[a:b:0.25]", "steps": 20, "seed": 1, "prompt_syntax": "a1111"}
    graph = build_graph(msgspec.convert({**settings, "init_image": "x.png", "strength": 0.5}, GenerationSettings))
    # 10 steps run; `a` to step 5 of 20, so for the first 6 of them.
    assert graph["nodes"]["pos"]["until"] == [0.6, 1.0]
    assert schedule("[a:b:0.25]", 20) == [(0.3, "a"), (1.0, "b")]


def test_attention_weights_as_a1111_computes_them():
    assert parse_attention("a (b) ((c)) [d] (e:1.5) \\(f\\)") == [
        ("a ", 1.0),
        ("b", pytest.approx(1.1)),
        (" ", 1.0),
        ("c", pytest.approx(1.21)),
        (" ", 1.0),
        ("d", pytest.approx(1 / 1.1)),
        (" ", 1.0),
        ("e", 1.5),
        (" (f)", 1.0),
    ]
    assert parse_attention("unclosed (word") == [("unclosed ", 1.0), ("word", pytest.approx(1.1))]
    assert to_compel("a (b:1.5) \\(c\\)") == "a (b)1.5 \\(c\\)"
    assert to_compel("one BREAK two") == '("one", "two").and()'


def test_lora_tags_and_embedding_names():
    text, tags = extract_loras("a cat <lora:film grain:0.6> <lyco:style> <lora:neg:-1:0.5>")
    assert tags == [LoraTag("film grain", 0.6), LoraTag("style", 1.0), LoraTag("neg", -1.0)]
    assert "<" not in text
    assert mark_embeddings("bad_hands, bad_handsome, (bad_hands:1.2)", {"bad_hands"}) == (
        "<bad_hands>, bad_handsome, (<bad_hands>:1.2)"
    )


def generate(client, recorder, prompt: str, negative: str = "", syntax: str = "a1111") -> np.ndarray:
    settings = {
        "model": MODEL,
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": 3,
        "width": 64,
        "height": 64,
        "steps": 4,
        "prompt_syntax": syntax,
        "metadata": False,
    }
    session = run_graph(client, recorder, build_graph(msgspec.convert(settings, GenerationSettings)))
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]
    png = client.get(f"/api/v1/images/{name}/full").content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_prompt_editing_gives_an_image_of_its_own(generation):
    cat, dog = generate(*generation, "a red cat"), generate(*generation, "a blue dog")
    # 4 steps: the first two with one prompt, the last two with the other.
    edited = generate(*generation, "a [red cat:blue dog:0.25]")
    to_cat, to_dog = np.abs(edited - cat).mean(), np.abs(edited - dog).mean()
    assert to_cat > 0.05 and to_dog > 0.05
    # The first steps set the composition: the edit stays nearer the prompt it starts with.
    assert to_cat < to_dog
    # The same text in every entry is the plain prompt: the schedule itself changes nothing.
    assert np.array_equal(generate(*generation, "a [red cat:red cat:0.5]"), cat)


def test_a1111_weights_go_through_compel(generation):
    plain = generate(*generation, "a (red:1.4) cat", syntax="a1111")
    same = generate(*generation, "a (red)1.4 cat", syntax="compel")
    assert np.array_equal(plain, same)


def test_a_long_or_broken_prompt_is_padded_against_a_short_negative(generation):
    broken = generate(*generation, "a red cat BREAK a blue sky", negative="blurry")
    assert broken.shape == (64, 64, 3)
    assert np.abs(broken - generate(*generation, "a red cat, a blue sky", negative="blurry")).mean() > 0.5
    long_prompt = ", ".join(["a red cat in the garden"] * 20)
    assert generate(*generation, long_prompt, negative="blurry").shape == (64, 64, 3)


# tiling (A1111's `tiling`, our `seamless` node)


def test_seamless_models_wrap_around_and_are_put_back(tiny_model_files):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from server.graph.seamless import tiled

    vae = AutoencoderKL.from_pretrained(tiny_model_files["diffusers"], subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(tiny_model_files["diffusers"], subfolder="unet")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))

    def decode(x):
        with torch.inference_mode():
            return vae.decode(x).sample

    def predict(x):
        with torch.inference_mode():
            return unet(x, 10, encoder_hidden_states=text).sample

    shifted = torch.roll(latents, shifts=(2, 4), dims=(2, 3))
    with tiled(vae, ("x", "y")), tiled(unet, ("x", "y")):
        # Wrapping convolutions make the models shift-equivariant: what leaves one edge enters at the other.
        assert torch.allclose(decode(shifted), torch.roll(decode(latents), (16, 32), (2, 3)), atol=1e-4)
        assert torch.allclose(predict(shifted), torch.roll(predict(latents), (2, 4), (2, 3)), atol=1e-4)
    # Back to zero padding: the edges no longer wrap.
    assert not torch.allclose(decode(shifted), torch.roll(decode(latents), (16, 32), (2, 3)), atol=1e-2)
    assert not any("_conv_forward" in vars(m) for m in vae.modules())


def test_a_tiled_generation_differs_and_the_next_one_is_plain_again(generation):
    plain = generate(*generation, "a red cat")
    client, recorder = generation
    settings = {"model": MODEL, "prompt": "a red cat", "seed": 3, "width": 64, "height": 64, "steps": 4, "tiling": True}
    graph = build_graph(msgspec.convert({**settings, "metadata": False}, GenerationSettings))
    assert graph["nodes"]["seamless"]["type"] == "seamless"
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]
    tiled_image = np.asarray(Image.open(io.BytesIO(client.get(f"/api/v1/images/{name}/full").content)).convert("RGB"))
    assert np.abs(tiled_image.astype(np.int16) - plain).mean() > 0.5
    assert np.array_equal(generate(*generation, "a red cat"), plain)

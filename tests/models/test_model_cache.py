"""The model cache on its own, with small real torch modules: its byte budgets hold to the byte, the least
recently used part goes (or, on a device, moves to RAM) first, the running node's parts stay where they are, and
`estimated_bytes` reads what a part will take from its safetensors headers."""

from __future__ import annotations

import os
import platform

import pytest
import torch
from safetensors.torch import save_file

from server.models.model_cache import CacheTier, ModelCache, estimated_bytes

GiB = 1024**3


def weights(floats: int) -> torch.nn.Module:
    """A part holding exactly `floats` float32 weights."""
    return torch.nn.Linear(floats, 1, bias=False)


def nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def key(submodel: str) -> tuple:
    """A key as the loader makes it: (model key, submodel, path, mtime)."""
    return ("sd-1/main/tiny", submodel, "/models/tiny", 1_700_000_000.0)


def cached(cache: ModelCache) -> list[str]:
    """The submodels in the cache, least recently used first."""
    return [k[1] for k in cache.cached_keys()]


def tiers(cache: ModelCache) -> dict[str, str]:
    return {part.submodel: part.tier for part in cache.state(0, 0).parts}


# One tier (the CPU): RAM


def test_a_part_that_exactly_fits_is_kept_and_one_byte_more_makes_the_oldest_leave():
    unet, vae = weights(300), weights(100)
    a, b = nbytes(unet), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=a + b)
    cache.put(key("unet"), unet)
    cache.put(key("vae"), vae)
    assert cached(cache) == ["unet", "vae"] and cache.ram_bytes == a + b  # exactly the budget
    cache.begin_node()
    cache.make_room(1)  # a part of one byte to read: the least recently used part leaves first
    assert cached(cache) == ["vae"] and cache.ram_bytes == b
    cache.make_room(a)  # fits beside the VAE exactly
    assert cached(cache) == ["vae"]
    cache.make_room(a + 1)
    assert cached(cache) == [] and cache.ram_bytes == 0
    state = cache.state(0, 0)
    assert state.ram == CacheTier(bytes=0, limit_bytes=a + b, parts=0) and state.vram is None


def test_the_running_nodes_parts_stay_until_the_next_node_begins():
    unet, vae = weights(300), weights(100)
    a, b = nbytes(unet), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=a + b)
    cache.put(key("unet"), unet)
    cache.put(key("vae"), vae)
    cache.make_room(a + b)  # room for a part as big as the budget: but both belong to the running node
    assert cached(cache) == ["unet", "vae"]
    cache.begin_node()
    assert cache.get(key("vae")) is vae  # the next node uses the VAE: it stays, the UNet may go
    cache.make_room(a + b)
    assert cached(cache) == ["vae"] and cache.ram_bytes == b


def test_using_a_part_makes_it_the_most_recently_used():
    unet, text_encoder, vae = weights(300), weights(200), weights(100)
    a, b, c = nbytes(unet), nbytes(text_encoder), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=a + b + c - 1)
    cache.put(key("unet"), unet)
    cache.put(key("text_encoder"), text_encoder)
    assert cache.get(key("unet")) is unet
    cache.put(key("vae"), vae)
    assert cached(cache) == ["unet", "vae"] and cache.ram_bytes == a + c


def test_the_newest_part_stays_even_when_it_alone_is_over_the_budget():
    unet, vae = weights(300), weights(100)
    a, b = nbytes(unet), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=b)
    cache.put(key("vae"), vae)
    cache.put(key("unet"), unet)  # over the budget on its own: the VAE leaves, the UNet stays for its node
    assert cached(cache) == ["unet"] and cache.ram_bytes == a
    cache.put(key("vae"), vae)
    assert cached(cache) == ["vae"] and cache.ram_bytes == b


def test_putting_a_part_again_counts_it_once():
    # A checkpoint read again for a part that left puts the parts still cached again, under the same keys.
    first, again = weights(300), weights(200)
    cache = ModelCache(ram_limit_bytes=GiB)
    cache.put(key("unet"), first)
    cache.put(key("unet"), again)
    assert cached(cache) == ["unet"] and cache.ram_bytes == nbytes(again)
    assert cache.get(key("unet")) is again


def test_a_part_counts_its_parameters_and_buffers_and_a_tokenizer_nothing():
    norm = torch.nn.BatchNorm1d(8)  # weight and bias; running mean and variance, an int64 step count
    expected = sum(t.numel() * t.element_size() for t in [*norm.parameters(), *norm.buffers()])
    assert expected == 4 * 8 * 4 + 8
    cache = ModelCache(ram_limit_bytes=GiB)
    cache.put(key("norm"), norm)
    cache.put(key("tokenizer"), {"vocab": {"a": 0, "lighthouse": 1}})
    state = cache.state(loads=2, hits=0)
    assert {part.submodel: part.bytes for part in state.parts} == {"norm": expected, "tokenizer": 0}
    assert state.ram == CacheTier(bytes=expected, limit_bytes=GiB, parts=2)
    assert [(part.model, part.device) for part in state.parts] == [("sd-1/main/tiny", "cpu")] * 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and /proc/self/statm: Linux with glibc")
def test_memory_a_part_held_goes_back_to_the_system_when_it_leaves():
    """Without handing freed pages back (malloc_trim), the process would keep the peak of every model it held."""

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    # 32 MiB in tensors of 16 KiB, which come from the heap (not a mapping of their own), and a part made after.
    big = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(4096)) for _ in range(2000))
    small = weights(100)
    big_bytes = nbytes(big)
    cache = ModelCache(ram_limit_bytes=nbytes(small))
    cache.put(key("unet"), big)
    cache.put(key("vae"), small)
    assert cached(cache) == ["vae"]
    del big
    before = resident()
    cache.begin_node()
    assert before - resident() > big_bytes // 2


# Two tiers: the device (here the CPU, so every move is a real `.to()`) and RAM


def test_the_device_tier_moves_the_least_recently_used_part_to_ram_at_its_exact_limit():
    unet, vae = weights(300), weights(100)
    a, b = nbytes(unet), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=GiB)
    cache.use_device(torch.device("cpu"), vram_limit_bytes=a + b)
    cache.put(key("unet"), unet)
    cache.put(key("vae"), vae)
    state = cache.state(0, 0)
    assert tiers(cache) == {"unet": "vram", "vae": "vram"}  # exactly the device's budget
    assert state.vram == CacheTier(bytes=a + b, limit_bytes=a + b, parts=2)
    assert state.ram == CacheTier(bytes=0, limit_bytes=GiB, parts=0)
    assert (cache.moves_to_ram, cache.moves_to_device) == (0, 0)
    cache.begin_node()

    cache.make_room(1)  # one byte more than the device holds: the UNet waits in RAM
    assert tiers(cache) == {"unet": "ram", "vae": "vram"}
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram) == (b, a, 1)
    cache.make_room(a)  # fits beside the VAE exactly
    assert tiers(cache) == {"unet": "ram", "vae": "vram"} and cache.moves_to_ram == 1
    cache.make_room(a + 1)
    assert tiers(cache) == {"unet": "ram", "vae": "ram"}
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram) == (0, a + b, 2)
    state = cache.state(0, 0)
    assert state.vram == CacheTier(bytes=0, limit_bytes=a + b, parts=0)
    assert state.ram == CacheTier(bytes=a + b, limit_bytes=GiB, parts=2)

    # Used again: back on the device, without a read from disk; moved, never evicted.
    assert cache.get(key("unet")) is unet
    assert tiers(cache) == {"unet": "vram", "vae": "ram"}
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram, cache.moves_to_device) == (a, b, 2, 1)
    assert cache.get(key("unet")) is unet  # already there: no move
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram, cache.moves_to_device) == (a, b, 2, 1)
    assert cached(cache) == ["vae", "unet"]


def test_the_running_nodes_parts_never_move_off_the_device():
    unet, text_encoder, vae = weights(300), weights(200), weights(100)
    a, b, c = nbytes(unet), nbytes(text_encoder), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=GiB)
    cache.use_device(torch.device("cpu"), vram_limit_bytes=b + c)
    cache.put(key("unet"), unet)
    cache.put(key("text_encoder"), text_encoder)
    # Both belong to the running node: together over the device's budget, neither moves, not even for room.
    cache.make_room(b + c)
    assert tiers(cache) == {"unet": "vram", "text_encoder": "vram"}
    assert (cache.device_bytes, cache.moves_to_ram) == (a + b, 0)
    cache.begin_node()
    cache.put(key("vae"), vae)  # the UNet, least recently used, makes room; the rest fits exactly
    assert tiers(cache) == {"unet": "ram", "text_encoder": "vram", "vae": "vram"}
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram) == (b + c, a, 1)


def test_the_memory_route_names_the_device_a_part_is_on():
    unet, vae = weights(300), weights(100)
    cache = ModelCache(ram_limit_bytes=GiB)
    # The cache records where the loader put a part. Only moves to RAM happen here, so no GPU is needed.
    cache.use_device(torch.device("cuda", 0), vram_limit_bytes=nbytes(vae))
    cache.put(key("unet"), unet)
    cache.begin_node()
    cache.put(key("vae"), vae)
    state = cache.state(0, 0)
    assert state.device == "cuda:0"
    assert [(part.submodel, part.device, part.tier) for part in state.parts] == [
        ("unet", "cpu", "ram"),
        ("vae", "cuda:0", "vram"),
    ]


def test_parts_without_weights_stay_in_ram_and_never_move():
    unet, vae = weights(300), weights(100)
    a, b = nbytes(unet), nbytes(vae)
    cache = ModelCache(ram_limit_bytes=GiB)
    # `offload: model`: the device keeps only the running node's parts.
    cache.use_device(torch.device("cpu"), vram_limit_bytes=0)
    cache.put(key("tokenizer"), {"vocab": {"a": 0}})
    cache.put(key("scheduler"), torch.nn.Identity())  # a module, but without weights
    cache.put(key("unet"), unet)
    assert tiers(cache) == {"tokenizer": "ram", "scheduler": "ram", "unet": "vram"}
    assert (cache.device_bytes, cache.ram_bytes) == (a, 0)
    cache.begin_node()
    cache.put(key("vae"), vae)
    assert tiers(cache) == {"tokenizer": "ram", "scheduler": "ram", "unet": "ram", "vae": "vram"}
    assert (cache.device_bytes, cache.ram_bytes, cache.moves_to_ram) == (b, a, 1)
    cache.begin_node()
    # A node that uses only the tokenizer: it stays in RAM, and the VAE leaves the device it no longer needs.
    assert cache.get(key("tokenizer")) == {"vocab": {"a": 0}}
    assert set(tiers(cache).values()) == {"ram"}
    assert (cache.moves_to_ram, cache.moves_to_device) == (2, 0)


# estimated_bytes: what a part will take once loaded, before it is read


def test_a_checkpoint_is_estimated_at_the_dtype_it_loads_in(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "conv.weight": torch.zeros(3, 4, dtype=torch.float16),
            "norm.weight": torch.zeros(5, dtype=torch.bfloat16),
            # FP8 weights are floating too: diffusers casts them to the dtype it loads in.
            "proj.weight": torch.zeros(4, dtype=torch.float8_e4m3fn),
            "proj.bias": torch.zeros(2, dtype=torch.float8_e5m2),
            # Integer tensors keep their own type: 8 bytes each for int64, 4 for int32.
            "position_ids": torch.zeros(3, dtype=torch.int64),
            "step": torch.tensor(7),
            "nothing": torch.zeros(0, dtype=torch.int64),
            "token_ids": torch.zeros(2, 5, dtype=torch.int32),
        },
        path,
    )
    integers = 3 * 8 + 8 + 0 + 10 * 4
    floats = 12 + 5 + 4 + 2
    assert estimated_bytes(path, None, torch.float32) == floats * 4 + integers
    assert estimated_bytes(path, None, torch.float16) == floats * 2 + integers


def test_a_diffusers_part_is_estimated_from_all_its_shards(tmp_path):
    unet = tmp_path / "tiny" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text("{}")
    save_file({"a": torch.zeros(10, dtype=torch.float16)}, unet / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file(
        {"b": torch.zeros(6), "ids": torch.zeros(2, dtype=torch.int64)},
        unet / "diffusion_pytorch_model-00002-of-00002.safetensors",
    )
    assert estimated_bytes(tmp_path / "tiny", "unet", torch.float16) == 16 * 2 + 2 * 8
    assert estimated_bytes(tmp_path / "tiny", "unet", torch.float32) == 16 * 4 + 2 * 8
    assert estimated_bytes(tmp_path / "tiny", "vae", torch.float16) == 0  # no such part


def test_an_unknown_or_unreadable_part_is_estimated_at_zero(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(4)}}, tmp_path / "model.ckpt")
    assert estimated_bytes(tmp_path / "model.ckpt", None, torch.float32) == 0
    (tmp_path / "pickle.safetensors").write_bytes((tmp_path / "model.ckpt").read_bytes())
    assert estimated_bytes(tmp_path / "pickle.safetensors", None, torch.float32) == 0

    unet = tmp_path / "tiny" / "unet"
    unet.mkdir(parents=True)
    save_file({"a": torch.zeros(10)}, unet / "diffusion_pytorch_model-00001-of-00002.safetensors")
    damaged = unet / "diffusion_pytorch_model-00002-of-00002.safetensors"
    garbage = b'{"b": {"dtype": "F32", "sha'
    damaged.write_bytes(len(garbage).to_bytes(8, "little") + garbage)
    # One shard unreadable makes the whole part unknown, rather than an estimate too small.
    assert estimated_bytes(tmp_path / "tiny", "unet", torch.float32) == 0
    # A shard whose link into the Hugging Face cache dangles.
    damaged.unlink()
    damaged.symlink_to(tmp_path / "blobs" / "gone")
    assert estimated_bytes(tmp_path / "tiny", "unet", torch.float32) == 0

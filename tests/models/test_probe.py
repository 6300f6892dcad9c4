"""The probe recognises models from their headers and configs alone, and refuses what it must not read."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest

from server.models import probe
from server.models.safetensors_io import HeaderError, IncompleteFile, read_header
from tests.models.conftest import main_checkpoint_shapes, write_safetensors


@pytest.mark.parametrize("fmt", ["diffusers", "checkpoint", "ckpt"])
def test_tiny_model_in_every_format_is_an_sd1_main_model(tiny_model_files: dict[str, Path], fmt: str) -> None:
    result = probe.probe(tiny_model_files[fmt])
    assert (result.base_model, result.model_type, result.variant) == ("sd-1", "main", "normal")
    assert result.model_format == ("diffusers" if fmt == "diffusers" else "checkpoint")
    assert result.prediction_type == "epsilon"
    assert result.config == (None if fmt == "diffusers" else "stable-diffusion/v1-inference.yaml")


@pytest.mark.parametrize(
    ("context", "text", "in_channels", "base", "variant", "config"),
    [
        (768, "sd-1", 4, "sd-1", "normal", "stable-diffusion/v1-inference.yaml"),
        (768, "sd-1", 9, "sd-1", "inpaint", "stable-diffusion/v1-inpainting-inference.yaml"),
        (1024, "sd-2", 4, "sd-2", "normal", "stable-diffusion/v2-inference-v.yaml"),
        (1024, "sd-2", 9, "sd-2", "inpaint", "stable-diffusion/v2-inpainting-inference.yaml"),
        (1024, "sd-2", 5, "sd-2", "depth", None),
        (2048, "sdxl", 4, "sdxl", "normal", "stable-diffusion/sd_xl_base.yaml"),
        (1280, "sdxl-refiner", 4, "sdxl-refiner", "normal", "stable-diffusion/sd_xl_refiner.yaml"),
    ],
)
def test_checkpoint_base_and_variant_from_tensor_shapes(
    tmp_path: Path, context: int, text: str, in_channels: int, base: str, variant: str, config: str | None
) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", main_checkpoint_shapes(context, in_channels, text))
    result = probe.probe(path)
    assert (result.base_model, result.model_type, result.variant, result.config) == (base, "main", variant, config)


def test_sd2_prediction_type_guess_and_override(tmp_path: Path) -> None:
    shapes = main_checkpoint_shapes(1024, text="sd-2")
    v_model = write_safetensors(tmp_path / "v2-1_768-ema-pruned.safetensors", shapes)
    base_model = write_safetensors(tmp_path / "v2-1_512-base.safetensors", shapes)
    assert probe.probe(v_model).prediction_type == "v_prediction"
    assert probe.probe(base_model).prediction_type == "epsilon"
    assert probe.probe(base_model).config == "stable-diffusion/v2-inference.yaml"
    overridden = probe.probe(v_model, prediction_type="epsilon")
    assert (overridden.prediction_type, overridden.config) == ("epsilon", "stable-diffusion/v2-inference.yaml")


def test_sibling_yaml_is_the_checkpoint_config(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "custom.safetensors", main_checkpoint_shapes(768))
    (tmp_path / "custom.yaml").write_text("model: {}\n")
    assert probe.probe(path).config == str(tmp_path / "custom.yaml")


@pytest.mark.parametrize(
    ("shapes", "model_type", "base", "fmt"),
    [
        (
            {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": [4, 768]},
            "lora",
            "sd-1",
            "lycoris",
        ),
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1024]}, "lora", "sd-2", "lycoris"),
        ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1280]}, "lora", "sdxl", "lycoris"),
        # diffusers/PEFT keys, a LyCORIS LoHa: the cross-attention key's input width tells the base
        (
            {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": [4, 1024]},
            "lora",
            "sd-2",
            "lycoris",
        ),
        (
            {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b": [4, 768]},
            "lora",
            "sd-1",
            "lycoris",
        ),
        (
            {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w2_b": [4, 2048]},
            "lora",
            "sdxl",
            "lycoris",
        ),
        ({"encoder.conv_in.weight": [8, 3, 3, 3], "decoder.conv_in.weight": [8, 4, 3, 3]}, "vae", "sd-1", "checkpoint"),
        ({"emb_params": [2, 768]}, "embedding", "sd-1", "embedding_file"),
        ({"emb_params": [2, 1024]}, "embedding", "sd-2", "embedding_file"),
        ({"clip_l": [2, 768], "clip_g": [2, 1280]}, "embedding", "sdxl", "embedding_file"),
        (
            {
                "control_model.input_hint_block.0.weight": [16, 3, 3, 3],
                "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [32, 1024],
            },
            "controlnet",
            "sd-2",
            "checkpoint",
        ),
    ],
)
def test_other_model_types_from_their_tensor_names(
    tmp_path: Path, shapes: dict, model_type: str, base: str, fmt: str
) -> None:
    result = probe.probe(write_safetensors(tmp_path / "m.safetensors", shapes))
    assert (result.model_type, result.base_model, result.model_format) == (model_type, base, fmt)


def test_folder_hint_settles_what_the_weights_cannot(tmp_path: Path) -> None:
    vae = write_safetensors(
        tmp_path / "vae.safetensors", {"encoder.conv_in.weight": [8, 3, 3, 3], "decoder.conv_in.weight": [8, 4, 3, 3]}
    )
    assert probe.probe(vae, hint_base="sdxl").base_model == "sdxl"
    # The context width is definite: a hint never overrides it.
    sd2 = write_safetensors(tmp_path / "sd2.safetensors", main_checkpoint_shapes(1024, text="sd-2"))
    assert probe.probe(sd2, hint_base="sd-1").base_model == "sd-2"


def test_diffusers_component_folders(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    vae = probe.probe(tiny_model_files["diffusers"] / "vae")
    assert (vae.model_type, vae.model_format, vae.base_model) == ("vae", "diffusers", "sd-1")
    with pytest.raises(probe.NotAModel, match="UNet2DConditionModel"):
        probe.probe(tiny_model_files["diffusers"] / "unet")
    controlnet = tmp_path / "cn"
    controlnet.mkdir()
    (controlnet / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "cross_attention_dim": 768}))
    assert probe.probe(controlnet).model_type == "controlnet"


def test_pipeline_folder_with_a_missing_component_is_incomplete(tmp_path: Path, tiny_model_files) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(tiny_model_files["diffusers"], folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(probe.Incomplete, match="vae"):
        probe.probe(folder)


def test_other_pipelines_and_plain_folders_are_not_models(tmp_path: Path) -> None:
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(probe.NotAModel, match="FluxPipeline"):
        probe.probe(other)
    plain = tmp_path / "photos"
    plain.mkdir()
    with pytest.raises(probe.NotAModel, match=r"model_index\.json"):
        probe.probe(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(probe.NotAModel, match="not a model file"):
        probe.probe(text)


def test_unrecognised_tensors_are_refused(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "random.safetensors", {"a.weight": [3, 3], "b.weight": [3], "c.bias": [2]})
    with pytest.raises(probe.NotAModel, match="not a model we recognise"):
        probe.probe(path)


class _TouchOnUnpickle:
    """Unpickling this with an unrestricted loader creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path: Path, tiny_model_files) -> None:
    import torch

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    state_dict = torch.load(tiny_model_files["ckpt"], weights_only=True)["state_dict"]
    torch.save({"state_dict": state_dict, "payload": _TouchOnUnpickle(marker)}, evil)
    with pytest.raises(probe.UnsafeFile, match="would run code"):
        probe.probe(evil)
    assert not marker.exists(), "probing a .ckpt ran code from its pickle"


def test_truncated_files_are_incomplete(tmp_path: Path, tiny_model_files) -> None:
    data = tiny_model_files["checkpoint"].read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(probe.Incomplete, match="still being written or was truncated"):
        probe.probe(half)
    ckpt = tiny_model_files["ckpt"].read_bytes()
    half_ckpt = tmp_path / "half.ckpt"
    half_ckpt.write_bytes(ckpt[: len(ckpt) // 2])
    with pytest.raises(probe.Unreadable):
        probe.probe(half_ckpt)


def _lying(path: Path, header: bytes, length: int | None = None, tail: bytes = b"") -> Path:
    path.write_bytes((len(header) if length is None else length).to_bytes(8, "little") + header + tail)
    return path


def test_lying_safetensors_headers_neither_crash_nor_allocate(tmp_path: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cases = {
        # claims a 2**60-byte header
        "huge_length": _lying(tmp_path / "a.safetensors", b"{}", length=2**60),
        # claims a header longer than the file
        "long_header": _lying(tmp_path / "b.safetensors", b"{}", length=10_000),
        # not JSON
        "garbage": _lying(tmp_path / "c.safetensors", b"\xff\xfe not json"),
        # a tensor whose shape is 2**40 elements but whose bytes are 4
        "shape_lie": _lying(
            tmp_path / "d.safetensors",
            json.dumps({"x": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4]}}).encode(),
            tail=b"\0" * 4,
        ),
        # data offsets far beyond the end of the file
        "offset_lie": _lying(
            tmp_path / "e.safetensors",
            json.dumps({"x": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 2**40]}}).encode(),
        ),
        "bad_dtype": _lying(
            tmp_path / "f.safetensors",
            json.dumps({"x": {"dtype": "EVIL", "shape": [1], "data_offsets": [0, 1]}}).encode(),
            tail=b"\0",
        ),
        "not_an_object": _lying(tmp_path / "g.safetensors", b"[1, 2, 3]"),
    }
    for name, path in cases.items():
        with pytest.raises(HeaderError):
            read_header(path)
        with pytest.raises(probe.NotAModel):
            probe.probe(path)
        assert path.stat().st_size < 1000, name
    with pytest.raises(IncompleteFile):  # a valid header, a file that is too short: maybe still being copied
        read_header(cases["offset_lie"])
    # ru_maxrss is in KiB: nothing like the 2**40 bytes the headers claim was ever allocated.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024

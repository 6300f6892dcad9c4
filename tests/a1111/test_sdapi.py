"""The A1111-compatible API against a real server process (with a token, as a person exposing it would run
it): A1111's own API test cases in our words, its error shape, and the `webuiapi` client."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from websockets.sync.client import connect

from server.models.tiny import write_tiny_model
from server.models.tiny_adapters import write_tiny_embedding, write_tiny_lora, write_tiny_upscaler
from tests.browser.conftest import ServerProcess, free_port, import_models, make_root
from tests.ws.conftest import receive, send, synced

TOKEN = "a1111-test-token"
COMPLEX = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"
SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 7, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("a1111")
    # No watcher: what finds a model dropped into the folders is /refresh-checkpoints, as in A1111.
    proc = ServerProcess(
        root=make_root(base / "root"), port=free_port(), token=TOKEN, extra_env={"IMAGEGRAPH_WATCH": "false"}
    )
    proc.start()
    with httpx.Client(base_url=f"{proc.url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
        # The model folder was just written: a sync takes it once it has sat still (no watcher to look again).
        deadline = time.monotonic() + 60
        while "tiny" not in [
            m["model_name"] for m in api.get("/models/", params={"model_type": "main"}).json()["models"]
        ]:
            assert time.monotonic() < deadline, "the tiny model was never imported"
            api.post("/models/sync")
            time.sleep(0.5)
        extra = base / "extra"
        extra.mkdir()
        import_models(
            api,
            write_tiny_lora(extra / "film.safetensors", scale=1.0),
            write_tiny_embedding(extra / "badhands.safetensors"),
            write_tiny_upscaler(extra / "tiny-esrgan.safetensors"),
        )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def sd(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{server.url}/sdapi/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    ) as client:
        yield client


def txt2img(sd: httpx.Client, **fields) -> dict:
    response = sd.post("/txt2img", json={"prompt": "a lighthouse", **SMALL, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    body["info"] = json.loads(body["info"])
    return body


def picture(encoded: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def pixels(encoded: str) -> np.ndarray:
    return np.asarray(picture(encoded).convert("RGB"), dtype=np.int16)


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# auth


def test_the_token_is_taken_as_bearer_or_as_the_basic_password(server: ServerProcess):
    url = f"{server.url}/sdapi/v1/sd-models"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url, auth=("anyone", TOKEN)).status_code == 200
    assert httpx.get(url, auth=("anyone", "wrong")).status_code == 401


# listings


def test_the_host_and_origin_rules_hold_for_sdapi_too(server: ServerProcess, sd: httpx.Client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    foreign = httpx.get(f"{server.url}/sdapi/v1/sd-models", headers={**auth, "Host": "evil.example"})
    assert foreign.status_code == 403
    before = sd.get("/progress").json()["state"]["job_count"]
    cross = httpx.post(
        f"{server.url}/sdapi/v1/txt2img",
        json={"prompt": "x", **SMALL},
        headers={**auth, "Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert before == 0 and sd.get("/progress").json()["state"]["job_count"] == 0


def test_every_listing_answers_in_a1111s_shape(sd: httpx.Client):
    models = sd.get("/sd-models").json()
    assert [m["model_name"] for m in models] == ["tiny"] and models[0]["title"] == "tiny [sd-1]"
    samplers = {s["name"] for s in sd.get("/samplers").json()}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "PLMS", "UniPC", "Heun", "LMS", "DDPM"} <= samplers
    assert {"Automatic", "Karras"} <= {s["label"] for s in sd.get("/schedulers").json()}
    upscalers = [u["name"] for u in sd.get("/upscalers").json()]
    assert upscalers[:3] == ["None", "Lanczos", "Nearest"] and "tiny-esrgan" in upscalers
    assert "Latent" in [m["name"] for m in sd.get("/latent-upscale-modes").json()]
    assert [lora["name"] for lora in sd.get("/loras").json()] == ["film"]
    assert list(sd.get("/embeddings").json()["loaded"]) == ["badhands"]
    for empty in ("/hypernetworks", "/face-restorers", "/prompt-styles", "/sd-vae", "/realesrgan-models"):
        assert sd.get(empty).json() == [], empty
    assert sd.get("/scripts").json() == {"txt2img": [], "img2img": []}
    assert "ram" in sd.get("/memory").json()
    assert sd.get("/cmd-flags").json()["api"] is True
    assert sd.get("/progress").json()["state"]["job_count"] == 0


def folder_sha256(folder: Path) -> str:
    """The documented hash of a diffusers folder: each file's path in it, a NUL, its bytes, in path order."""
    digest = hashlib.sha256()
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    for name, path in files:
        if ".cache" not in Path(name).parts:
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_model_hashes_are_a1111s_sha256_and_name_the_model(server: ServerProcess, sd: httpx.Client):
    deadline = time.monotonic() + 60
    listed = sd.get("/sd-models").json()[0]
    while listed["sha256"] is None and time.monotonic() < deadline:  # hashed in the background, null till then
        time.sleep(0.2)
        listed = sd.get("/sd-models").json()[0]
    path = Path(listed["filename"])
    sha = folder_sha256(path if path.is_absolute() else server.root / path)
    assert listed["sha256"] == sha and listed["hash"] == sha[:10]
    assert sd.get("/options").json()["sd_checkpoint_hash"] == sha
    body = txt2img(sd)
    assert body["info"]["sd_model_hash"] == sha[:10]
    assert f"Size: 64x64, Model hash: {sha[:10]}, Model: tiny" in body["info"]["infotexts"][0]
    # A1111's title `name [hash]`, or the hash alone, names the model.
    for title in (f"tiny.safetensors [{sha[:10]}]", f"renamed [{sha[:10]}]", sha[:10], sha):
        named = txt2img(sd, override_settings={"sd_model_checkpoint": title})
        assert named["info"]["sd_model_name"] == "tiny", title
    wrong = sd.post("/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "0123456789"}})
    assert wrong.status_code == 422


# txt2img


def test_simple_txt2img_is_in_the_gallery_with_a1111s_infotext(server: ServerProcess, sd: httpx.Client):
    body = txt2img(sd, negative_prompt="blurry")
    assert len(body["images"]) == 1
    image = picture(body["images"][0])
    assert image.size == (64, 64)
    info = body["info"]
    assert info["seed"] == 7 and info["all_seeds"] == [7] and info["sampler_name"] == "Euler"
    assert info["negative_prompt"] == "blurry" and body["parameters"]["prompt"] == "a lighthouse"
    text = info["infotexts"][0]
    assert text.startswith("a lighthouse\nNegative prompt: blurry\nSteps: 3, Sampler: Euler") and "Seed: 7" in text
    assert image.text["parameters"] == text  # an A1111 tool reads the PNG too
    # The same image is in our gallery, with the infotext kept in its metadata and the graph that ran.
    name = info["image_names"][0]
    with httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        metadata = api.get(f"/images/{name}/metadata").json()
    assert metadata["metadata"]["parameters"] == text and metadata["metadata"]["seed"] == 7
    assert metadata["graph"]["nodes"]["denoise"]["steps"] == 3


def test_the_same_seed_gives_the_same_pixels_and_minus_one_a_random_one(sd: httpx.Client):
    first, second = txt2img(sd), txt2img(sd)
    assert np.array_equal(pixels(first["images"][0]), pixels(second["images"][0]))
    random = txt2img(sd, seed=-1)["info"]
    assert random["seed"] != -1 and 0 <= random["seed"] < 2**32


def test_n_iter_and_batch_size_give_consecutive_seeds(sd: httpx.Client):
    body = txt2img(sd, seed=100, n_iter=2, batch_size=2)
    assert len(body["images"]) == 4
    assert body["info"]["all_seeds"] == [100, 101, 102, 103]
    assert len(body["info"]["infotexts"]) == 4 and "Seed: 103" in body["info"]["infotexts"][3]
    # Each image is the one its seed gives alone.
    alone = txt2img(sd, seed=102)
    assert np.array_equal(pixels(body["images"][2]), pixels(alone["images"][0]))


def test_variation_seeds_move_the_image_toward_the_subseeds(sd: httpx.Client):
    plain = pixels(txt2img(sd, seed=7, subseed=99)["images"][0])
    other = pixels(txt2img(sd, seed=99)["images"][0])
    slight = txt2img(sd, seed=7, subseed=99, subseed_strength=0.1)
    halfway = txt2img(sd, seed=7, subseed=99, subseed_strength=0.5)
    full = pixels(txt2img(sd, seed=7, subseed=99, subseed_strength=1.0)["images"][0])
    # Strength 0 is the seed alone, 1 the subseed's image; in between, a variation closer to the nearer end.
    assert np.array_equal(full, other)
    near, mid = pixels(slight["images"][0]), pixels(halfway["images"][0])
    assert 0 < np.abs(near - plain).mean() < np.abs(mid - plain).mean()
    assert np.abs(mid - plain).mean() > 0.5 and np.abs(mid - other).mean() > 0.5
    assert not slight["info"]["warnings"]
    assert "Variation seed: 99, Variation seed strength: 0.1" in slight["info"]["infotexts"][0]
    # Batches step the subseed with the seed, as A1111 does.
    batch = txt2img(sd, seed=7, subseed=99, subseed_strength=0.5, batch_size=2)
    assert batch["info"]["all_subseeds"] == [99, 100]
    assert np.array_equal(pixels(batch["images"][0]), mid)


@pytest.mark.parametrize("sampler", ["PLMS", "DDIM", "UniPC", "Euler a", "DPM++ 2M"])
def test_a1111_samplers(sd: httpx.Client, sampler: str):
    # PLMS (diffusers' PNDM) needs more than its warm-up steps.
    body = txt2img(sd, steps=6, sampler_name=sampler, scheduler="Karras" if sampler == "DPM++ 2M" else "Automatic")
    assert body["info"]["sampler_name"] == sampler and picture(body["images"][0]).size == (64, 64)


def test_non_square_and_the_complex_prompt(sd: httpx.Client):
    body = txt2img(sd, prompt=COMPLEX, width=96, height=64, steps=6)
    assert picture(body["images"][0]).size == (96, 64)
    assert body["info"]["prompt"] == COMPLEX


def test_prompt_editing_differs_from_either_prompt(sd: httpx.Client):
    cat, dog = (pixels(txt2img(sd, prompt=p, steps=4)["images"][0]) for p in ("a red cat", "a blue dog"))
    edited = pixels(txt2img(sd, prompt="a [red cat:blue dog:0.25]", steps=4)["images"][0])
    assert np.abs(edited - cat).mean() > 0.05 and np.abs(edited - dog).mean() > 0.05


def test_a_lora_tag_at_weight_zero_is_no_lora(sd: httpx.Client):
    plain = pixels(txt2img(sd)["images"][0])
    assert np.array_equal(pixels(txt2img(sd, prompt="a lighthouse <lora:film:0>")["images"][0]), plain)
    with_lora = txt2img(sd, prompt="a lighthouse <lora:film:1>")
    assert np.abs(pixels(with_lora["images"][0]) - plain).mean() > 0.5
    missing = txt2img(sd, prompt="a lighthouse <lora:nowhere:1>")
    assert any("nowhere" in w for w in missing["info"]["warnings"])
    # An embedding by its plain name, as A1111 takes it, changes the image.
    assert not np.array_equal(pixels(txt2img(sd, prompt="a lighthouse badhands")["images"][0]), plain)


def test_hires_doubles_the_size(sd: httpx.Client):
    body = txt2img(sd, enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5)
    assert picture(body["images"][0]).size == (128, 128)
    assert "Hires upscale: 2" in body["info"]["infotexts"][0]


@pytest.mark.parametrize(("upscaler", "mode"), [("Nearest", "nearest"), ("Lanczos", "lanczos"), ("None", "lanczos")])
def test_pixel_hires_upscalers_resize_the_first_image(sd: httpx.Client, upscaler: str, mode: str):
    body = txt2img(sd, enable_hr=True, hr_scale=2, hr_second_pass_steps=2, hr_upscaler=upscaler)
    assert picture(body["images"][0]).size == (128, 128)
    assert not [w for w in body["info"]["warnings"] if "hr_upscaler" in w]
    assert f"Hires upscaler: {upscaler}" in body["info"]["infotexts"][0]
    graph = sd.get(sd.base_url.join(f"/api/v1/sessions/{body['info']['session_ids'][0]}")).json()["graph"]
    assert graph["nodes"]["hires_image"]["resample_mode"] == mode


def test_missing_extensions_are_warnings_not_errors(sd: httpx.Client):
    body = txt2img(sd, restore_faces=True, tiling=True, script_name="x/y/z plot")
    assert len(body["images"]) == 1
    warnings = " ".join(body["info"]["warnings"])
    assert "restore_faces" in warnings and "x/y/z plot" in warnings
    assert "Tiling: True" in body["info"]["infotexts"][0]


# bad input


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"width": 100}, "width"),
        ({"width": 8192}, "width"),
        ({"cfg_scale": "high"}, "cfg_scale"),
        ({"sampler_name": "Euler z"}, "sampler_name"),
        ({"override_settings": {"sd_model_checkpoint": "nowhere"}}, "override_settings"),
    ],
)
def test_bad_input_is_422_in_a1111s_error_shape(sd: httpx.Client, fields: dict, field: str):
    response = sd.post("/txt2img", json={**SMALL, **fields})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError" and field in body["detail"] + json.dumps(body["errors"])
    assert {"error", "detail", "body", "errors"} <= set(body)


def test_images_that_are_not_images_are_refused(sd: httpx.Client):
    assert sd.post("/img2img", json={**SMALL, "init_images": ["not base64!"]}).status_code == 422
    junk = base64.b64encode(b"\x89PNG not really").decode()
    assert sd.post("/img2img", json={**SMALL, "init_images": [junk]}).status_code in (413, 415)
    bomb = Image.new("L", (12000, 12000))
    refused = sd.post("/png-info", json={"image": b64(bomb)})
    assert refused.status_code in (413, 415) and "image" in refused.json()["detail"]
    assert sd.get("/progress").status_code == 200  # still healthy


# img2img and inpainting


def square_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    return mask


def test_img2img_changes_the_image_by_its_strength(sd: httpx.Client):
    init = txt2img(sd)["images"][0]
    response = sd.post("/img2img", json={**SMALL, "prompt": "a boat", "init_images": [init], "denoising_strength": 0.6})
    assert response.status_code == 200, response.text
    out = response.json()
    assert picture(out["images"][0]).size == (64, 64)
    assert np.abs(pixels(out["images"][0]) - pixels(init)).mean() > 0
    assert out["parameters"]["init_images"] is None  # not echoed back unless include_init_images


@pytest.mark.parametrize("invert", [0, 1])
def test_inpainting_keeps_the_init_image_outside_the_mask(sd: httpx.Client, invert: int):
    init = txt2img(sd)["images"][0]
    fields = {
        **SMALL,
        "prompt": "a boat",
        "init_images": [init],
        "mask": b64(square_mask()),
        "mask_blur": 0,
        "inpainting_mask_invert": invert,
        "inpaint_full_res": False,
        "inpainting_fill": 1,
        "denoising_strength": 0.9,
    }
    response = sd.post("/img2img", json=fields)
    assert response.status_code == 200, response.text
    result, original = pixels(response.json()["images"][0]), pixels(init)
    inside = np.asarray(square_mask()) > 127
    kept, painted = (~inside, inside) if not invert else (inside, ~inside)
    assert np.array_equal(result[kept], original[kept])
    assert np.abs(result[painted] - original[painted]).mean() > 1


def test_only_masked_inpaints_the_masks_box_at_the_requested_size(sd: httpx.Client):
    init = txt2img(sd, width=128, height=96)["images"][0]
    mask = Image.new("L", (128, 96), 0)
    ImageDraw.Draw(mask).rectangle((80, 40, 95, 55), fill=255)  # 16×16, right of the middle
    fields = {
        **SMALL,
        "prompt": "a boat",
        "init_images": [init],
        "mask": b64(mask),
        "mask_blur": 0,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 8,
        "inpainting_fill": 1,
        "denoising_strength": 0.9,
    }
    response = sd.post("/img2img", json=fields)
    assert response.status_code == 200, response.text
    body = response.json()
    result, original = pixels(body["images"][0]), pixels(init)
    assert result.shape == original.shape  # the init image's size, not the 64×64 it was inpainted at
    inside = np.asarray(mask) > 127
    assert np.array_equal(result[~inside], original[~inside])
    assert np.abs(result[inside] - original[inside]).mean() > 1
    info = json.loads(body["info"])
    assert "Inpaint area: Only masked, Masked area padding: 8" in info["infotexts"][0] and not info["warnings"]
    # The box: the mask's 16×16 and 8 around it (32×32, already square like 64×64), at 64×64 and back.
    graph = sd.get(sd.base_url.join(f"/api/v1/sessions/{info['session_ids'][0]}")).json()["graph"]
    crop = graph["nodes"]["init_crop"]
    assert (crop["x"], crop["y"], crop["width"], crop["height"]) == (72, 32, 32, 32)
    assert graph["nodes"]["init_resize"]["width"] == 64 and graph["nodes"]["region_paste"]["x"] == 72
    negative = sd.post("/img2img", json={**fields, "inpaint_full_res_padding": -1})
    assert negative.status_code == 422 and "inpaint_full_res_padding" in negative.text


# extras and png-info


def test_extras_upscale_with_lanczos_and_with_a_model(sd: httpx.Client):
    source = txt2img(sd)["images"][0]
    lanczos = sd.post("/extra-single-image", json={"image": source, "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert lanczos.status_code == 200, lanczos.text
    assert picture(lanczos.json()["image"]).size == (128, 128)
    model = sd.post("/extra-single-image", json={"image": source, "upscaler_1": "tiny-esrgan", "upscaling_resize": 2})
    assert model.status_code == 200, model.text
    assert picture(model.json()["image"]).size == (128, 128)
    batch = sd.post(
        "/extra-batch-images",
        json={"imageList": [{"data": source, "name": "a"}] * 2, "upscaler_1": "Nearest", "upscaling_resize": 3},
    )
    assert [picture(i).size for i in batch.json()["images"]] == [(192, 192)] * 2
    unknown = sd.post("/extra-single-image", json={"image": source, "upscaler_1": "nowhere"})
    assert unknown.status_code == 422 and "upscaler_1" in unknown.json()["detail"] + json.dumps(
        unknown.json()["errors"]
    )


def test_png_info_reads_a1111_text_back(sd: httpx.Client):
    body = txt2img(sd, prompt="a lighthouse", negative_prompt="fog")
    info = sd.post("/png-info", json={"image": body["images"][0]}).json()
    assert info["info"] == body["info"]["infotexts"][0]
    assert info["parameters"]["Seed"] == "7" and info["parameters"]["Negative prompt"] == "fog"
    assert "invokeai_metadata" in info["items"]
    plain = sd.post("/png-info", json={"image": b64(Image.new("RGB", (8, 8)))}).json()
    assert plain["info"] == ""


# ComfyUI's "prompt" chunk as its Save Image node writes it: a txt2img pass with a LoRA, then a hires pass (listed
# first, as ComfyUI's node ids do not follow the order of the passes).
COMFY_PROMPT = {
    "12": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 10,
            "cfg": 5.5,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 0.5,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["11", 0],
        },
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler_ancestral",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "SD1.5/v1-5-pruned-emaonly.safetensors"}},
    "10": {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": "film.safetensors",
            "strength_model": 1,
            "strength_clip": 1,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    },
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 768}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": "beautiful scenery, (sunset:1.2)"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": "text, watermark"}},
    "11": {
        "class_type": "LatentUpscaleBy",
        "inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5, "samples": ["3", 0]},
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def test_png_info_reads_comfyuis_prompt_graph(sd: httpx.Client):
    chunks = PngInfo()
    chunks.add_text("prompt", json.dumps(COMFY_PROMPT))
    chunks.add_text("workflow", json.dumps({"last_node_id": 12, "nodes": [], "links": [], "version": 0.4}))
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(buffer, format="PNG", pnginfo=chunks)
    response = sd.post("/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()})
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["info"] == (
        "beautiful scenery, (sunset:1.2)\n"
        "Negative prompt: text, watermark\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Normal, CFG scale: 8.0, Seed: 156680208700286, "
        "Size: 768x512, Model: v1-5-pruned-emaonly"
    )
    parameters = info["parameters"]
    assert parameters["Prompt"] == "beautiful scenery, (sunset:1.2)" and parameters["Sampler"] == "Euler a"
    assert parameters["Size"] == "768x512" and parameters["Seed"] == "156680208700286"
    assert json.loads(info["items"]["prompt"]) == COMFY_PROMPT and "workflow" in info["items"]


# options


def test_options_are_kept_across_a_restart(server: ServerProcess, sd: httpx.Client):
    assert sd.get("/options").json()["sd_model_checkpoint"] == "tiny [sd-1]"
    assert sd.post("/options", json={"CLIP_stop_at_last_layers": 2, "my_extension_option": [1, 2]}).status_code == 200
    refused = sd.post("/options", json={"sd_model_checkpoint": "nowhere"})
    assert refused.status_code == 422
    server.restart()
    options = sd.get("/options").json()
    assert options["CLIP_stop_at_last_layers"] == 2 and options["my_extension_option"] == [1, 2]
    # Clip skip from the options reaches the generation.
    assert "Clip skip: 2" in txt2img(sd)["info"]["infotexts"][0]
    assert sd.post("/options", json={"CLIP_stop_at_last_layers": 1}).status_code == 200


def test_refresh_checkpoints_finds_a_model_dropped_into_the_folder(server: ServerProcess, sd: httpx.Client):
    # A .safetensors checkpoint proves its own completeness, so the first sync takes it.
    dropped = write_tiny_model(server.root / "autoimport" / "main" / "second.safetensors", "checkpoint", seed=3)

    def names() -> list[str]:
        return [m["model_name"] for m in sd.get("/sd-models").json()]

    assert names() == ["tiny"]
    assert sd.post("/refresh-checkpoints").status_code == 200
    assert sorted(names()) == ["second", "tiny"]
    # Gone from the folder, gone from the list at the next refresh.
    registered = next(server.root.joinpath("models").rglob("second.safetensors"), dropped)
    registered.unlink()
    assert sd.post("/refresh-checkpoints").status_code == 200
    assert names() == ["tiny"]


def test_a1111_images_reach_the_gallery_live(server: ServerProcess, sd: httpx.Client):
    with connect(f"ws://127.0.0.1:{server.port}/ws?token={TOKEN}") as ws:
        send(ws, type="subscribe", sessions="*")
        synced(ws)
        name = txt2img(sd, seed=31)["info"]["image_names"][0]
        created = []
        while name not in created:
            event = receive(ws, timeout=30)
            if event["type"] == "image_created":
                created.append(event["image"]["image_name"])
    assert created == [name]


# progress, interrupt, skip


def test_interrupt_stops_the_running_job_and_progress_follows_it(sd: httpx.Client):
    outcome: dict = {}

    def long_job() -> None:
        outcome["response"] = sd.post("/txt2img", json={**SMALL, "steps": 400, "n_iter": 3})

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        state = sd.get("/progress").json()
        if state["state"]["sampling_step"] > 0:
            break
        time.sleep(0.1)
    assert state["state"]["job_count"] == 1 and state["state"]["sampling_steps"] == 400
    assert 0 < state["progress"] < 1
    assert state["current_image"] is not None  # the preview, base64
    assert sd.post("/interrupt").status_code == 200
    worker.join(60)
    response = outcome["response"]
    assert response.status_code == 200 and response.json()["images"] == []
    assert sd.get("/progress").json()["state"]["job_count"] == 0


def start_long_job(sd: httpx.Client, **fields) -> tuple[threading.Thread, dict]:
    """A txt2img of many steps in a thread, returned once its first image is sampling."""
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(response=sd.post("/txt2img", json={**SMALL, "steps": 400, **fields}))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while sd.get("/progress").json()["state"]["sampling_step"] == 0:
        assert time.monotonic() < deadline, "the job never started sampling"
        time.sleep(0.1)
    return worker, outcome


def test_skip_drops_the_running_image_and_the_job_goes_on(sd: httpx.Client):
    worker, outcome = start_long_job(sd, n_iter=2, steps=150)
    assert sd.post("/skip").status_code == 200
    worker.join(120)
    assert outcome["response"].status_code == 200
    body = outcome["response"].json()
    body["info"] = json.loads(body["info"])
    # The first image stopped where it was; the second was made whole, with its own seed.
    assert len(body["images"]) == 1 and body["info"]["all_seeds"] == [7, 8]
    [text] = body["info"]["infotexts"]
    assert "Seed: 8" in text


# the webuiapi client


def test_the_webuiapi_client(server: ServerProcess, tmp_path: Path):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=3)
    api.set_auth("user", TOKEN)
    result = api.txt2img(prompt="a lighthouse", width=64, height=64, seed=5)
    assert result.image.size == (64, 64) and result.info["seed"] == 5
    again = api.img2img(images=[result.image], prompt="a boat", width=64, height=64, denoising_strength=0.5, seed=5)
    assert again.image.size == (64, 64)
    assert "Seed: 5" in api.png_info(result.image).info
    upscaled = api.extra_single_image(image=result.image, upscaler_1=webuiapi.Upscaler.Lanczos, upscaling_resize=2)
    assert upscaled.image.size == (128, 128)
    api.util_set_model("tiny")
    assert api.util_get_current_model() == "tiny [sd-1]"
    # Nothing running: answered without error; while a job runs, it stops it.
    assert api.interrupt() == {}
    with httpx.Client(base_url=f"{server.url}/sdapi/v1", headers={"Authorization": f"Bearer {TOKEN}"}) as sd:
        worker, outcome = start_long_job(sd, n_iter=2)
        assert api.interrupt() == {}
        worker.join(60)
    assert outcome["response"].status_code == 200 and outcome["response"].json()["images"] == []

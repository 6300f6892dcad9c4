"""Generation metadata other tools leave in their images, parsed into the object `/metadata` returns.

- ours / InvokeAI: tEXt `invokeai_metadata` and `invokeai_graph`, kept as they are (and our editor's
  `imagegraph_workflow`, the layout);
- ComfyUI: tEXt `prompt` (the API graph) and `workflow` (the editor's document);
- AUTOMATIC1111: tEXt `parameters`, or in a JPEG/WebP the EXIF UserComment, a text block like
  `prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model: x`.

Foreign metadata becomes `{"format": "comfyui" | "a1111", ...parsed fields...}`; what cannot be parsed is
kept as text so nothing the user had is lost."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.images.metadata import is_json, is_json_object

# Chunks copied into the PNG we store, so the file keeps what the user uploaded.
KEPT_CHUNKS = ("invokeai_metadata", "invokeai_graph", "imagegraph_workflow", "parameters", "prompt", "workflow")
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286

# One `key: value` pair of A1111's last line; values may be quoted JSON strings containing commas.
_A1111_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)\s*x\s*(\d+)$")
# A1111's LoRA tag: `<lora:name>` or `<lora:name:weight>` (a second number, the text encoder's weight, is ignored).
_A1111_LORA = re.compile(r"<lora:([^:<>]+)(?::([^:<>]+))?(?::[^<>]*)?>")


class ForeignMetadata(msgspec.Struct, kw_only=True):
    """What an uploaded image carried: raw JSON strings for `/metadata`, and text chunks to re-embed."""

    metadata: str | None = None
    graph: str | None = None
    workflow: str | None = None
    chunks: dict[str, str] = {}


def read_foreign_metadata(text_chunks: dict[str, str], exif_comment: str | None) -> ForeignMetadata:
    """Pick the metadata out of an image's text chunks (PNG) or EXIF UserComment (JPEG, WebP)."""
    chunks = {key: value for key, value in text_chunks.items() if key in KEPT_CHUNKS and isinstance(value, str)}
    if exif_comment and "parameters" not in chunks:
        chunks["parameters"] = exif_comment
    found = ForeignMetadata(chunks=chunks)

    if is_json_object(chunks.get("invokeai_metadata", "")):
        found.metadata = chunks["invokeai_metadata"]
    if is_json_object(chunks.get("invokeai_graph", "")):
        found.graph = chunks["invokeai_graph"]
    if is_json_object(chunks.get("imagegraph_workflow", "")):
        found.workflow = chunks["imagegraph_workflow"]
    if found.metadata is None and ("prompt" in chunks or "workflow" in chunks):
        parsed = parse_comfyui(chunks.get("prompt"), chunks.get("workflow"))
        if parsed is not None:
            found.metadata = msgspec.json.encode(parsed).decode()
    if found.metadata is None and chunks.get("parameters"):
        found.metadata = msgspec.json.encode(parse_a1111(chunks["parameters"])).decode()
    return found


def decode_user_comment(value: Any) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UNICODE, i.e. UTF-16)."""
    if isinstance(value, str):
        return value.strip("\x00").strip() or None
    if not isinstance(value, bytes) or len(value) <= 8:
        return None
    prefix, body = value[:8], value[8:]
    if prefix == b"UNICODE\x00":
        # The standard says big-endian; some writers use little-endian. ASCII text in UTF-16-BE has the zero
        # byte first.
        big_endian = body[:1] == b"\x00" or body[:2] == b"\xfe\xff"
        text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif prefix == b"ASCII\x00\x00\x00":
        text = body.decode("ascii", errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    text = text.lstrip("\ufeff").strip("\x00").strip()
    return text or None


def parse_a1111(parameters: str) -> dict[str, Any]:
    """A1111's parameters text → prompt, negative prompt, steps, sampler, cfg, seed, size, model (+ the rest)."""
    lines = parameters.strip().split("\n")
    settings_line = ""
    if lines and len(_A1111_PAIR.findall(lines[-1])) >= 3:
        settings_line = lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line.removeprefix("Negative prompt:").lstrip()
        target.append(line)

    result: dict[str, Any] = {
        "format": "a1111",
        "positive_prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
    }
    extra: dict[str, str] = {}
    for key, raw_value in _A1111_PAIR.findall(settings_line):
        key = key.strip()
        value = raw_value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError:
                value = value[1:-1]
        if not _put_a1111_field(result, key, value):
            extra[key] = value
    if extra:
        result["extra"] = extra
    _put_a1111_loras(result, extra.get("Lora hashes", ""))
    result["parameters"] = parameters
    return result


def _put_a1111_loras(result: dict[str, Any], hashes_text: str) -> None:
    """`<lora:name:weight>` in the prompt (A1111's extra-network syntax) and its `Lora hashes` → `loras`, in
    CoreMetadata's shape with the name only (the base is whatever registered LoRA has that name), and a prompt
    without the tags, as A1111 conditions on it."""
    hashes = dict(
        (name.strip(), value.strip())
        for name, _, value in (item.partition(":") for item in hashes_text.split(","))
        if name.strip() and value.strip()
    )
    loras: list[dict[str, Any]] = []
    for match in _A1111_LORA.finditer(result["positive_prompt"]):
        weight = float(match.group(2)) if match.group(2) and _is_number(match.group(2)) else 1.0
        loras.append({"lora": {"model_name": match.group(1).strip(), "model_type": "lora"}, "weight": weight})
    named = {lora["lora"]["model_name"] for lora in loras}
    loras += [
        {"lora": {"model_name": name, "model_type": "lora"}, "weight": 1.0} for name in hashes if name not in named
    ]
    for lora in loras:
        if lora["lora"]["model_name"] in hashes:
            lora["hash"] = hashes[lora["lora"]["model_name"]]
    if loras:
        result["loras"] = loras
        prompt = re.sub(r"[ \t]{2,}", " ", _A1111_LORA.sub("", result["positive_prompt"]))
        result["positive_prompt"] = re.sub(r"[ \t]+,", ",", prompt).strip(" ,")


def _put_a1111_field(result: dict[str, Any], key: str, value: str) -> bool:
    if key == "Steps" and value.isdigit():
        result["steps"] = int(value)
    elif key == "Sampler":
        result["sampler"] = value
    elif key == "CFG scale" and _is_number(value):
        result["cfg_scale"] = float(value)
    elif key == "Seed" and value.lstrip("-").isdigit():
        result["seed"] = int(value)
    elif key == "Size" and (size := _SIZE.match(value)):
        result["width"], result["height"] = int(size.group(1)), int(size.group(2))
    elif key == "Model":
        result["model"] = value
    elif key == "Model hash":
        result["model_hash"] = value
    elif key == "Clip skip" and value.isdigit():
        # A1111 counts the last layer as 1; ours counts the layers skipped.
        result["clip_skip"] = max(0, int(value) - 1)
    elif key == "VAE":
        result["vae"] = value
    else:
        return False
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_comfyui(prompt: str | None, workflow: str | None) -> dict[str, Any] | None:
    """ComfyUI's API graph (`prompt`) → the sampler's settings, prompts, size and checkpoint, plus both graphs."""
    graph = msgspec.json.decode(prompt) if prompt and is_json(prompt) else None
    editor = msgspec.json.decode(workflow) if workflow and is_json(workflow) else None
    if graph is None and editor is None:
        return None
    result: dict[str, Any] = {"format": "comfyui"}
    if isinstance(graph, dict):
        result.update(_comfyui_fields(graph))
    if graph is not None:
        result["prompt"] = graph
    if editor is not None:
        result["workflow"] = editor
    return result


def _comfyui_fields(graph: dict[str, Any]) -> dict[str, Any]:
    nodes = {key: node for key, node in graph.items() if isinstance(node, dict)}
    samplers = [node for node in nodes.values() if "KSampler" in str(node.get("class_type", ""))]
    if not samplers:
        return {}

    def starts_from_nothing(node: dict[str, Any]) -> bool:
        link = (node.get("inputs") or {}).get("latent_image")
        source = nodes.get(str(link[0])) if isinstance(link, list) and link else None
        return source is not None and "EmptyLatentImage" in str(source.get("class_type", ""))

    # With several (a hires pass, a refiner), the first pass is the one that starts from an empty latent.
    sampler = next((node for node in samplers if starts_from_nothing(node)), samplers[0])
    inputs = sampler.get("inputs") or {}
    fields: dict[str, Any] = {}
    for ours, theirs in (
        ("seed", "seed"),
        ("seed", "noise_seed"),
        ("steps", "steps"),
        ("cfg_scale", "cfg"),
        ("sampler", "sampler_name"),
        ("scheduler", "scheduler"),
        ("strength", "denoise"),
    ):
        value = inputs.get(theirs)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            fields[ours] = value

    def upstream(link: Any) -> dict[str, Any] | None:
        # An input wired to another node is `[node_id, output_index]`.
        if isinstance(link, list) and link and str(link[0]) in nodes:
            return nodes[str(link[0])]
        return None

    def text_of(link: Any) -> str | None:
        node = upstream(link)
        seen = 0
        while node is not None and seen < 16:
            node_inputs = node.get("inputs") or {}
            for key in ("text", "text_g", "prompt"):
                if isinstance(node_inputs.get(key), str):
                    return node_inputs[key]
            node = upstream(node_inputs.get("conditioning") or node_inputs.get("text"))
            seen += 1
        return None

    for ours, theirs in (("positive_prompt", "positive"), ("negative_prompt", "negative")):
        text = text_of(inputs.get(theirs))
        if text is not None:
            fields[ours] = text
    latent = upstream(inputs.get("latent_image"))
    if latent is not None:
        latent_inputs = latent.get("inputs") or {}
        for key in ("width", "height"):
            if isinstance(latent_inputs.get(key), int):
                fields[key] = latent_inputs[key]
    model = upstream(inputs.get("model"))
    seen = 0
    while model is not None and seen < 16:
        model_inputs = model.get("inputs") or {}
        if isinstance(model_inputs.get("ckpt_name"), str):
            fields["model"] = model_inputs["ckpt_name"]
            break
        model = upstream(model_inputs.get("model"))
        seen += 1
    return fields

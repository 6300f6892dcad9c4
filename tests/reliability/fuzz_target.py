"""A throwaway server worth fuzzing: a root with the tiny model (diffusers folder and LDM checkpoint, so
convert and merge have something to work on), a few uploaded images, a board and one generated image.
Shared by tests/reliability/test_fuzz.py (short form) and bench/fuzz_soak.py (long form)."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from server.config import Settings

API = "/api/v1"


def fuzz_settings(root: Path, database: str = "", **overrides: Any) -> Settings:
    """Settings for a server that may only read and write inside `root`: `search_roots` is the root itself,
    so no search, import, convert or merge destination the fuzzer invents can reach anything else."""
    return Settings(root=str(root), watch=False, search_roots=[str(root)], database=database, **overrides)


def write_tiny_models(folder: Path) -> dict[str, Path]:
    """The tiny model as a diffusers folder and as an LDM checkpoint under `folder` (the shape of the
    `tiny_model_files` fixture), for callers outside pytest."""
    from server.models.tiny import write_tiny_model

    return {
        "diffusers": write_tiny_model(folder / "tiny", "diffusers"),
        "checkpoint": write_tiny_model(folder / "tiny.safetensors", "checkpoint"),
    }


def place_models(settings: Settings, tiny: dict[str, Path]) -> None:
    """Copies of the tiny model where the fuzzer can reach them: in autoimport `tiny` and `tiny-b` (diffusers,
    two of them so a merge can succeed) and `tiny-ckpt` (a checkpoint to convert); in `<root>/library/` two
    unregistered checkpoints, one to import and one to add."""
    import shutil

    from tests.models.conftest import settle

    main = settings.autoimport_dir / "main"
    library = settings.root_path / "library"
    main.mkdir(parents=True, exist_ok=True)
    library.mkdir(parents=True, exist_ok=True)
    copies = [
        (tiny["diffusers"], main / "tiny"),
        (tiny["diffusers"], main / "tiny-b"),
        (tiny["checkpoint"], main / "tiny-ckpt.safetensors"),
        (tiny["checkpoint"], library / "import-me.safetensors"),
        (tiny["checkpoint"], library / "add-me.safetensors"),
    ]
    for source, dest in copies:
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copyfile(source, dest)
        # Sync waits for files modified in the last seconds to settle; these are complete.
        settle(dest)


def _png(width: int, height: int, shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 255 - shade, 128)).save(out, format="PNG")
    return out.getvalue()


def t2i_graph(model_name: str = "tiny", seed: int = 1) -> dict[str, Any]:
    """The contract's standard text-to-image graph at 64×64, 2 steps."""
    model = {"model_name": model_name, "base_model": "sd-1", "model_type": "main"}
    return {
        "id": "t2i",
        "nodes": {
            "model": {"id": "model", "type": "main_model_loader", "model": model},
            "pos": {"id": "pos", "type": "compel", "prompt": "a lighthouse"},
            "neg": {"id": "neg", "type": "compel", "prompt": ""},
            "noise": {"id": "noise", "type": "noise", "seed": seed, "width": 64, "height": 64},
            "denoise": {"id": "denoise", "type": "denoise_latents", "steps": 2, "cfg_scale": 7.5, "scheduler": "euler"},
            "decode": {"id": "decode", "type": "l2i"},
        },
        "edges": [
            {"source": {"node_id": "model", "field": "clip"}, "destination": {"node_id": "pos", "field": "clip"}},
            {"source": {"node_id": "model", "field": "clip"}, "destination": {"node_id": "neg", "field": "clip"}},
            {"source": {"node_id": "model", "field": "unet"}, "destination": {"node_id": "denoise", "field": "unet"}},
            {
                "source": {"node_id": "pos", "field": "conditioning"},
                "destination": {"node_id": "denoise", "field": "positive_conditioning"},
            },
            {
                "source": {"node_id": "neg", "field": "conditioning"},
                "destination": {"node_id": "denoise", "field": "negative_conditioning"},
            },
            {"source": {"node_id": "noise", "field": "noise"}, "destination": {"node_id": "denoise", "field": "noise"}},
            {
                "source": {"node_id": "denoise", "field": "latents"},
                "destination": {"node_id": "decode", "field": "latents"},
            },
            {"source": {"node_id": "model", "field": "vae"}, "destination": {"node_id": "decode", "field": "vae"}},
        ],
    }


@dataclass
class Seeded:
    """What the server holds before fuzzing starts (names the fuzzer's examples can point at)."""

    image_names: list[str] = field(default_factory=list)
    board_id: str = ""
    session_id: str = ""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


def seed_server(base_url: str, headers: dict[str, str] | None = None, timeout: float = 120.0) -> Seeded:
    """Register the models, upload three images (one on a board, one intermediate), run one generation."""
    seeded = Seeded()
    with httpx.Client(base_url=base_url + API, headers=headers, timeout=60) as api:
        response = api.post("/models/sync")
        response.raise_for_status()
        models = api.get("/models/").json()["models"]
        seeded.models = {f"{m['base_model']}/{m['model_type']}/{m['model_name']}": m for m in models}
        assert {"sd-1/main/tiny", "sd-1/main/tiny-b", "sd-1/main/tiny-ckpt"} <= set(seeded.models), list(seeded.models)
        board = api.post("/boards/", json={"board_name": "fuzzed"})
        board.raise_for_status()
        seeded.board_id = board.json()["board_id"]
        for i, params in enumerate(({}, {"board_id": seeded.board_id}, {"is_intermediate": "true"})):
            files = {"file": (f"seed{i}.png", _png(48 + 16 * i, 32, 60 * i), "image/png")}
            uploaded = api.post("/images/upload", files=files, params=params)
            uploaded.raise_for_status()
            seeded.image_names.append(uploaded.json()["image_name"])
        session = api.post("/sessions/", json=t2i_graph())
        session.raise_for_status()
        seeded.session_id = session.json()["id"]
        api.put(f"/sessions/{seeded.session_id}/invoke").raise_for_status()
        deadline = time.monotonic() + timeout
        while True:
            state = api.get(f"/sessions/{seeded.session_id}").json()
            if state["status"] in ("completed", "failed", "canceled"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the seed generation did not finish: {state['status']}")
            time.sleep(0.1)
        assert state["status"] == "completed", state.get("errors")
        seeded.image_names.append(state["results"]["decode"]["image"]["image_name"])
    return seeded


def fuzz_document(document: dict[str, Any], root: Path, seeded: Seeded) -> dict[str, Any]:
    """Our own /openapi.json plus an `example` for the requests that only succeed with names this server
    holds (a folder to search, a file to import, models to merge, an image, a board). Schemathesis sends the
    examples first, so import, add, convert, merge and a generation really run; its other phases generate
    from the document's own schemas, which are left exactly as served."""
    doc = copy.deepcopy(document)
    paths = doc["paths"]
    image, board, session = seeded.image_names[0], seeded.board_id, seeded.session_id
    tiny = {k: v for k, v in seeded.models["sd-1/main/tiny"].items() if k != "error"}

    def params(path: str, method: str, **values: Any) -> None:
        for param in paths[path][method]["parameters"]:
            if param["name"] in values:
                param["example"] = values.pop(param["name"])
        assert not values, f"{method} {path} has no parameters {list(values)}"

    def body(path: str, method: str, value: Any) -> None:
        paths[path][method]["requestBody"]["content"]["application/json"]["example"] = value

    model_path = "/api/v1/models/{base_model}/{model_type}/{model_name}"
    params("/api/v1/models/search", "get", search_path=str(root))
    body("/api/v1/models/import", "post", {"location": str(root / "library" / "import-me.safetensors")})
    added = {**tiny, "model_name": "added", "path": "library/add-me.safetensors", "model_format": "checkpoint"}
    body("/api/v1/models/add", "post", added)
    for method in ("get", "patch"):
        params(model_path, method, base_model="sd-1", model_type="main", model_name="tiny")
    body(model_path, "patch", {**tiny, "description": "patched by the fuzzer"})
    params(
        "/api/v1/models/convert/{base_model}/{model_type}/{model_name}",
        "put",
        base_model="sd-1",
        model_type="main",
        model_name="tiny-ckpt",
        convert_dest_directory=str(root / "models" / "sd-1" / "main"),
    )
    params("/api/v1/models/merge/{base_model}", "put", base_model="sd-1")
    merge = {
        "model_names": ["tiny", "tiny-b"],
        "merged_model_name": "tiny-merged",
        "alpha": 0.5,
        "interp": "weighted_sum",
        "force": False,
        "merge_dest_directory": None,
    }
    body("/api/v1/models/merge/{base_model}", "put", merge)
    for suffix in ("", "/metadata", "/full", "/thumbnail", "/urls"):
        params(f"/api/v1/images/{{image_name}}{suffix}", "get", image_name=image)
    params("/api/v1/images/{image_name}", "patch", image_name=image)
    body("/api/v1/images/{image_name}", "patch", {"starred": True, "board_id": board})
    params("/api/v1/images/{image_name}", "delete", image_name=seeded.image_names[2])
    for method in ("get", "patch"):
        params("/api/v1/boards/{board_id}", method, board_id=board)
    body("/api/v1/boards/{board_id}", "patch", {"board_name": "renamed", "cover_image_name": seeded.image_names[1]})
    params("/api/v1/boards/{board_id}/image_names", "get", board_id=board)
    body("/api/v1/sessions/", "post", t2i_graph(seed=7))
    body("/api/v1/workflows/", "post", {"name": "fuzzed workflow", "graph": t2i_graph(seed=5), "layout": None})
    params("/api/v1/sessions/{session_id}", "get", session_id=session)
    return doc


# The A1111 routes that generate: every valid request is a whole generation (up to 4096² and 1000 steps, 64
# images), which no CI run can afford. They get only invalid requests (each must be refused, never a 500);
# tests/a1111 runs the valid ones.
GENERATING = r"^/sdapi/v1/(txt2img|img2img|extra-single-image|extra-batch-images)$"

# The coverage phase walks every boundary and invalid value of a schema, and a graph's `nodes` (one schema per
# node type) makes that about 8,600 cases, 60-70 s, for each route whose body holds a graph. The workflow routes
# validate their graph with POST /sessions/' own check (server/http/workflows.py), so the short form leaves their
# graph's walk to that route; they still get their examples, fuzzing and stateful runs (bench/fuzz_soak.py keeps
# every phase everywhere). Schemathesis' per-operation configuration, in its TOML.
SHARED_GRAPH_ROUTES_SKIP_COVERAGE = """
[[operations]]
include-name = ["POST /api/v1/workflows/", "PUT /api/v1/workflows/{workflow_id}"]
phases.coverage.enabled = false
"""

# Every check Schemathesis has but one: `positive_data_acceptance` expects any request the schemas allow to
# succeed, while most of our 422s are about what JSON Schema cannot say (an image or board that does not
# exist, a graph whose edges do not fit, a file that is not an image) and are the right answer.
CHECKS = ("--checks", "all", "--exclude-checks", "positive_data_acceptance")


@dataclass
class FuzzReport:
    exit_code: int
    seed: int
    generated: int  # test cases Schemathesis generated and sent (each one request, or one step of a scenario)
    failures: list[dict[str, Any]]
    errors: list[Any]
    output: str
    operations: dict[str, Any] = field(default_factory=dict)  # total, selected, tested, errored, skipped
    phases: dict[str, str] = field(default_factory=dict)  # phase -> status ("success", "skipped", ...)
    # operation -> phase -> outcome -> count, for the schema-valid cases only ("accepted", "rejected", ...)
    valid_rates: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failures and not self.errors


def run_fuzzer(
    base_url: str,
    document: dict[str, Any],
    workdir: Path,
    *,
    max_examples: int,
    seed: int,
    max_time: float | None = None,
    timeout: float = 1800,
    extra_args: tuple[str, ...] = (),
    config: str = "",
) -> FuzzReport:
    """Run the Schemathesis CLI (every phase: examples, coverage, fuzzing, stateful) against `base_url`;
    `config` is schemathesis.toml text (e.g. SHARED_GRAPH_ROUTES_SKIP_COVERAGE)."""
    workdir.mkdir(parents=True, exist_ok=True)
    schema_file = workdir / "openapi.json"
    schema_file.write_text(json.dumps(document))
    config_file = workdir / "schemathesis.toml"
    config_file.write_text(config)
    report_dir = workdir / "report"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file),
        "run", str(schema_file), "--url", base_url, *CHECKS,
        "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1", "--continue-on-failure",
        "--request-timeout", "120", "--generation-database", "none", "--no-color",
        "--report", "json", "--report-dir", str(report_dir),
    ]  # fmt: skip
    if max_time is not None:
        command += ["--max-time", str(int(max_time))]
    command += extra_args
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    reports = sorted(report_dir.glob("*.json"))
    if not reports:
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    report = json.loads(reports[-1].read_text())
    return FuzzReport(
        exit_code=done.returncode,
        seed=seed,
        generated=report["test_cases"]["generated"],
        failures=report["failures"],
        errors=report["errors"],
        output=done.stdout + done.stderr,
        operations=report["operations"],
        phases={name: phase["status"] for name, phase in report["phases"].items()},
        valid_rates=report.get("valid_rates") or {},
    )

"""The README's scripting example runs as printed against a live server (at test size)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from server.graph.standard import txt2img_graph

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_GRAPH = Path(__file__).resolve().parents[2] / "examples" / "txt2img.json"


def scripting_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Scripting", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def test_the_example_graph_is_the_contract_graph():
    graph = json.loads(EXAMPLE_GRAPH.read_text(encoding="utf-8"))
    model = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
    assert graph == txt2img_graph(model, "a lighthouse at dusk", seed=42, width=128, height=128, steps=8)


def run_example(code: str, live, folder: Path) -> subprocess.CompletedProcess[str]:
    """The example as a reader copies it, pointed at the test server, run from a folder outside the repository."""
    port = live.url.rsplit(":", 1)[1]
    code = code.replace("127.0.0.1:9090", f"127.0.0.1:{port}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_readme_example_generates_an_image_from_any_folder(generation_server, tmp_path):
    live, _, _ = generation_server
    assert not (tmp_path / "examples").exists()
    result = run_example(scripting_example(), live, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"step {step}/8" for step in range(1, 9)]
    (png,) = tmp_path.glob("*.png")
    assert Image.open(png).size == (128, 128)


def test_the_readme_example_prints_the_servers_reason_when_refused(generation_server, tmp_path):
    live, _, _ = generation_server
    code = scripting_example()
    assert '"width": 128' in code
    result = run_example(code.replace('"width": 128', '"width": 100'), live, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "POST /app/graph: 422 Invalid `width`: Expected `int` that's a multiple of 8"
    assert not list(tmp_path.glob("*.png"))

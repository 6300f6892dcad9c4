"""The README's scripting example runs as printed against a live server (at test size)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

README = Path(__file__).resolve().parents[2] / "README.md"


def scripting_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Scripting", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def test_the_readme_example_generates_an_image(generation_server, tmp_path):
    live, _, _ = generation_server
    port = live.url.rsplit(":", 1)[1]
    code = scripting_example()
    for printed, small in (('"width": 512, "height": 512', '"width": 64, "height": 64'), ('"steps": 20', '"steps": 4')):
        assert printed in code
        code = code.replace(printed, small)
    code = code.replace("127.0.0.1:9090", f"127.0.0.1:{port}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"step {step}/4" for step in range(1, 5)]
    (png,) = tmp_path.glob("*.png")
    assert Image.open(png).size == (64, 64)

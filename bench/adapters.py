"""What switching LoRAs costs on a warm model: a plain generation against generations that alternate between two
LoRAs (a kohya and a LoHa file), tiny model, 256², 20 steps, node cache off so every run recomputes. The base
model must never be read again: the loader's own counter of reads from disk says so (not a timing).

Run:  .venv/bin/python bench/adapters.py [--runs 7] [--size 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import median
from starlette.testclient import TestClient

from server.app import build_app
from server.config import Settings
from server.events import SessionComplete
from server.graph.standard import txt2img_graph
from server.models.tiny import write_tiny_model
from server.models.tiny_adapters import write_tiny_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        folder = Path(tmp)
        files = [
            write_tiny_model(folder / "tiny"),
            write_tiny_lora(folder / "kohya.safetensors", "kohya", seed=3),
            write_tiny_lora(folder / "loha.safetensors", "loha", seed=4),
        ]
        settings = Settings(root=str(folder / "root"), node_cache_entries=0, watch=False)
        with TestClient(build_app(settings), base_url="http://127.0.0.1:9090") as client:
            configs = [client.post("/api/v1/models/import", json={"location": str(f)}).json() for f in files]
            model, *loras = [{k: c[k] for k in ("model_name", "base_model", "model_type")} for c in configs]
            loader = client.app.state.services.executor.loader
            finished: dict[str, threading.Event] = {}

            def on_event(event: object) -> None:
                if isinstance(event, SessionComplete) and event.session_id in finished:
                    finished[event.session_id].set()

            client.app.state.services.events.add_listener(on_event)

            def run(lora: dict | None) -> float:
                graph = txt2img_graph(
                    model, "a lighthouse", seed=1, width=args.size, height=args.size, steps=args.steps
                )
                if lora is not None:
                    graph["nodes"]["lora"] = {"id": "lora", "type": "lora_loader", "lora": lora, "weight": 0.7}
                    for edge in graph["edges"]:
                        if edge["source"]["node_id"] == "model" and edge["source"]["field"] in ("unet", "clip"):
                            edge["source"]["node_id"] = "lora"
                    for field in ("unet", "clip"):
                        graph["edges"].append(
                            {
                                "source": {"node_id": "model", "field": field},
                                "destination": {"node_id": "lora", "field": field},
                            }
                        )
                start = time.perf_counter()
                session_id = client.post("/api/v1/sessions/", json=graph).json()["id"]
                finished[session_id] = threading.Event()
                client.put(f"/api/v1/sessions/{session_id}/invoke")
                assert finished[session_id].wait(600), "the session did not finish"
                session = client.get(f"/api/v1/sessions/{session_id}").json()
                assert session["status"] == "completed", session["errors"]
                return time.perf_counter() - start

            run(None), run(loras[0]), run(loras[1])  # warm: base model and both LoRA files read once
            reads = loader.loads
            plain, switching = [], []
            for index in range(args.runs):
                plain.append(run(None))
                switching.append(run(loras[index % 2]))
            reread = loader.loads - reads
        ratio = median(switching) / median(plain)
        print(f"tiny model, {args.size}², {args.steps} steps, {args.runs} runs each, node cache off")
        print(
            f"plain {median(plain):.3f} s | switching LoRA (kohya ↔ LoHa, weight 0.7) {median(switching):.3f} s | "
            f"+{(ratio - 1) * 100:.1f}% (goal < 10%)"
        )
        print(f"files read from disk while switching: {reread} (goal 0: the base model is never reloaded)")
        if reread:
            raise SystemExit("the base model or a LoRA was read again")


if __name__ == "__main__":
    main()

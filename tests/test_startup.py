"""`imagegraph serve` answers /health before torch, diffusers or Pillow are imported, and creates the root layout."""

import json
import subprocess
import sys
import textwrap

# Runs the real CLI in a child process; a thread polls /health and reports which heavy modules are loaded
# at the moment the first 200 arrives, then stops the server.
PROBE = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time, urllib.request

    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()

    def probe():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    body = r.read().decode()
                heavy = sorted(m for m in ("torch", "diffusers", "transformers", "PIL") if m in sys.modules)
                print("REPORT " + json.dumps({"body": body, "heavy": heavy}), flush=True)
                break
            except OSError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=probe, daemon=True).start()
    from server.cli import main
    sys.exit(main(["serve", "--root", sys.argv[1], "--port", str(port)]))
    """
)


def test_health_answers_before_torch_is_imported(tmp_path):
    root = tmp_path / "fresh-root"
    result = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, timeout=120)
    reports = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert reports, result.stderr
    report = json.loads(reports[0].removeprefix("REPORT "))
    assert json.loads(report["body"]) == {"status": "ok"}
    assert report["heavy"] == []
    assert "imagegraph ready at http://127.0.0.1:" in result.stderr
    for folder in ("configs", "databases", "models", "autoimport/main", "outputs/images", "outputs/thumbnails"):
        assert (root / folder).is_dir(), folder
    assert (root / "databases" / "imagegraph.db").is_file()

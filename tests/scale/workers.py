"""Several processes on one PostgreSQL: `imagegraph serve --database URL --no-worker` servers (ServerProcess)
and `imagegraph worker` processes, each a real process a test may SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability.process import REPO, WAIT, stop_process


class WorkerProcess:
    """`python -m server worker --database URL --root ROOT --name NAME --lease LEASE`, logging to a file."""

    def __init__(
        self,
        database: str,
        root: Path,
        name: str,
        log_path: Path,
        lease_s: float = 3.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        with open(log_path, "ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "worker",
                    "--database",
                    database,
                    "--root",
                    str(root),
                    "--name",
                    name,
                    "--lease",
                    str(lease_s),
                    "--device",
                    "cpu",
                ],
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + WAIT
        while f"imagegraph worker {name} ready" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"worker {name} did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)

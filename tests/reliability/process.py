"""A real `imagegraph serve` in its own process, so that a test can kill it with SIGKILL (no cleanup, no
`finally`, no lifespan shutdown) and measure its memory. Shared by test_crash.py, test_load.py and
bench/soak.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WAIT = 120.0


class RootDatabases:
    """The database `imagegraph serve` on a root is given (IMAGEGRAPH_DATABASE): none (SQLite in the root) unless
    `pytest --database postgresql` set `fresh` (tests/conftest.py); then each root gets a fresh database of the
    run's cluster, the same one again when that root is served again (a restart)."""

    def __init__(self) -> None:
        self.fresh: Callable[[], str] | None = None
        self._by_root: dict[Path, str] = {}

    def environment(self, root: Path) -> dict[str, str]:
        if self.fresh is None:
            return {}
        key = root.resolve()
        if key not in self._by_root:
            self._by_root[key] = self.fresh()
        return {"IMAGEGRAPH_DATABASE": self._by_root[key]}


databases = RootDatabases()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it takes longer than 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


class ServerProcess:
    """`python -m server serve --root <root>` on a free loopback port; its log goes to `log_path` (a file, not a
    pipe: a pipe nobody reads fills up and blocks the server)."""

    def __init__(
        self,
        root: Path,
        log_path: Path,
        *,
        watch: bool = False,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.root = root
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        environment = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "IMAGEGRAPH_WATCH": "true" if watch else "false",
            **databases.environment(root),
            **(env or {}),
        }
        with open(log_path, "ab") as log:
            self._log_start = log.tell()
            log.write(f"--- serve --root {root} --port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--root", str(root), "--port", str(self.port), *(args or [])],
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=60)
        try:
            self.wait_until(lambda: self.http.get("/health").status_code == 200, what="/health to answer")
            # The model folders are read in the background after start-up: tests that drop files expect the
            # first sync to be behind them.
            self.wait_until(lambda: "models: first sync done" in self.log_text_since_start(), what="the first sync")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text_since_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode("utf-8", "replace")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
        """Poll `condition` (transport errors count as not yet) while the server is alive."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the server exited ({self.process.returncode}) waiting for {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the process dies wherever it is, as on a power cut of the process (not of the disk)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.http.close()

    def stop(self) -> None:
        stop_process(self.process)
        self.http.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

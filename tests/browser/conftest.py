"""Browser tests: a real server (its own process, so a test can kill it) and Debian's Chromium driven by
Playwright. Run them in their own pytest invocation (`pytest -m browser tests/browser`): a live sync
Playwright breaks asyncio for tests that run after it in the same process.

Every page fixture fails its test on any console error or uncaught exception, and leaves a screenshot in the
test's own tmp folder."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from server.models.tiny import write_tiny_model
from tests.reliability.process import databases

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parents[2]
# Every wait in these tests has a limit; generation on a busy 2-core machine is the slowest thing we wait for.
WAIT_MS = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """`python -m server serve` on a temp root; `restart()` kills it and starts it again on the same port."""

    root: Path
    port: int
    token: str | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **databases.environment(self.root),
            **self.extra_env,
        }
        args = [sys.executable, "-m", "server", "serve", "--root", str(self.root), "--port", str(self.port)]
        if self.token:
            args += ["--token", self.token]
        self.log_path = self.root.parent / "server.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer /health within 60 s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self) -> httpx.Client:
        return api_client(self.url, self.token)


def api_client(base_url: str, token: str | None = None) -> httpx.Client:
    """An HTTP client on the server's /api/v1, for arranging what a test needs and checking what it did."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=60)


def make_root(root: Path, *, with_model: bool = True) -> Path:
    """A root whose settings file asks for a preview at every step (so a short run shows several) and,
    optionally, the tiny model already waiting in autoimport/main."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "imagegraph.yaml").write_text("preview_interval_ms: 0\n")
    if with_model:
        write_tiny_model(root / "autoimport" / "main" / "tiny")
    return root


def wait_for_model(api: httpx.Client, name: str, timeout: float = 60) -> dict:
    """The model as the server lists it, once it is there (the watcher's start-up sync may still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get("/models/", params={"model_type": "main"})
        if response.status_code == 200:
            for model in response.json()["models"]:
                if model["model_name"] == name:
                    return model
        time.sleep(0.25)
    raise AssertionError(f"model {name!r} never appeared in /models/")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module; the tiny model waits in autoimport/main (see `tiny_model`)."""
    root = make_root(tmp_path_factory.mktemp("server") / "root")
    proc = ServerProcess(root=root, port=free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def tiny_model(server: ServerProcess) -> dict:
    """The tiny model, registered (by the watcher's start-up sync, or by this sync)."""
    with server.api() as api:
        api.post("/models/sync")
        return wait_for_model(api, "tiny")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # A failure, not a skip: a browser suite that silently does not run proves nothing (scripts/test installs it).
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install --no-install-recommends chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ConsoleWatch:
    """Console errors and uncaught exceptions of one page; `allow(pattern)` forgives expected ones."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def on_console(self, message) -> None:
        if message.type == "error":
            location = message.location or {}
            self.errors.append(f"console.error: {message.text} ({location.get('url', '')})")

    def on_page_error(self, error) -> None:
        self.errors.append(f"uncaught: {error}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@dataclass
class Ui:
    """A page on the server plus its console watch, with helpers the tests share."""

    page: object
    console: ConsoleWatch
    base_url: str

    def open(self, fragment: str = "#/generate") -> None:
        self.page.goto(f"{self.base_url}/{fragment}")
        self.wait_live()

    def wait_live(self, timeout: int = WAIT_MS) -> None:
        self.page.wait_for_selector('#connection[data-state="live"]', timeout=timeout)

    def go(self, page_name: str) -> None:
        """Navigate inside the app (a hash change, never a reload)."""
        self.page.click(f'nav a[data-page="{page_name}"]')
        self.page.wait_for_selector(f"#page-{page_name}:not([hidden])", timeout=WAIT_MS)

    def mark_document(self) -> None:
        """Leave a mark on `window` that a reload would erase."""
        self.page.evaluate("window.__noReload = true")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("window.__noReload === true"), "the page reloaded"

    def gallery_names(self) -> list[str]:
        return self.page.eval_on_selector_all("#gallery-grid .tile", "tiles => tiles.map(t => t.dataset.name)")


@contextlib.contextmanager
def open_ui(
    browser, base_url: str, tmp_path: Path, viewport: dict | None = None, token: str | None = None
) -> Iterator[Ui]:
    """A fresh browser context on `base_url`; on the way out, a screenshot and the console check."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    if token:
        context.add_init_script(f"localStorage.setItem('imagegraph.token', {token!r})")
    page = context.new_page()
    console = ConsoleWatch()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    try:
        yield Ui(page=page, console=console, base_url=base_url)
    finally:
        try:
            page.screenshot(path=str(tmp_path / "screenshot.png"))
        finally:
            context.close()
    unexpected = console.unexpected()
    assert not unexpected, "errors in the browser console:\n" + "\n".join(unexpected)


@pytest.fixture
def ui(browser, server: ServerProcess, tmp_path: Path) -> Iterator[Ui]:
    with open_ui(browser, server.url, tmp_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `copy_tiny_model` keeps the tiny model it writes once per session, in each format."""
    return tmp_path_factory.mktemp("tiny-cache")


def copy_tiny_model(cache: Path, dest: Path, fmt: str = "diffusers") -> Path:
    """Copy the tiny model (written once into `cache`) to `dest` in one rename, so a watcher never sees a
    half-copied model: it is staged in `cache`, which is on the same file system."""
    suffix = {"diffusers": "", "checkpoint": ".safetensors", "ckpt": ".ckpt"}[fmt]
    source = cache / f"tiny-{fmt}{suffix}"
    if not source.exists():
        write_tiny_model(source, fmt)
    staging = cache / f"staging-{time.monotonic_ns()}{suffix}"
    if source.is_dir():
        shutil.copytree(source, staging)
    else:
        shutil.copyfile(source, staging)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dest)
    return dest


def import_models(api: httpx.Client, *paths: Path) -> list[dict]:
    """Register model files (LoRAs, embeddings, VAEs, main models) by path, as the Models page's Import does."""
    configs = []
    for path in paths:
        response = api.post("/models/import", json={"location": str(path)})
        assert response.status_code == 201, response.text
        configs.append(response.json())
    return configs


def fill_form(
    ui: Ui, *, prompt: str, size: int, steps: int, seed: int | None, count: int = 1, model: str = "sd-1/main/tiny"
) -> None:
    """The Generate form's basic fields, as a person sets them (the model first: it may change the size)."""
    ui.page.wait_for_selector(f'#gen-model option[value="{model}"]', state="attached", timeout=WAIT_MS)
    ui.page.select_option("#gen-model", model)
    ui.page.fill("#gen-prompt", prompt)
    ui.page.fill("#gen-negative", "")
    ui.page.fill("#gen-width", str(size))
    ui.page.fill("#gen-height", str(size))
    ui.page.fill("#gen-steps", str(steps))
    ui.page.fill("#gen-cfg", "7.5")
    ui.page.select_option("#gen-scheduler", "euler")
    if seed is None:
        ui.page.check("#gen-randomize")
    else:
        ui.page.uncheck("#gen-randomize")
        ui.page.fill("#gen-seed", str(seed))
    ui.page.fill("#gen-count", str(count))


def pick(ui: Ui, picker: str, text: str, value: str) -> None:
    """Type `text` into a searchable picker of the Generate form (`lora`, `embedding`) and click the option
    `value` (a model key) in its list."""
    ui.page.fill(f"#gen-{picker}-search", text)
    ui.page.click(f'#gen-{picker}-options [role="option"][data-value="{value}"]')


def offered(ui: Ui, picker: str) -> list[str]:
    """The model keys a searchable picker offers with nothing typed; the list is closed again after."""
    ui.page.fill(f"#gen-{picker}-search", "")
    ui.page.wait_for_selector(f"#gen-{picker}-options:not([hidden])", timeout=WAIT_MS)
    values = ui.page.eval_on_selector_all(f"#gen-{picker}-options [role=option]", "os => os.map(o => o.dataset.value)")
    ui.page.press(f"#gen-{picker}-search", "Escape")
    return values


def lora_weight(key: str) -> str:
    """The selector of the weight (number) of the LoRA `key` in the Generate form's list."""
    return f'#gen-loras li[data-lora="{key}"] [data-weight]'

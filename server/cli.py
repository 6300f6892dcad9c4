"""`imagegraph serve | worker | make-tiny-model | generate`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from server import rootlock
from server.config import Settings, SettingsError, load_settings

log = logging.getLogger("imagegraph")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagegraph", description="A node-graph image-generation server.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--root", help="root folder (default ~/imagegraph; env IMAGEGRAPH_ROOT)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 9090)")
    serve.add_argument("--token", help="access token; required to bind anything but loopback")
    serve.add_argument("--device", help="auto, cpu, cuda or mps")
    serve.add_argument("--log-level", dest="log_level", help="debug, info, warning or error")
    serve.add_argument("--database", help="postgresql://user@host:port/db shared with other servers and workers")
    serve.add_argument(
        "--no-worker", dest="run_sessions", action="store_const", const=False, help="run no sessions here (workers do)"
    )

    worker = commands.add_parser("worker", help="run sessions from a shared PostgreSQL queue (no HTTP)")
    worker.add_argument("--database", required=True, help="postgresql://user@host:port/db, as the servers use")
    worker.add_argument("--root", help="the root folder the servers share (models and outputs)")
    worker.add_argument("--device", help="auto, cpu, cuda (cuda:N picks the GPU through CUDA_VISIBLE_DEVICES) or mps")
    worker.add_argument("--name", dest="worker_name", help="name in GET /api/v1/workers (default host:pid)")
    worker.add_argument("--lease", dest="lease_s", type=float, help="seconds a silent worker keeps its session")
    worker.add_argument("--log-level", dest="log_level", help="debug, info, warning or error")

    _add_generate(commands)

    tiny = commands.add_parser(
        "make-tiny-model",
        help="write a tiny random-weight SD-1, SD-2, SDXL or SDXL-refiner model (for demos and tests)",
    )
    tiny.add_argument("out", type=Path, help="folder (diffusers) or file (checkpoint: .safetensors, ckpt: .ckpt)")
    tiny.add_argument("--format", choices=["diffusers", "checkpoint", "ckpt"], default="diffusers")
    tiny.add_argument("--base", choices=["sd-1", "sd-2", "sdxl", "sdxl-refiner"], default="sd-1")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--full-size",
        action="store_true",
        help="random weights in the real architecture (sd-1: SD-1.5, ~2 GB; sdxl: ~7 GB), a diffusers folder",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "make-tiny-model":
        return _make_tiny_model(args)
    if args.command == "generate":
        return _generate(args)
    raise AssertionError(args.command)


def _settings_from(args: argparse.Namespace, keys: tuple[str, ...]) -> Settings | None:
    try:
        settings = load_settings({key: getattr(args, key) for key in keys})
    except SettingsError as exc:
        print(f"imagegraph: {exc}", file=sys.stderr)
        return None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchfiles logs every batch of changes at INFO; the model manager logs what a change did.
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    return settings


def _serve(args: argparse.Namespace) -> int:
    keys = ("root", "host", "port", "token", "device", "log_level", "database", "run_sessions")
    settings = _settings_from(args, keys)
    return 2 if settings is None else run_server(settings)


def _worker(args: argparse.Namespace) -> int:
    device = args.device
    if device and device.startswith("cuda:"):
        # One GPU per worker: the process sees only its own, as device 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        args.device = "cuda"
    settings = _settings_from(args, ("root", "device", "log_level", "database", "worker_name", "lease_s"))
    if settings is None:
        return 2
    if not settings.shared_database:
        print("imagegraph: bad setting `database`: a worker needs a postgresql:// URL", file=sys.stderr)
        return 2
    import asyncio

    from server.worker import run_worker

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))
    return 0


def server_url(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def listen(settings: Settings) -> socket.socket:
    """The server's socket, bound before the root is touched: a port in use stops us with nothing changed."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        holder = rootlock.holder(settings.root_path)
        also = f"; {rootlock.describe(holder)} already serves {settings.root_path} there" if holder else ""
        raise rootlock.RootProblem(f"cannot listen on {server_url(settings)}: {reason.lower()}{also}") from None
    sock.set_inheritable(True)
    return sock


def run_server(settings: Settings) -> int:
    """Check the root, bind the port, lock the root, then serve until stopped. 0 after a clean stop (Ctrl-C,
    SIGTERM); 2, with one line on stderr, when the server could not start."""
    try:
        rootlock.check_root(settings.root_path)
        sock = listen(settings)
    except rootlock.RootProblem as exc:
        print(f"imagegraph: {exc}", file=sys.stderr)
        return 2
    # On SQLite the root is one server's; on a shared database several servers and workers share it.
    lock = None if settings.shared_database else rootlock.RootLock(settings.root_path)
    try:
        if lock is not None:
            lock.acquire(server_url(settings))
    except (rootlock.RootProblem, OSError) as exc:
        sock.close()
        print(f"imagegraph: {exc}", file=sys.stderr)
        return 2
    try:
        _serve_forever(settings, sock)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled, once the server has stopped cleanly
    finally:
        if lock is not None:
            lock.release()
        sock.close()
    return 0


def uvicorn_config(settings: Settings, app: Any) -> Any:
    """How `imagegraph serve` configures uvicorn (tests that start a live server use this very configuration)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ws_ping_interval=settings.ws_heartbeat_s,
        ws_ping_timeout=settings.ws_heartbeat_s,
        # Each event is encoded once and shared by every client; per-connection deflate would compress it again
        # for each one (bench/ws_fanout.py: about 3x fewer events/s at 100 clients) for little gain on JSON this small.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )


def make_server(settings: Settings) -> Any:
    """The uvicorn server `imagegraph serve` runs, app included (the WebSocket heartbeat tests run this one)."""
    import uvicorn

    from server.app import build_app

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                log.info("imagegraph ready at %s", server_url(settings))

    return Server(uvicorn_config(settings, build_app(settings)))


def _serve_forever(settings: Settings, sock: socket.socket) -> None:
    make_server(settings).run(sockets=[sock])


def _make_tiny_model(args: argparse.Namespace) -> int:
    if args.full_size:
        from server.models.fullsize import FULL_SIZE_BASES, write_full_size_model

        if args.base not in FULL_SIZE_BASES or args.format != "diffusers":
            print(f"--full-size writes a diffusers folder of {' or '.join(FULL_SIZE_BASES)}", file=sys.stderr)
            return 2
        print(write_full_size_model(args.out, args.base, seed=args.seed))
        return 0
    from server.models.tiny import write_tiny_model

    path = write_tiny_model(args.out, args.format, seed=args.seed, base=args.base)
    print(path)
    return 0


def _bounded_int(low: int, high: int | None = None, multiple_of: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high if high is not None else ''}")
        if value % multiple_of:
            raise argparse.ArgumentTypeError(f"{value} is not a multiple of {multiple_of}")
        return value

    return parse


def _add_generate(commands) -> None:
    from server.graph.schedulers import SCHEDULER_NAMES

    gen = commands.add_parser(
        "generate",
        help="generate images on a running server",
        description="Text to image on a running server: one PNG per image in --out, their paths on stdout.",
    )
    gen.add_argument("prompt", help="what to draw (prompt weighting: word++, word--, (words)1.3)")
    gen.add_argument("--negative", default="", help="what to avoid (default: nothing)")
    size = _bounded_int(64, 4096, multiple_of=8)
    gen.add_argument("--model", help="main model name or base/type/name (default: the first the server lists)")
    gen.add_argument(
        "--width", type=size, default=512, help="pixels, a multiple of 8 from 64 to 4096 (default: %(default)s)"
    )
    gen.add_argument(
        "--height", type=size, default=512, help="pixels, a multiple of 8 from 64 to 4096 (default: %(default)s)"
    )
    gen.add_argument("--steps", type=_bounded_int(1, 1000), default=20, help="denoising steps (default: %(default)s)")
    gen.add_argument("--cfg", type=float, default=7.5, help="guidance scale (default: %(default)s)")
    gen.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="euler", help="sampler (default: %(default)s)")
    gen.add_argument("--seed", type=_bounded_int(0, 2**32 - 1), help="first seed (default: random)")
    gen.add_argument(
        "--count",
        type=_bounded_int(1, 1000),
        default=1,
        help="images, one session each, seeds seed, seed+1... (default: %(default)s)",
    )
    gen.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (default: the current folder)")
    gen.add_argument(
        "--server",
        default=os.environ.get("IMAGEGRAPH_SERVER", "http://127.0.0.1:9090"),
        help="the server's URL (default: %(default)s; env IMAGEGRAPH_SERVER); e.g. http://127.0.0.1:9191 for a "
        "server started with --port 9191",
    )
    gen.add_argument("--token", default=os.environ.get("IMAGEGRAPH_TOKEN"), help="access token (env IMAGEGRAPH_TOKEN)")


def _generate(args: argparse.Namespace) -> int:
    from server import generate

    request = generate.Request(
        prompt=args.prompt,
        negative=args.negative,
        model=args.model,
        width=args.width,
        height=args.height,
        steps=args.steps,
        cfg=args.cfg,
        scheduler=args.scheduler,
        seed=args.seed,
        count=args.count,
        out=args.out,
        server=args.server,
        token=args.token,
    )
    return generate.main(request)

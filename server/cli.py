"""`imagegraph serve | make-tiny-model | generate`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

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

    _add_generate(commands)

    tiny = commands.add_parser("make-tiny-model", help="write a tiny random-weight SD-1.x model (for demos and tests)")
    tiny.add_argument("out", type=Path, help="folder (diffusers) or file (checkpoint: .safetensors, ckpt: .ckpt)")
    tiny.add_argument("--format", choices=["diffusers", "checkpoint", "ckpt"], default="diffusers")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "make-tiny-model":
        return _make_tiny_model(args)
    if args.command == "generate":
        return _generate(args)
    raise AssertionError(args.command)


def _serve(args: argparse.Namespace) -> int:
    flags = {key: getattr(args, key) for key in ("root", "host", "port", "token", "device", "log_level")}
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"imagegraph: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchfiles logs every batch of changes at INFO; the model manager logs what a change did.
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    run_server(settings)
    return 0


def run_server(settings: Settings) -> None:
    import uvicorn

    from server.app import build_app

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                host = f"[{settings.host}]" if ":" in settings.host else settings.host
                log.info("imagegraph ready at http://%s:%d", host, settings.port)

    config = uvicorn.Config(
        build_app(settings),
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
    Server(config).run()


def _make_tiny_model(args: argparse.Namespace) -> int:
    from server.models.tiny import write_tiny_model

    path = write_tiny_model(args.out, args.format, seed=args.seed)
    print(path)
    return 0


def _bounded_int(low: int, high: int | None = None):
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high if high is not None else ''}")
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
    gen.add_argument("--negative", default="", help="what to avoid")
    gen.add_argument("--model", help="main model name or base/type/name (default: the first the server lists)")
    gen.add_argument("--width", type=_bounded_int(8), default=512)
    gen.add_argument("--height", type=_bounded_int(8), default=512)
    gen.add_argument("--steps", type=_bounded_int(1), default=20)
    gen.add_argument("--cfg", type=float, default=7.5, help="guidance scale (default 7.5)")
    gen.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="euler")
    gen.add_argument("--seed", type=_bounded_int(0, 2**32 - 1), help="first seed (default: random)")
    gen.add_argument("--count", type=_bounded_int(1, 1000), default=1, help="images, one session each (seed+i)")
    gen.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (default: .)")
    gen.add_argument(
        "--server",
        default=os.environ.get("IMAGEGRAPH_SERVER", "http://127.0.0.1:9090"),
        help="server URL (default http://127.0.0.1:9090; env IMAGEGRAPH_SERVER)",
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

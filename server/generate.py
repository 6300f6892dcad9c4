"""`imagegraph generate`: text-to-image against a running server, over the public API only.

It builds the standard txt2img graph (server/graph/standard.py), creates one session per image (seeds `seed`,
`seed + 1`, ...), subscribes to them on `/ws` before invoking so no event is missed, shows a progress bar per
image, downloads each PNG into `--out` and prints its path. A dropped WebSocket is resumed with `since`.
Ctrl-C cancels the sessions that have not finished. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import msgspec

from server.fileio import atomic_write

DEFAULT_SERVER = "http://127.0.0.1:9090"
MAX_SEED = 2**32 - 1
FINISHED = ("completed", "failed", "canceled")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.png")
RECONNECTS = 5
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class GenerateError(Exception):
    """A failure the user can act on; the message is the one line we print."""


@dataclass(frozen=True, kw_only=True)
class Request:
    prompt: str
    negative: str = ""
    model: str | None = None
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg: float = 7.5
    scheduler: str = "euler"
    seed: int | None = None
    count: int = 1
    out: Path = Path(".")
    server: str = DEFAULT_SERVER
    token: str | None = None


def graph_settings(request: Request, model: dict[str, str], seed: int) -> dict[str, Any]:
    """The GenerationSettings the server builds the standard graph from (POST /app/graph)."""
    return {
        "model": model,
        "prompt": request.prompt,
        "negative_prompt": request.negative,
        "seed": seed,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "cfg_scale": request.cfg,
        "scheduler": request.scheduler,
    }


def websocket_url(server: str, token: str | None) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = f"token={quote(token, safe='')}" if token else ""
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", query, ""))


@dataclass
class Job:
    """One image: its session on the server and what we know of it so far."""

    index: int
    seed: int
    session_id: str
    invoked: bool = False
    status: str = "queued"
    image_name: str | None = None
    error: str | None = None
    bar: Any = None


@dataclass
class Run:
    request: Request
    jobs: dict[str, Job] = field(default_factory=dict)
    last_seq: int = 0
    saved: list[Path] = field(default_factory=list)
    # A line for the person about the run (stderr, above the progress bars).
    note: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))

    @property
    def unfinished(self) -> list[str]:
        return [job.session_id for job in self.jobs.values() if job.status not in FINISHED]

    @property
    def queued(self) -> list[str]:
        """Sessions we queued that have not finished: what would run for nobody if we left now."""
        return [job.session_id for job in self.jobs.values() if job.invoked and job.status not in FINISHED]


class Client:
    """The REST calls we make, each turning a failure into one actionable line."""

    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=httpx.Timeout(30.0))

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, "/api/v1" + path, **kwargs)
        except httpx.ConnectError:
            raise GenerateError(
                f"cannot reach the server at {self.server}: is `imagegraph serve` running there?"
            ) from None
        except httpx.HTTPError as exc:
            raise GenerateError(f"request to {self.server} failed: {exc}") from None
        if response.status_code == 401:
            raise GenerateError(f"{_detail(response)} (pass --token or set IMAGEGRAPH_TOKEN)")
        if response.status_code >= 400:
            raise GenerateError(f"{method} {path} failed ({response.status_code}): {_detail(response)}")
        return response

    async def close(self) -> None:
        await self.http.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    detail = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    errors = body.get("errors") if isinstance(body, dict) else None
    # The detail already says the first problem; list the others (a single one would be said twice).
    if errors and len(errors) > 1:
        detail += "; " + "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in errors[1:])
    return detail


async def pick_model(client: Client, wanted: str | None) -> dict[str, str]:
    """`wanted` is a model name or `base/type/name`; None takes the first main model the server lists."""
    listing = (await client.call("GET", "/models/", params={"model_type": "main"})).json()["models"]
    identifiers = [{k: m[k] for k in ("model_name", "base_model", "model_type")} for m in listing]
    if wanted is None:
        if not identifiers:
            raise GenerateError(
                "the server has no main model: drop one into <root>/autoimport/main "
                "(`imagegraph make-tiny-model` writes a small demo model)"
            )
        return identifiers[0]
    for model in identifiers:
        if wanted in (model["model_name"], f"{model['base_model']}/{model['model_type']}/{model['model_name']}"):
            return model
    available = ", ".join(m["model_name"] for m in identifiers) or "none"
    raise GenerateError(f"the server has no main model named {wanted!r} (available: {available})")


async def generate(request: Request, run: Run, make_bar: Callable[..., Any], say: Callable[[str], None]) -> None:
    """Create, watch and download every image of `request`; fills `run` as it goes so the caller can cancel
    what is left if we are interrupted."""
    client = Client(request.server, request.token)
    try:
        model = await pick_model(client, request.model)
        first_seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        request.out.mkdir(parents=True, exist_ok=True)
        for index in range(request.count):
            settings = graph_settings(request, model, (first_seed + index) % (MAX_SEED + 1))
            graph = (await client.call("POST", "/app/graph", json=settings)).json()
            session = (await client.call("POST", "/sessions/", json=graph)).json()
            job = Job(index=index, seed=graph["nodes"]["noise"]["seed"], session_id=session["id"])
            run.jobs[job.session_id] = job
        await _watch(client, request, run, make_bar, say)
    finally:
        await client.close()


async def until_interrupted(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until it ends or Ctrl-C cancels it (then KeyboardInterrupt). asyncio.run's own handler cancels
    once, and a cancel that lands while httpx closes a response (inside anyio's shielded cleanup) is dropped:
    the run then went on to its last step (tests/ws/test_generation.py). So the cancel is repeated until the
    work has stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        if not task.done():
            task.cancel()
            loop.call_later(0.25, interrupt)

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        await task
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if interrupted:
        raise KeyboardInterrupt  # it ended just as Ctrl-C came


async def _watch(client: Client, request: Request, run: Run, make_bar: Callable[..., Any], say) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    url = websocket_url(request.server, request.token)
    decoder = msgspec.json.Decoder()
    failures = 0
    while run.unfinished:
        try:
            async with connect(url, compression=None, max_size=None, open_timeout=10) as ws:
                if failures:
                    _notice(run, say, f"reconnected to {request.server}", postfix="")
                subscribe: dict[str, Any] = {"type": "subscribe", "sessions": list(run.jobs)}
                if any(job.invoked for job in run.jobs.values()):
                    subscribe["since"] = run.last_seq  # resume: the server replays what we missed
                await ws.send(msgspec.json.encode(subscribe).decode())
                # Messages are handled in order: the pong means the subscription is in place.
                await ws.send('{"type": "ping"}')
                if not all(job.invoked for job in run.jobs.values()):
                    run.last_seq = max(run.last_seq, await _until_pong(ws, decoder))
                    for job in run.jobs.values():
                        if not job.invoked:
                            await client.call("PUT", f"/sessions/{job.session_id}/invoke")
                            job.invoked = True
                async for frame in ws:
                    event = decoder.decode(frame)
                    failures = 0
                    if event.get("type") == "resync_required":
                        await _catch_up_from_rest(client, run, say, event.get("seq", 0))
                    else:
                        await _handle(event, client, run, make_bar, say)
                    if not run.unfinished:
                        return
            problem: Exception = ConnectionError("the server closed the connection")
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise GenerateError(f"the server refused the WebSocket ({status}): check --token and --server") from None
        except (OSError, ConnectionClosed, TimeoutError) as exc:
            problem = exc
        failures += 1
        if failures > RECONNECTS:
            raise GenerateError(f"lost the connection to {request.server}: {problem}")
        delay = 0.2 * 2**failures
        _notice(
            run,
            say,
            f"lost the connection to {request.server} ({problem or type(problem).__name__}); "
            f"reconnecting in {delay:.1f} s (try {failures} of {RECONNECTS})",
            postfix="reconnecting",
        )
        await asyncio.sleep(delay)


def _notice(run: Run, say: Callable[[str], None], line: str, *, postfix: str) -> None:
    """Tell the person what the connection is doing, on the bars and on stderr (never stdout: paths only)."""
    for job in run.jobs.values():
        if job.bar is not None and job.status not in FINISHED:
            job.bar.set_postfix_str(postfix, refresh=True)
    run.note(f"imagegraph: {line}")


async def _until_pong(ws, decoder: msgspec.json.Decoder) -> int:
    """Wait for the pong; its seq is the point our subscription is in step with."""
    while (message := decoder.decode(await ws.recv())).get("type") != "pong":
        pass
    return message.get("seq", 0)


async def _handle(event: dict[str, Any], client: Client, run: Run, make_bar, say) -> None:
    """Apply one event of our sessions to its job."""
    # A pong's seq counts too: every event we cover up to it was queued to us before it.
    run.last_seq = max(run.last_seq, event.get("seq", 0))
    job = run.jobs.get(event.get("session_id", ""))
    if job is None:
        return
    kind = event["type"]
    if job.status in FINISHED:
        return  # already finished (events replayed after a catch-up over REST)
    if kind == "session_started" and job.bar is None:
        job.bar = make_bar(job, run.request.steps)  # shown from the start, while models load
    elif kind == "generator_progress":
        if job.bar is None:
            job.bar = make_bar(job, event["total_steps"])
        job.bar.total = event["total_steps"]
        job.bar.n = event["step"]
        job.bar.refresh()
    elif kind == "invocation_complete" and event.get("source_node_id") == "decode":
        job.image_name = event["result"]["image"]["image_name"]
    elif kind == "invocation_error":
        job.error = f"{event['source_node_id']}: {event['error']}"
    elif kind == "session_complete":
        job.status = event["status"]
        await _finish(job, client, run, say)


async def _catch_up_from_rest(client: Client, run: Run, say: Callable[[str], None], seq: int) -> None:
    """The events we missed are gone (we were away too long, or the server restarted): read where each
    session stands over REST, finish those that finished, and follow the rest live from `seq` on (the
    subscription is in place: what happens from now on reaches us)."""
    run.last_seq = seq
    for job in list(run.jobs.values()):
        if job.status in FINISHED:
            continue
        session = (await client.call("GET", f"/sessions/{job.session_id}")).json()
        if session["status"] in FINISHED:
            job.status = session["status"]
            decoded = session["results"].get("decode") or {}
            job.image_name = (decoded.get("image") or {}).get("image_name")
            job.error = "; ".join(f"{node}: {message}" for node, message in session["errors"].items()) or None
            await _finish(job, client, run, say)
        elif job.bar is not None:
            job.bar.reset(total=job.bar.total)  # it starts again from the first step (a restarted server)


async def _finish(job: Job, client: Client, run: Run, say: Callable[[str], None]) -> None:
    if job.bar is not None:
        if job.status == "completed":
            job.bar.n = job.bar.total  # full even when the steps came from the node cache (no progress events)
        job.bar.set_postfix_str("", refresh=True)
        job.bar.close()
    if job.status != "completed":
        reason = f": {job.error}" if job.error else ""
        raise GenerateError(f"image {job.index + 1} (session {job.session_id}) {job.status}{reason}")
    if job.image_name is None:
        raise GenerateError(f"session {job.session_id} completed without an image")
    response = await client.call("GET", f"/images/{quote(job.image_name)}/full")
    # The name comes from the server: use it as a file name only if it is a plain one.
    plain = SAFE_NAME.fullmatch(job.image_name) is not None
    path = run.request.out / (job.image_name if plain else f"{job.session_id}.png")
    atomic_write(path, response.content, temp_name=f".{path.name}.part")
    run.saved.append(path)
    say(str(path))


def cancel_sessions(server: str, token: str | None, session_ids: list[str]) -> tuple[int, list[str]]:
    """Ask the server to cancel each session (outside the event loop): how many it took, and the ids it could
    not be asked about (not answering). A session that finished meanwhile is neither."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    canceled, unreachable = 0, []
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=10.0) as http:
        for session_id in session_ids:
            try:
                response = http.delete(f"/api/v1/sessions/{session_id}/invoke")
            except httpx.HTTPError:
                unreachable.append(session_id)
                continue
            canceled += response.status_code == 202
    return canceled, unreachable


def main(request: Request, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    from tqdm import tqdm

    run = Run(request)

    def make_bar(job: Job, total: int) -> Any:
        label = f"image {job.index + 1}/{request.count} (seed {job.seed})"
        return tqdm(total=total, desc=label, unit="step", file=stderr, leave=True, dynamic_ncols=True)

    def say(line: str) -> None:
        print(line, file=stdout, flush=True)

    run.note = lambda line: tqdm.write(line, file=stderr)
    try:
        asyncio.run(until_interrupted(generate(request, run, make_bar, say)))
    except GenerateError as exc:
        _close_bars(run)
        print(f"imagegraph: {exc}", file=stderr)
        # The images still queued would run for nobody: take them off the server's queue, and say so.
        left = run.queued
        if left:
            canceled, unreachable = cancel_sessions(request.server, request.token, left)
            if canceled:
                print(f"imagegraph: canceled {canceled} queued session(s) on the server", file=stderr)
            if unreachable:
                print(
                    f"imagegraph: could not cancel {len(unreachable)} queued session(s): the server is not "
                    "answering; they run when it is back unless canceled there: " + ", ".join(unreachable),
                    file=stderr,
                )
        return EXIT_FAILED
    except KeyboardInterrupt:
        _close_bars(run)
        left = run.queued
        canceled, _ = cancel_sessions(request.server, request.token, left) if left else (0, [])
        print(f"imagegraph: interrupted; canceled {canceled} session(s) on the server", file=stderr)
        return EXIT_INTERRUPTED
    return 0


def _close_bars(run: Run) -> None:
    for job in run.jobs.values():
        if job.bar is not None:
            job.bar.close()

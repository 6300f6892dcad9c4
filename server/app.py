"""`build_app(settings)`: the Starlette app, its routes, middleware, and a lifespan that starts and stops
every service in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from server.config import Settings
from server.db import Database
from server.db_sqlite import SQLiteDatabase
from server.events import Emit, ServerEvent
from server.graph.executor import Executor
from server.graph.session import SessionStore
from server.graph.workflows import WorkflowStore
from server.http import app as app_routes
from server.http import boards as board_routes
from server.http import images as image_routes
from server.http import models as model_routes
from server.http import nodes as node_routes
from server.http import queue as queue_routes
from server.http import sessions as session_routes
from server.http import workflows as workflow_routes
from server.http.errors import EXCEPTION_HANDLERS
from server.http.io import json_response
from server.http.openapi import build_openapi
from server.http.security import SecurityMiddleware
from server.http.settle import EventsSettledMiddleware
from server.http.websocket import websocket_endpoint
from server.images.service import ImageService
from server.journal import Journal
from server.models.catalogue import ModelCatalogue
from server.models.operations import ModelOperations
from server.models.paths import PathRules
from server.models.transforms import ModelTransforms
from server.services import Services
from server.ws.hub import EventHub
from server.ws.messages import ClientRequest

log = logging.getLogger("imagegraph")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


API_PREFIX = "/api/v1"
A1111_PREFIX = "/sdapi/v1"


def api_routes() -> list[BaseRoute]:
    """Every resource's routes, relative to `/api/v1` (also what the OpenAPI document is built from)."""
    return [
        *app_routes.routes,
        *image_routes.routes,
        *board_routes.routes,
        *model_routes.routes,
        *session_routes.routes,
        *node_routes.routes,
        *queue_routes.routes,
        *workflow_routes.routes,
    ]


def _a1111_routes() -> list[BaseRoute]:
    from server.http.a1111 import routes as a1111_routes

    return list(a1111_routes.routes)


class LazyRouter:
    """A router whose routes are imported on first use (a request under its mount, or the OpenAPI document):
    the A1111-compatible API and the Pillow it needs stay out of the server's start-up."""

    def __init__(self, load_routes: Callable[[], list[BaseRoute]]) -> None:
        self._load_routes = load_routes
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(routes=self._load_routes())
        return self._router

    @property
    def routes(self) -> list[BaseRoute]:
        return self.router.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, send)


def open_database(settings: Settings) -> Database:
    """The engine `settings.database` names: a `postgresql://` URL, or the SQLite file in the root."""
    if settings.shared_database:
        # Imported only then: asyncpg and the shared queue stay out of the embedded server's start-up.
        from server.db_postgres import PostgresDatabase

        return PostgresDatabase(settings.database)
    return SQLiteDatabase(settings.db_path)


def build_services(settings: Settings, db: Database, hub: EventHub, emit: Emit | None = None) -> Services:
    """Every service, wired: each producer gets the hub's `emit` (on a shared database, the event log's, whose
    relay feeds the hub), and what else it needs, from here."""
    emit = emit or hub.emit
    sessions = SessionStore(db)
    workflows = WorkflowStore(db)

    async def workflow_of(session_id: str) -> str | None:
        workflow_id = await sessions.workflow_id_of(session_id)
        return None if workflow_id is None else await workflows.chunk(workflow_id)

    images = ImageService(settings, db, emit, graph_of=sessions.graph_of, workflow_of=workflow_of)
    paths = PathRules(settings.root_path, settings.models_dir, settings.search_roots)
    models = ModelCatalogue(settings, emit, paths.allowed_folders())
    operations = ModelOperations(models, paths)
    return Services(
        settings=settings,
        db=db,
        events=hub,
        images=images,
        sessions=sessions,
        workflows=workflows,
        models=models,
        model_operations=operations,
        model_transforms=ModelTransforms(models, paths, operations),
        executor=_executor(settings, emit, sessions, images, models, db),
    )


def _executor(
    settings: Settings, emit: Emit, sessions: SessionStore, images: ImageService, models: ModelCatalogue, db: Database
) -> Executor:
    if settings.shared_database:
        from server.db_postgres import PostgresDatabase
        from server.graph.shared_worker import SharedExecutor

        assert isinstance(db, PostgresDatabase)
        return SharedExecutor(settings, emit, sessions, images, models, db)
    return Executor(settings, emit, sessions, images, models)


def _event_log(settings: Settings, db: Database, hub: EventHub) -> Any:
    """On a shared database, the events table every server relays into its hub (server/ws/event_log.py)."""
    if not settings.shared_database:
        return None
    from server.db_postgres import PostgresDatabase
    from server.ws.event_log import EventLog

    assert isinstance(db, PostgresDatabase)
    return EventLog(db, hub, settings.ws_replay_events)


def build_app(settings: Settings) -> Starlette:
    # Under their own mount, an unknown API path is a JSON 404 and a wrong method a 405, never the static files.
    routes: list[BaseRoute] = [
        Route("/health", app_routes.health, methods=["GET"]),
        WebSocketRoute("/ws", websocket_endpoint),
        Mount(API_PREFIX, routes=api_routes()),
        Mount(A1111_PREFIX, app=LazyRouter(_a1111_routes)),
    ]
    openapi_cache: dict[str, bytes] = {}

    async def openapi(request: Request) -> Response:
        if "doc" not in openapi_cache:
            document = build_openapi(routes, extra_types=(ServerEvent, ClientRequest))
            openapi_cache["doc"] = bytes(json_response(document).body)
        return Response(openapi_cache["doc"], media_type="application/json")

    async def docs(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "docs.html")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.create_layout()
        db = open_database(settings)
        await db.open()
        hub = EventHub(settings.ws_replay_events, settings.ws_client_queue)
        hub.bind(asyncio.get_running_loop())
        hub.add_listener(Journal())
        event_log = _event_log(settings, db, hub)
        svc = build_services(settings, db, hub, event_log.emit if event_log else None)
        app.state.services = svc
        app.state.event_log = event_log
        if event_log is not None:
            hub.add_listener(svc.executor.on_event)  # type: ignore[attr-defined]  # the SharedExecutor's
        # If a service fails to start, the ones already started are stopped again, in reverse order.
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(db.close)
            if event_log is not None:
                await event_log.start()
                stack.push_async_callback(event_log.stop)
            await svc.images.start()
            stack.push_async_callback(svc.images.stop)
            # Reads models.yaml and starts the watcher; the first sync runs in the background.
            await svc.models.start()
            stack.push_async_callback(svc.models.stop)
            # The executor starts last (it runs queued sessions, which need every other service) and stops first.
            await svc.executor.start()
            stack.push_async_callback(svc.executor.stop)
            yield

    app = Starlette(
        routes=[
            *routes,
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
        ],
        middleware=[
            Middleware(SecurityMiddleware, settings=settings),
            Middleware(GZipMiddleware, minimum_size=1024, compresslevel=5),
            Middleware(EventsSettledMiddleware),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app

"""What the routes reach through `request.app.state.services`: each service built once by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from server.config import Settings
from server.db import Database
from server.ws.hub import EventHub

if TYPE_CHECKING:
    from server.graph.executor import Executor
    from server.graph.session import SessionStore
    from server.graph.workflows import WorkflowStore
    from server.images.service import ImageService
    from server.models.manager import ModelManager


@dataclass
class Services:
    settings: Settings
    db: Database
    events: EventHub
    images: ImageService = None  # type: ignore[assignment]
    models: ModelManager = None  # type: ignore[assignment]
    executor: Executor = None  # type: ignore[assignment]
    sessions: SessionStore = None  # type: ignore[assignment]
    workflows: WorkflowStore = None  # type: ignore[assignment]


def services(connection: HTTPConnection) -> Services:
    return connection.app.state.services

"""Every service of a running server, built once by the app's lifespan (server/app.py) and complete before the
first request: routes reach them through `server.http.state.services(request)`."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Settings
from server.db import Database
from server.graph.executor import Executor
from server.graph.session import SessionStore
from server.graph.workflows import WorkflowStore
from server.images.service import ImageService
from server.models.catalogue import ModelCatalogue
from server.models.operations import ModelOperations
from server.models.transforms import ModelTransforms
from server.ws.hub import EventHub


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    # The WebSocket hub: every producer was given its `emit`; clients subscribe to it.
    events: EventHub
    images: ImageService
    sessions: SessionStore
    workflows: WorkflowStore
    models: ModelCatalogue
    model_operations: ModelOperations
    model_transforms: ModelTransforms
    executor: Executor

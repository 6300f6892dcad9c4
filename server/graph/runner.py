"""Runs one session's graph: nodes in dependency order, `iterate` expanded into one execution per item and
`collect` gathering them back, inputs resolved along edges, outputs reused from the node cache, torch work
on the worker thread, and an event for every step of the way.

This runs on the event loop; only `Node.invoke` runs on the worker, so the loop stays free for HTTP and
WebSocket traffic while a UNet step takes seconds."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor as PoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec

from server.events import InvocationComplete, InvocationError, InvocationStarted
from server.graph.cache import NodeCache, cache_key
from server.graph.context import Canceled, InvocationContext, NodeError, RunServices
from server.graph.graph import Edge, topological_order
from server.graph.nodes import Node, Output
from server.graph.nodes.base import node_type
from server.graph.nodes.primitives import MAX_ITEMS, CollectionOutput, CollectNode, IterateNode, IterateOutput
from server.graph.registry import input_fields
from server.graph.session import Session
from server.models.loader import ModelLoadError

log = logging.getLogger(__name__)

# Which item of which iterate an execution belongs to: ((iterate node id, index), ...) in graph order.
Context = tuple[tuple[str, int], ...]
# Input fields that never enter a cache key: they do not change what a node computes.
_NOT_IN_KEY = ("id", "type", "use_cache")


def _model_keys(value: Any) -> Iterator[str]:
    """The `base/type/name` of every model identifier in a node's input values (handles carry them nested)."""
    if isinstance(value, dict):
        if {"model_name", "base_model", "model_type"} <= value.keys():
            yield f"{value['base_model']}/{value['model_type']}/{value['model_name']}"
        for item in value.values():
            yield from _model_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _model_keys(item)


class SessionFailed(Exception):
    """A node failed; the session's `errors` say which and why."""


@dataclass
class _Execution:
    context: Context
    node_id: str
    output: Output


class SessionRun:
    def __init__(
        self,
        session: Session,
        services: RunServices,
        cache: NodeCache,
        pool: PoolExecutor,
        cancel: threading.Event,
        on_change: Callable[[], None],
    ) -> None:
        self.session = session
        self.graph = session.graph
        self.services = services
        self.cache = cache
        self.pool = pool
        self.cancel = cancel
        self.on_change = on_change
        self.tensors: dict[str, Any] = {}
        self.executions: dict[str, list[_Execution]] = {}
        self.incoming: dict[str, list[Edge]] = {}
        for edge in self.graph.edges:
            self.incoming.setdefault(edge.destination.node_id, []).append(edge)
        self.order = topological_order(self.graph)
        self.position = {node_id: i for i, node_id in enumerate(self.order)}
        self._graph_json: str | None = None
        # The node running now, for the crash message of a session found `running` at start-up.
        self.current: str | None = None

    @property
    def finished(self) -> bool:
        return len(self.executions) == len(self.order)

    async def run(self, max_nodes: int | None = None) -> None:
        """Run the nodes not run yet - all of them, or the next `max_nodes` (each with all its iterations),
        so a run can be resumed. Raises Canceled or SessionFailed."""
        ran = 0
        for node_id in self.order:
            if node_id in self.executions:
                continue
            if max_nodes is not None and ran >= max_nodes:
                break
            node = self.graph.nodes[node_id]
            if isinstance(node, CollectNode):
                await self._collect(node)
            else:
                executions = []
                for context in self._contexts(node_id):
                    inputs = self._inputs(node_id, context)
                    if isinstance(node, IterateNode):
                        executions += await self._iterate(node, context, inputs)
                    else:
                        executions.append(await self._invoke(node, context, inputs))
                self.executions[node_id] = executions
            ran += 1
        self.current = None

    # iterate / collect

    def _contexts(self, node_id: str) -> list[Context]:
        """One context per execution: every consistent combination of the executions of the nodes feeding it."""
        contexts: list[Context] = [()]
        for source in dict.fromkeys(edge.source.node_id for edge in self.incoming.get(node_id, [])):
            joined: list[Context] = []
            for left in contexts:
                for execution in self.executions[source]:
                    merged = self._merge(left, execution.context)
                    if merged is not None and merged not in joined:
                        joined.append(merged)
            contexts = joined
        return contexts

    def _merge(self, left: Context, right: Context) -> Context | None:
        merged = dict(left)
        for iterate_id, index in right:
            if merged.setdefault(iterate_id, index) != index:
                return None
        return tuple(sorted(merged.items(), key=lambda item: self.position[item[0]]))

    def _inputs(self, node_id: str, context: Context) -> dict[str, Any]:
        inputs = {}
        within = set(context)
        for edge in self.incoming.get(node_id, []):
            for execution in self.executions[edge.source.node_id]:
                if within.issuperset(execution.context):
                    inputs[edge.destination.field] = getattr(execution.output, edge.source.field)
                    break
        return inputs

    async def _iterate(self, node: IterateNode, context: Context, inputs: dict[str, Any]) -> list[_Execution]:
        """One execution per item, each an invocation of its own (`<id>#<index>`) with `item`, `index`, `total`."""
        self.cancel_point()
        collection = inputs.get("collection", node.collection)
        if not isinstance(collection, list) or len(collection) > MAX_ITEMS:
            problem = (
                NodeError(f"`{node.id}.collection` must be a list")
                if not isinstance(collection, list)
                else NodeError(f"`{node.id}` iterates {len(collection)} items; at most {MAX_ITEMS}")
            )
            prepared = self._prepared_id(node.id, context)
            self._started(node, prepared)
            self._fail(node, prepared, problem)
        executions = []
        for index, item in enumerate(collection):
            item_context = self._merge(context, ((node.id, index),))
            assert item_context is not None
            prepared = self._prepared_id(node.id, item_context)
            output = IterateOutput(item=item, index=index, total=len(collection))
            self._started(node, prepared)
            self._record(node, prepared, output, cached=False)
            executions.append(_Execution(context=item_context, node_id=prepared, output=output))
        return executions

    async def _collect(self, node: CollectNode) -> None:
        self.cancel_point()
        items = [
            getattr(execution.output, edge.source.field)
            for edge in self.incoming.get(node.id, [])
            for execution in self.executions[edge.source.node_id]
        ]
        self._started(node, node.id)
        output = CollectionOutput(collection=items)
        self._record(node, node.id, output, cached=False)
        self.executions[node.id] = [_Execution(context=(), node_id=node.id, output=output)]

    # invocation

    def _prepared_id(self, node_id: str, context: Context) -> str:
        return node_id if not context else f"{node_id}#{'.'.join(str(index) for _, index in context)}"

    def cancel_point(self) -> None:
        if self.cancel.is_set():
            raise Canceled()

    async def _invoke(self, node: Node, context: Context, inputs: dict[str, Any]) -> _Execution:
        self.cancel_point()
        prepared = self._prepared_id(node.id, context)
        self._started(node, prepared)
        cls = type(node)
        try:
            resolved = self._resolve(node, inputs)
        except NodeError as exc:
            self._fail(node, prepared, exc)
        key = None
        if cls.cacheable:
            values = {name: value for name, value in msgspec.to_builtins(resolved).items() if name not in _NOT_IN_KEY}
            # The files behind the models it uses: a model replaced on disk or unregistered is computed afresh.
            keys = sorted(
                {*_model_keys(values), *(m.key for m in resolved.referenced_models(self.services.loader.models))}
            )
            if keys:
                values["__models__"] = {key: self.services.loader.models.version(key) for key in keys}
            key = cache_key(node_type(cls), values)
        hit = self.cache.get(key) if key is not None and node.use_cache else None
        if hit is not None:
            self.tensors.update(hit.tensors)
            self._record(node, prepared, hit.output, cached=True)
            return _Execution(context=context, node_id=prepared, output=hit.output)
        ctx = InvocationContext(
            services=self.services,
            session_id=self.session.id,
            node_id=prepared,
            source_node_id=node.id,
            tensors=self.tensors,
            name_prefix=key[:32] if key is not None else uuid.uuid4().hex,
            cancel=self.cancel,
            graph_json=self._graph_json_once,
        )
        loop = asyncio.get_running_loop()
        try:
            output = await loop.run_in_executor(self.pool, self._run_node, resolved, ctx)
        except Canceled:
            raise
        except Exception as exc:
            self._fail(node, prepared, exc)
        if key is not None:
            self.cache.put(key, output, ctx.produced)
        self._record(node, prepared, output, cached=False)
        return _Execution(context=context, node_id=prepared, output=output)

    def _run_node(self, node: Node, ctx: InvocationContext) -> Output:
        # On the worker thread: the models the previous node used may move off the GPU from here on.
        self.services.loader.begin_node()
        return node.invoke(ctx)

    def _resolve(self, node: Node, inputs: dict[str, Any]) -> Node:
        """The node with its wired inputs filled in, checked against its declared types and limits."""
        resolved = node
        if inputs:
            values = msgspec.to_builtins(node)
            values.update(msgspec.to_builtins(inputs))
            try:
                resolved = msgspec.convert(values, type(node))
            except msgspec.ValidationError as exc:
                raise NodeError(f"`{node.id}` got a value it cannot take from an edge: {exc}") from None
        for name, field in input_fields(type(node)).items():
            if field.required and getattr(resolved, name) is None:
                raise NodeError(f"`{node.id}.{name}` has no value: an edge into it gave none")
        return resolved

    def _graph_json_once(self) -> str:
        if self._graph_json is None:
            self._graph_json = msgspec.json.encode(self.graph).decode()
        return self._graph_json

    # bookkeeping and events

    def _started(self, node: Node, prepared: str) -> None:
        self.current = prepared
        self.services.emit(
            InvocationStarted(
                session_id=self.session.id, node_id=prepared, source_node_id=node.id, node_type=node_type(type(node))
            )
        )

    def _record(self, node: Node, prepared: str, output: Output, *, cached: bool) -> None:
        self.session.executed.append(prepared)
        self.session.results[prepared] = output
        self.on_change()
        self.services.emit(
            InvocationComplete(
                session_id=self.session.id,
                node_id=prepared,
                source_node_id=node.id,
                result=msgspec.to_builtins(output),
                cached=cached,
            )
        )

    def _fail(self, node: Node, prepared: str, exc: Exception) -> NoReturn:
        if isinstance(exc, NodeError | ModelLoadError):
            message = str(exc)
        else:
            log.error("node %s of session %s failed", prepared, self.session.id, exc_info=exc)
            message = f"{type(exc).__name__}: {exc}"
        self.session.errors[prepared] = message
        self.on_change()
        self.services.emit(
            InvocationError(
                session_id=self.session.id,
                node_id=prepared,
                source_node_id=node.id,
                error_type=type(exc).__name__,
                error=message,
            )
        )
        raise SessionFailed(message) from exc

"""Node outputs reused across sessions: an invocation of a deterministic node whose inputs are identical to
an earlier one's gets that one's output (and the tensors it names) instead of running again.

The key is the node type and its resolved input values. Tensor inputs arrive as names, and a cached node's
tensor names derive from its own key, so a key covers everything upstream of it. A seed change thus changes
the noise key and everything below it, while the prompts and model handles keep theirs."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from server.graph.nodes.base import Output

_encoder = msgspec.json.Encoder(order="deterministic")


def cache_key(node_type: str, inputs: dict[str, Any]) -> str:
    payload = _encoder.encode({"type": node_type, "inputs": inputs})
    return hashlib.sha256(payload).hexdigest()


@dataclass
class CachedOutput:
    output: Output
    tensors: dict[str, Any]


class NodeCache:
    """LRU by entries (`settings.node_cache_entries`; 0 turns caching off). Used from the event loop only."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedOutput] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedOutput | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, output: Output, tensors: dict[str, Any]) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = CachedOutput(output, dict(tensors))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

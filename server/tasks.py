"""Stopping the background loops a service runs: each is cancelled and awaited for a bounded time, and one that
does not end is named in the log and left behind, so no loop can hold the server's shutdown forever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_TASKS_S = 10.0


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float = STOP_TASKS_S) -> None:
    running = list(tasks)
    for task in running:
        task.cancel()
    if not running:
        return
    done, pending = await asyncio.wait(running, timeout=timeout_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s had failed before it was stopped", task.get_name(), exc_info=task.exception())
    for task in pending:
        log.warning(
            "%s did not stop within %.0f s of being cancelled; shutting down without it", task.get_name(), timeout_s
        )

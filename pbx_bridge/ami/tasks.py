"""Stopping a task for sure.

On Python 3.11, `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
thing completes, and the task then runs on. Stopping therefore cancels again until the task is
really done (bounded), and the loops also check a stop flag of their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], limit: float = 5.0) -> bool:
    """Cancel `task` (repeatedly if needed) and wait for it to end; False if it would not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    attempts = 0
    while not task.done() and loop.time() < deadline:
        task.cancel()
        attempts += 1
        await asyncio.wait({task}, timeout=0.2)
    if attempts > 1:
        logging.getLogger("pbx_bridge.tasks").debug(
            "task.cancel_repeated", extra={"kv": {"task": task.get_name(), "attempts": attempts}})
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise at shutdown
    return task.done()

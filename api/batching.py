"""Group commit: every write that arrives while a commit runs goes into the next one.

A decision or event is answered only after the transaction holding it commits, so an acknowledged write is on
disk. Committing each request alone would cap the API at one commit's latency per write; batching them lets
a hundred concurrent requests share one commit, on one writer thread the event loop never waits on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from store.serving import Event

Write = Callable[[list[dict], list[Event]], list[str]]


class GroupCommit:
    """Queues impressions and events; one writer thread commits each batch with `write(impressions, events)`."""

    def __init__(self, write: Write, max_batch: int = 1000) -> None:
        self._write, self._max_batch = write, max_batch
        self._pending: list[tuple[dict | Event, asyncio.Future]] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self._draining = False

    async def submit(self, operation: dict | Event) -> str:
        """Wait until the impression (a dict) or event is committed; "stored" for an impression, the event's
        outcome ("recorded", "duplicate", "unknown") for an event. A failed commit raises in every caller."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                impressions = [op for op, _ in batch if isinstance(op, dict)]
                events = [op for op, _ in batch if isinstance(op, Event)]
                try:
                    outcomes = iter(await loop.run_in_executor(self._writer, self._write, impressions, events))
                except Exception as exc:  # the whole transaction rolled back: nobody's write is acknowledged
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for op, future in batch:
                    outcome = "stored" if isinstance(op, dict) else next(outcomes)
                    if not future.done():  # a caller that went away is still committed, just not told
                        future.set_result(outcome)
        finally:
            self._draining = False

    def close(self) -> None:
        self._writer.shutdown(wait=True)

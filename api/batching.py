"""Group commit: every write that arrives while the event loop is busy goes into one commit.

A decision or event is answered only after the transaction holding it commits, so an acknowledged write is on
disk. Committing each request alone caps the API at one commit per request; batching lets the requests that
arrived together share one. The commit runs on the event loop itself: handing it to a writer thread cost more
(thread wake-ups and the GIL passed back and forth) than the commit, a few hundred microseconds for a batch
of SQLite writes (measured with bench/serving.py: 440 decide+event pairs a second with a writer thread, 690
inline). The price: while another process holds SQLite's write lock the loop waits with the writers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.serving import Event

Write = Callable[[list[dict], list[Event]], list[str]]


class GroupCommit:
    """Queues impressions and events and commits them in batches with `write(impressions, events)`."""

    def __init__(self, write: Write, max_batch: int = 1000) -> None:
        self._write, self._max_batch = write, max_batch
        self._pending: list[tuple[dict | Event, asyncio.Future]] = []
        self._draining = False

    async def submit(self, operation: dict | Event) -> str:
        """Wait until the impression (a dict) or event is committed; "stored" for an impression, the event's
        outcome ("recorded", "duplicate", "unknown") for an event. A failed commit raises in every caller."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((operation, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let the requests already read queue their writes first
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                self._commit(batch)
                await asyncio.sleep(0)
        finally:
            self._draining = False

    def _commit(self, batch: list[tuple[dict | Event, asyncio.Future]]) -> None:
        impressions = [op for op, _ in batch if isinstance(op, dict)]
        events = [op for op, _ in batch if isinstance(op, Event)]
        try:
            outcomes = iter(self._write(impressions, events))
        except Exception as exc:  # the whole transaction rolled back: nobody's write is acknowledged
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for op, future in batch:
            outcome = "stored" if isinstance(op, dict) else next(outcomes)
            if not future.done():  # a caller that went away is still committed, just not told
                future.set_result(outcome)

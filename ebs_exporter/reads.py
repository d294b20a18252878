"""Reads of one collection, side by side in worker threads, bounded by a deadline.

A device that hangs in its ioctl keeps its worker thread until the kernel gives up; the
collection does not wait for it, and the device is not asked again while that read is open.
Reads start in two workers: while one waits in its ioctl (outside the interpreter's lock), the
other decodes the page before; more threads than that only take the lock from each other. Each
`budget` the round is still open, another worker joins, so slow or hung devices still cost the
deadline, not the sum of their reads.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Round(Generic[T, R]):
    """The reads of one collection; late answers from hung devices land nowhere."""

    def __init__(self, items: Sequence[T], read: Callable[[T], R]) -> None:
        self.queue = collections.deque(items)
        self.read = read
        self.results: dict[int, tuple[R | None, BaseException | None]] = {}
        self.pending = len(items)
        self.done = threading.Condition()


class ReadScheduler:
    """Runs `read(item)` for each item, `workers` at a time, for at most `timeout` seconds."""

    def __init__(self, timeout: float = 3.0, workers: int = 4, budget: float = 0.02, start_workers: int = 2) -> None:
        self.timeout = timeout
        self.workers = workers
        self.budget = budget
        self.start_workers = start_workers
        # Room for a worker per hung device on top of the ones doing the work.
        self._pool = ThreadPoolExecutor(max_workers=workers * 4, thread_name_prefix="ebs-read")
        self._busy: set[int] = set()  # ids of items whose read is in flight (maybe hung)
        self._busy_lock = threading.Lock()
        self._warm = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def busy(self, item: object) -> bool:
        return id(item) in self._busy

    def run(
        self, items: Sequence[T], read: Callable[[T], R], parallel: bool = True
    ) -> dict[int, tuple[R | None, BaseException | None]]:
        """Outcomes keyed by id(item); an item missing from the result ran out of time (or was
        still stuck in an earlier read, so it was not asked again). Every exception a read raises
        comes back as its outcome, never out of here."""
        ready = [item for item in items if not self.busy(item)]
        if not ready:
            return {}
        rnd = _Round(ready, read)
        if not parallel:  # reads that hold the GIL (the simulator): threads only add overhead
            self._drain(rnd)
            return rnd.results
        # The first round starts every worker it may use, so that the pool has its threads from
        # the start: a later slow round wakes them, it does not grow the process.
        first = min(self.start_workers if self._warm else self.workers, self.workers, len(ready))
        self._warm = True
        for _ in range(first):
            self._pool.submit(self._drain, rnd)
        idle = min(self.workers, len(ready)) - first  # workers that may still join
        deadline = time.monotonic() + self.timeout
        with rnd.done:
            while rnd.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not rnd.done.wait(min(left, self.budget) if idle else left) and idle and rnd.queue:
                    self._pool.submit(self._drain, rnd)  # still open after a budget: one more worker
                    idle -= 1
            rnd.queue.clear()  # out of time: start no further reads for this round
            return dict(rnd.results)

    def _drain(self, rnd: _Round[T, R]) -> None:
        while True:
            try:
                item = rnd.queue.popleft()
            except IndexError:
                return
            with self._busy_lock:
                self._busy.add(id(item))
            try:
                result: tuple[R | None, BaseException | None] = (rnd.read(item), None)
            except Exception as e:  # every failure becomes an outcome, never a failed collection
                result = (None, e)
            finally:
                with self._busy_lock:
                    self._busy.discard(id(item))
            with rnd.done:
                rnd.results[id(item)] = result
                rnd.pending -= 1
                if not rnd.pending:
                    rnd.done.notify_all()

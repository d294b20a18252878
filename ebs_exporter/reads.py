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
from typing import Generic, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# What each read came to, by id(item): its result or its exception. (typing's spelling: the
# alias is evaluated at import, and Python 3.9 has no `X | None` there.)
Outcomes = dict[int, tuple[Optional[R], Optional[BaseException]]]


class _Round(Generic[T, R]):
    """The reads of one collection; late answers from hung devices land nowhere."""

    def __init__(self, read: Callable[[T], R], deadline: float, items: Sequence[T]) -> None:
        self.read = read
        self.deadline = deadline
        self.queue = collections.deque(items)
        self.results: Outcomes[R] = {}
        self.pending = len(items)
        self.running = 0  # workers draining the queue (one may be stuck in a hung read)
        self.lock = threading.Lock()  # over all of the above; taken once per read
        self.done = threading.Condition(self.lock)  # notified when nothing is pending


class ReadScheduler:
    """Runs `read(item)` for each item, `workers` at a time, for at most `timeout` seconds."""

    def __init__(self, timeout: float = 3.0, workers: int = 4, budget: float = 0.02, start_workers: int = 2) -> None:
        self.timeout = timeout
        self.workers = workers
        self.budget = budget
        self.start_workers = start_workers
        # Room for a worker per hung device on top of the ones doing the work.
        self._pool = ThreadPoolExecutor(max_workers=workers * 4, thread_name_prefix="ebs-read")
        # ids of items whose read is in flight (maybe hung); a set's add and discard are atomic
        self._busy: set[int] = set()
        self._warm = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def busy(self, item: object) -> bool:
        return id(item) in self._busy

    def run(self, items: Sequence[T], read: Callable[[T], R], parallel: bool = True) -> Outcomes[R]:
        """Outcomes keyed by id(item); an item missing from the result ran out of time (or was
        still stuck in an earlier read, so it was not asked again). Every exception a read raises
        comes back as its outcome, never out of here. With `parallel` False (reads that hold the
        GIL, the simulator's: threads only add overhead) the reads run here, one after the other."""
        ready = [item for item in items if not self.busy(item)]
        if not ready:
            return {}
        rnd: _Round[T, R] = _Round(read, time.monotonic() + self.timeout, ready)
        if not parallel:
            rnd.running = 1
            self._drain(rnd)
            return rnd.results
        # The first round starts every worker it may use, so that the pool has its threads from
        # the start: a later slow round wakes them, it does not grow the process.
        rnd.running = min(self.start_workers if self._warm else self.workers, self.workers, len(ready))
        self._warm = True
        for _ in range(rnd.running):
            self._pool.submit(self._drain, rnd)
        with rnd.done:
            while rnd.pending:
                left = rnd.deadline - time.monotonic()
                if left <= 0:
                    break
                may_join = rnd.running < self.workers and bool(rnd.queue)
                if not rnd.done.wait(min(left, self.budget) if may_join else left) and may_join and rnd.queue:
                    rnd.running += 1  # still open after a budget: one more worker
                    self._pool.submit(self._drain, rnd)
            rnd.queue.clear()  # out of time: start no further reads for this round
            return dict(rnd.results)

    def _drain(self, rnd: _Round[T, R]) -> None:
        busy = self._busy
        with rnd.lock:
            if not rnd.queue:
                rnd.running -= 1
                return
            item = rnd.queue.popleft()
        while True:
            busy.add(id(item))
            try:
                result: tuple[R | None, BaseException | None] = (rnd.read(item), None)
            except Exception as e:  # every failure becomes an outcome, never a failed collection
                result = (None, e)
            finally:
                busy.discard(id(item))
            with rnd.lock:  # the outcome in, and the next item out, in one step
                rnd.results[id(item)] = result
                rnd.pending -= 1
                if not rnd.pending:
                    rnd.done.notify_all()
                if not rnd.queue:
                    rnd.running -= 1
                    return
                item = rnd.queue.popleft()

"""Work spread over a few threads, the calling one included, for C loops that release the GIL.

The host kernel's chunks (:mod:`dualwatch._host`) and the edge maps' images (:mod:`dualwatch._edge`)
are both many items of uneven cost. Each thread takes the next item from a shared counter until
none is left: one task per extra thread (a hand-off per item, about 25 us to wake a pool thread,
cost a 100-tensor check 2.5 ms, a quarter of its memory floor), the calling thread works instead
of waiting, and uneven items still spread evenly.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class Workers:
    """``threads`` threads in all: the caller and a pool of ``threads - 1``, made at first need."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    def run(self, work: Callable[[int], None], n: int) -> None:
        """``work(i)`` for each ``i`` in ``range(n)``; an item's error is raised here, once every
        thread has stopped."""
        threads = min(self.threads, n)
        if threads <= 1:
            for i in range(n):
                work(i)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix=self._name)
        items = itertools.count()  # next() hands each index to one thread (it holds the GIL)

        def take() -> None:
            while (i := next(items)) < n:
                work(i)

        helpers = [self._pool.submit(take) for _ in range(threads - 1)]
        try:
            take()
        finally:
            for helper in helpers:
                helper.result()  # waits, and re-raises an item's error here

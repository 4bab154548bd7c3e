"""Compute engines behind one small interface, chosen by name from a registry.

An engine maps a function over chunks and yields results in input order. It keeps at most
``2 × max_workers`` chunks in flight, so memory follows chunk size and worker count, not
input size. ``sequential`` runs in the calling thread; ``threads`` uses a thread pool (polars
and pyarrow release the GIL, so threads scale on their kernels).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from signalfactory.core.errors import ConfigError
from signalfactory.core.protocols import Engine

T = TypeVar("T")
R = TypeVar("R")


class SequentialEngine:
    """Runs every chunk in the calling thread, one after another."""

    name = "sequential"

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def close(self) -> None:
        return None


class ThreadEngine:
    """Runs chunks on a bounded thread pool; reading stays in the calling thread."""

    name = "threads"

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or min(8, os.cpu_count() or 2)
        self._pool: ThreadPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="sf-chunk")
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                window.append(self._pool.submit(fn, item))
                if len(window) >= 2 * self.max_workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


ENGINES: dict[str, Callable[[int | None], Engine]] = {
    "sequential": SequentialEngine,
    "threads": ThreadEngine,
}


def create_engine(name: str, max_workers: int | None = None) -> Engine:
    factory = ENGINES.get(name.lower())
    if factory is None:
        raise ConfigError(
            f"engine {name!r} is not known; available engines: {', '.join(sorted(ENGINES))}. "
            "Set 'engine:' in the pipeline file or pass --engine."
        )
    return factory(max_workers)

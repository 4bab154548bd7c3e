"""Compute engines behind one small interface, chosen by name from a registry.

An engine maps a function over chunks and yields results in input order. It keeps at most
``max_workers + 1`` chunks in flight (2 × ``max_workers`` on Dask and Ray), so memory follows
chunk size and worker count, not input size. ``sequential`` runs in the calling thread;
``threads`` uses a thread pool (polars and pyarrow release the GIL); ``processes`` a process
pool; ``dask`` a ``dask.distributed`` cluster (a LocalCluster
unless an address is given) and ``ray`` a Ray cluster (local unless an address is given).
Dask and Ray are optional extras. The items are ``ChunkRef`` values where the source can be
sliced (Parquet), which workers read themselves, and otherwise chunks of rows (pickled as
Arrow IPC when they cross to another process).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from signalfactory.core.errors import ConfigError
from signalfactory.core.protocols import Engine

T = TypeVar("T")
R = TypeVar("R")


def ordered_window(
    submit: Callable[[T], Any],
    result: Callable[[Any], R],
    items: Iterable[T],
    window: int,
    cancel: Callable[[Any], None] = lambda _h: None,
) -> Iterator[R]:
    """Submit items as results are consumed, never more than ``window`` in flight."""
    pending: deque[Any] = deque()
    try:
        for item in items:
            pending.append(submit(item))
            if len(pending) >= window:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())
    finally:
        for handle in pending:
            cancel(handle)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 2))


class SequentialEngine:
    """Runs every chunk in the calling thread, one after another."""

    name: str = "sequential"
    in_process: bool = True

    def __init__(self, max_workers: int | None = None, address: str | None = None) -> None:
        self.max_workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def close(self) -> None:
        return None


class _PoolEngine:
    """A concurrent.futures executor behind the engine interface."""

    name: str = "pool"
    in_process: bool = True

    def __init__(self, max_workers: int | None = None, address: str | None = None) -> None:
        self.max_workers = max_workers or _default_workers()
        self._pool: Executor | None = None

    def _new_pool(self) -> Executor:
        raise NotImplementedError

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self._pool is None:
            self._pool = self._new_pool()
        pool = self._pool

        def submit(item: T) -> Future[R]:
            return pool.submit(fn, item)

        def result(handle: Future[R]) -> R:
            return handle.result()

        # One chunk queued per worker plus one being read: enough to keep workers busy.
        window = self.max_workers + 1
        yield from ordered_window(submit, result, items, window, lambda h: h.cancel())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ThreadEngine(_PoolEngine):
    """Runs chunks on a bounded thread pool."""

    name: str = "threads"
    in_process: bool = True

    def _new_pool(self) -> Executor:
        return ThreadPoolExecutor(self.max_workers, thread_name_prefix="sf-chunk")


class ProcessEngine(_PoolEngine):
    """Runs chunks in worker processes (spawned, so no inherited thread state)."""

    name: str = "processes"
    in_process: bool = False

    def _new_pool(self) -> Executor:
        return ProcessPoolExecutor(
            self.max_workers, mp_context=multiprocessing.get_context("spawn")
        )


def _dask_engine(max_workers: int | None, address: str | None) -> Engine:
    from signalfactory.production.engine_dask import DaskEngine

    return DaskEngine(max_workers, address)


def _ray_engine(max_workers: int | None, address: str | None) -> Engine:
    from signalfactory.production.engine_ray import RayEngine

    return RayEngine(max_workers, address)


ENGINES: dict[str, Callable[[int | None, str | None], Engine]] = {
    "sequential": SequentialEngine,
    "threads": ThreadEngine,
    "processes": ProcessEngine,
    "dask": _dask_engine,
    "ray": _ray_engine,
}


def check_engine(name: str) -> str:
    if name.lower() not in ENGINES:
        raise ConfigError(
            f"engine {name!r} is not known; available engines: {', '.join(sorted(ENGINES))}. "
            "Set 'engine:' in the pipeline file or pass --engine."
        )
    return name.lower()


def create_engine(name: str, max_workers: int | None = None, address: str | None = None) -> Engine:
    return ENGINES[check_engine(name)](max_workers, address)


class EngineCache:
    """Engines kept alive between runs of one process (process pools, Dask clusters and Ray
    take seconds to start). ``close`` shuts them all down."""

    def __init__(self) -> None:
        self._engines: dict[tuple[str, int | None, str | None], Engine] = {}

    def get(self, name: str, max_workers: int | None, address: str | None) -> Engine:
        key = (check_engine(name), max_workers, address)
        if key not in self._engines:
            self._engines[key] = create_engine(*key)
        return self._engines[key]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

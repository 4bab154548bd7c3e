"""Compute engines behind one small interface, chosen by name from a registry.

An engine maps a function over chunks and yields results in input order. It keeps at most
``max_workers + 1`` chunks in flight (2 × ``max_workers`` on Dask and Ray), so memory follows
chunk size and worker count, not input size. ``sequential`` runs in the calling thread;
``threads`` uses a thread pool (polars and pyarrow release the GIL); ``processes`` a process
pool; ``dask`` a ``dask.distributed`` cluster (a LocalCluster
unless an address is given) and ``ray`` a Ray cluster (local unless an address is given).
Dask and Ray are optional extras. The items are chunk descriptors where the source can be
cut without reading it (``chunk_refs``: Parquet and CSV), which workers read themselves, and
otherwise chunks of rows (pickled as Arrow IPC when they cross to another process).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import polars as pl

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


def worker_environ(workers: int) -> dict[str, str]:
    """Environment for worker processes on this machine: polars sizes its thread pool to the
    cores each worker has (``cores // workers``, at least 1) instead of to all of them, so
    ``workers`` processes do not run ``workers × cores`` threads on ``cores`` cores (Dask sets
    ``OMP_NUM_THREADS=1`` in its workers for the same reason). An explicit
    ``POLARS_MAX_THREADS`` in the environment wins."""
    if "POLARS_MAX_THREADS" in os.environ:
        return {}
    return {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, workers)))}


@contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ready() -> None:
    return None


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
        # Spawned workers inherit the environment they start in: start them all now, with
        # their thread limit, and leave this process's own (already sized) pool alone.
        pl.thread_pool_size()
        pool = ProcessPoolExecutor(
            self.max_workers, mp_context=multiprocessing.get_context("spawn")
        )
        with _environ(worker_environ(self.max_workers)):
            for started in [pool.submit(_ready) for _ in range(self.max_workers)]:
                started.result()
        return pool


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

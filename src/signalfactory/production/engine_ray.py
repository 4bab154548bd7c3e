"""The Ray engine: the one module that imports ``ray``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from signalfactory.core.errors import ConfigError
from signalfactory.production.engines import ordered_window, worker_environ

T = TypeVar("T")
R = TypeVar("R")

try:
    import ray
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError("engine 'ray' needs Ray: pip install 'signalfactory[ray]'") from exc


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


class RayEngine:
    """Chunks as Ray tasks; a local Ray instance unless given a cluster address."""

    name: str = "ray"
    in_process: bool = False

    def __init__(self, max_workers: int | None = None, address: str | None = None) -> None:
        self.address = address
        self.max_workers = max_workers or 2
        self._remote: Any = None
        self._started_here = False

    def _connect(self) -> Any:
        if self._remote is None:
            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    num_cpus=None if self.address else self.max_workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env=None
                    if self.address
                    else {"env_vars": worker_environ(self.max_workers)},
                )
                self._started_here = True
            self._remote = ray.remote(num_cpus=1)(_call)
        return self._remote

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        remote = self._connect()
        fn_ref = ray.put(fn)
        yield from ordered_window(
            lambda item: remote.remote(fn_ref, item),
            lambda ref: ray.get(ref),
            items,
            2 * self.max_workers,
            lambda ref: ray.cancel(ref),
        )

    def close(self) -> None:
        # A Ray instance is expensive to start; keep it for the process's next run.
        self._remote = None

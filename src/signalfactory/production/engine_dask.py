"""The Dask engine: the one module that imports ``dask.distributed``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from signalfactory.core.errors import ConfigError, Transient
from signalfactory.production.engines import ordered_window, worker_environ

T = TypeVar("T")
R = TypeVar("R")

try:
    from dask.distributed import Client, LocalCluster
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError(
        "engine 'dask' needs dask.distributed: pip install 'signalfactory[dask]'"
    ) from exc


class DaskEngine:
    """Chunks as Dask futures; a LocalCluster of worker processes unless given an address."""

    name: str = "dask"
    in_process: bool = False

    def __init__(self, max_workers: int | None = None, address: str | None = None) -> None:
        self.address = address
        self.max_workers = max_workers or 2
        self._client: Any = None
        self._cluster: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            try:
                if self.address:
                    self._client = Client(self.address, timeout="10s")  # type: ignore[no-untyped-call]
                else:
                    self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                        n_workers=self.max_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",  # never the fixed 8787 another may hold
                        env=worker_environ(self.max_workers),
                    )
                    self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
            except OSError as exc:
                raise Transient(
                    f"cannot reach the Dask scheduler at {self.address}: {exc}. Start it "
                    "(`dask scheduler`) or drop --engine-address to use a local cluster."
                ) from None
        return self._client

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        client = self._connect()
        yield from ordered_window(
            lambda item: client.submit(fn, item, pure=False),
            lambda future: future.result(),
            items,
            2 * self.max_workers,
            lambda future: future.cancel(),
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

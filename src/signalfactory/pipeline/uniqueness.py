"""Global uniqueness across chunks, evaluated in chunk order.

Integer keys are tracked exactly; other keys by their 64-bit polars hash (a collision needs
~4 billion distinct keys to become likely). The first occurrence of a key wins; later ones
are flagged. Chunks call ``check`` in input order under ``Sequencer.turn``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import polars as pl


class UniqueTracker:
    def __init__(self, column: str) -> None:
        self.column = column
        self._seen: np.ndarray = np.empty(0, dtype=np.uint64)

    def _keys(self, series: pl.Series) -> pl.Series:
        if series.dtype.is_integer():
            return series.cast(pl.Int64).reinterpret(signed=False)
        return series.hash(seed=0x5F1A)

    def check(self, series: pl.Series) -> pl.Series:
        """Flag rows whose key was seen in an earlier row (this chunk or before)."""
        present = series.is_not_null()
        keys = self._keys(series)
        dup_in_chunk = ~keys.is_first_distinct()
        # Nulls would turn the array into float64 (NaN), which cannot hold 64-bit keys
        # exactly; null rows are masked by ``present`` anyway.
        arr = keys.fill_null(0).to_numpy()
        if self._seen.size:
            pos = np.searchsorted(self._seen, arr)
            pos[pos == self._seen.size] = 0
            seen_before = self._seen[pos] == arr
        else:
            seen_before = np.zeros(arr.shape, dtype=bool)
        flags = (pl.Series(seen_before) | dup_in_chunk) & present
        new = np.sort(arr[present.to_numpy()])
        # Both runs are sorted: the stable sort (timsort) merges them in linear time.
        self._seen = np.sort(np.concatenate([self._seen, new]), kind="stable")
        return flags


class Sequencer:
    """Lets chunk workers pass one critical section strictly in chunk order."""

    def __init__(self) -> None:
        self._next = 0
        self._cond = threading.Condition()

    @contextmanager
    def turn(self, index: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._next == index)
        try:
            yield
        finally:
            with self._cond:
                self._next = index + 1
                self._cond.notify_all()

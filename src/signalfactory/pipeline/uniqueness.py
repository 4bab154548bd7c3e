"""Global uniqueness across chunks, evaluated in chunk order.

Integer keys are tracked exactly; other keys by their 64-bit polars hash (a collision needs
~4 billion distinct keys to become likely). The first occurrence of a key wins; later ones
are flagged. Workers compute ``unique_keys`` for their chunk; the driver calls
``UniqueTracker.check_keys`` in chunk order, so the result does not depend on the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

_SEED = 0x5F1A


def unique_keys(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit keys, present mask) of a key column; nulls are never duplicates."""
    present = series.is_not_null().to_numpy()
    if series.dtype.is_integer():
        keys = series.cast(pl.Int64).fill_null(0).reinterpret(signed=False)
    else:
        keys = series.hash(seed=_SEED)
    # fill_null before to_numpy: nulls would turn the array into float64 and lose precision.
    return keys.fill_null(0).to_numpy(), present


class UniqueTracker:
    def __init__(self, column: str) -> None:
        self.column = column
        self._seen: np.ndarray = np.empty(0, dtype=np.uint64)

    def check_keys(self, keys: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Flag rows whose key was seen in an earlier row (this chunk or before)."""
        dup_in_chunk = np.zeros(keys.shape, dtype=bool)
        dup_in_chunk[present] = ~pl.Series(keys[present]).is_first_distinct().to_numpy()
        if self._seen.size:
            pos = np.searchsorted(self._seen, keys)
            pos[pos == self._seen.size] = 0
            seen_before = self._seen[pos] == keys
        else:
            seen_before = np.zeros(keys.shape, dtype=bool)
        flags: np.ndarray = (seen_before | dup_in_chunk) & present
        self._add(keys[present])
        return flags

    def _add(self, keys: np.ndarray) -> None:
        new = np.sort(keys.astype(np.uint64, copy=False))
        # One-step merge: two copies of the seen set alive at most, not three.
        self._seen = np.insert(self._seen, np.searchsorted(self._seen, new), new)

    def seed(self, keys: np.ndarray) -> None:
        """Add keys of chunks finished before a crash (resume) without checking them."""
        self._add(keys)

    def check(self, series: pl.Series) -> pl.Series:
        keys, present = unique_keys(series)
        return pl.Series(self.check_keys(keys, present))


class KeyStore:
    """Keys of checkpointed chunks on disk, so a resumed run rebuilds its trackers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, column: str, index: int) -> Path:
        return self.folder / column / f"part-{index:07d}.npy"

    def save(self, column: str, index: int, keys: np.ndarray) -> None:
        path = self._path(column, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, keys)

    def load(self, column: str, index: int) -> np.ndarray:
        path = self._path(column, index)
        return np.load(path) if path.is_file() else np.empty(0, dtype=np.uint64)


class Sequencer:
    """Lets in-process chunk workers pass one critical section strictly in chunk order."""

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

"""A run's chunk plan, begun while the runner digests the same input (B3, B4).

Cutting a CSV source into chunks scans every byte of it for line ends and quotes; the
idempotency key needs the SHA-256 of every byte first. Both must end before any chunk runs,
and each keeps one core busy: one after the other, the second core idles through both.
``SourcePlan.begin`` starts the scan in a thread as soon as the input files are known, so
the two run side by side; the chunk loop takes the plan with ``refs``. A run that needs no
plan (its key already succeeded, it failed before streaming) stops the scan with
``cancel``. Parquet sources are planned from their footers as they are read, as before:
nothing to begin.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa

from signalfactory.core.errors import SignalFactoryError
from signalfactory.production.chunk_refs import ChunkRef, CsvChunkRef, plan_chunks, plan_csv
from signalfactory.production.formats import checked_kinds
from signalfactory.production.spec import PipelineSpec

Refs = Iterator[ChunkRef] | Iterator[CsvChunkRef] | None


class SourcePlan:
    """``plan_chunks`` of one run's source, begun early for CSV sources."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._future: Future[list[CsvChunkRef] | None] | None = None
        self._key: _Key | None = None

    @property
    def begun(self) -> bool:
        """Whether a scan was begun (a CSV source) and not cancelled, whatever became of it."""
        return self._future is not None

    def begin(
        self,
        files: Sequence[Path],
        spec: PipelineSpec,
        csv_types: Mapping[str, pa.DataType | None],
    ) -> None:
        """Scan a CSV source for its chunk boundaries in a thread. Any other source, one
        whose configuration is wrong (the chunk loop raises that error as before) or a plan
        already cancelled is planned when the loop asks."""
        try:
            kinds = checked_kinds(files, spec.source.format, spec.source.allow_pickle, None)
        except SignalFactoryError:
            return
        if set(kinds) != {"csv"} or spec.source.key is not None:
            return
        key = _key(files, spec, csv_types)
        if key is None or self._stop.is_set():
            return
        future: Future[list[CsvChunkRef] | None] = Future()
        paths = tuple(files)

        def scan() -> None:
            try:
                future.set_result(plan_csv(paths, spec.chunk_size, csv_types, self._stop))
            except BaseException as exc:  # raised where the chunk loop asks for the plan
                future.set_exception(exc)

        try:
            threading.Thread(target=scan, name="signalfactory-plan", daemon=True).start()
        except RuntimeError:
            return  # no thread to be had: the loop plans it
        self._future, self._key = future, key

    def refs(
        self,
        files: Sequence[Path],
        spec: PipelineSpec,
        csv_types: Mapping[str, pa.DataType | None],
    ) -> Refs:
        """The plan for ``files`` at ``spec.chunk_size``: the one begun, when it was begun for
        these files as they are now, this chunk size (a resumed run keeps its first one) and
        these types; else one made now."""
        if self._future is not None and self._key == _key(files, spec, csv_types):
            planned = self._future.result()
            return iter(planned) if planned is not None else None
        self.cancel()
        return plan_chunks(
            files,
            spec.source.format,
            spec.chunk_size,
            allow_pickle=spec.source.allow_pickle,
            key=spec.source.key,
            csv_types=csv_types,
        )

    def cancel(self) -> None:
        """Stop a scan still running and drop its plan: it is not needed."""
        self._stop.set()
        self._future = self._key = None


#: What a begun plan is valid for: each file as it was (path, size, modification time), the
#: chunk size and the column types.
_Key = tuple[tuple[tuple[str, int, int], ...], int, tuple[tuple[str, str], ...]]


def _key(
    files: Sequence[Path], spec: PipelineSpec, csv_types: Mapping[str, pa.DataType | None]
) -> _Key | None:
    try:
        stats = tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in files)
    except OSError:
        return None  # the loop's plan raises what is wrong with the file
    types = tuple(sorted((name, str(kind)) for name, kind in csv_types.items()))
    return stats, spec.chunk_size, types

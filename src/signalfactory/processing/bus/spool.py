"""A producer never fails or blocks because the bus is down: ``SpoolingPublisher``.

``publish`` hands the envelope to the bus; when the bus raises (unreachable, timed out, any
error) the envelope is appended to a local spool file and ``publish`` returns. Once anything
is spooled, later events are spooled behind it (so they keep their order) until ``flush``
delivers the spool again. ``flush`` runs at most every ``flush_interval_s`` on ``publish``
and whenever it is called.

Spool files are NDJSON (one envelope per line, ``fsync``'d), one per publisher:
``<spool_dir>/spool-<pid>-<token>.ndjson``. Files are locked with ``flock``: a flusher takes
a file's lock, renames it out of the writer's way (``....flushing``), publishes its lines in
order and deletes it only after the bus accepted all of them; what the bus did not accept
goes back into the file. A crash mid-flush leaves the file (its lock dies with the process),
so another publisher sends it again later; publishing is de-duplicated by event id, so a line
sent twice is delivered once. Payloads are never logged: only event ids and counts.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from pathlib import Path

import structlog

from signalfactory.core.errors import ConfigError
from signalfactory.core.observability import CloudEvent
from signalfactory.processing.bus.base import Delivery, EvidenceBus

__all__ = ["SpoolingPublisher"]

_LIVE = ".ndjson"
_CLAIMED = ".flushing"
_APPEND_TRIES = 200
log = structlog.get_logger("signalfactory.bus.spool")


class SpoolingPublisher:
    """Wraps an :class:`EvidenceBus`: ``publish`` never raises, ``flush`` redelivers the spool.

    It is itself an ``EvidenceBus`` (``consume``/``ack``/``name`` go to the wrapped bus), so
    it can stand wherever a bus is expected. Thread-safe.
    """

    def __init__(self, bus: EvidenceBus, spool_dir: Path, *, flush_interval_s: float = 5.0) -> None:
        if flush_interval_s < 0:
            raise ConfigError(f"flush_interval_s must be 0 or more, got {flush_interval_s!r}")
        self.bus = bus
        self.spool_dir = Path(spool_dir)
        self.flush_interval_s = flush_interval_s
        self._path = self.spool_dir / f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}{_LIVE}"
        self._state = threading.Lock()  # the spooling flag and appends
        self._flushing = threading.Lock()  # one flush at a time
        self._spooling = bool(self._spool_files())  # older events wait: keep the order
        self._last_flush = float("-inf")
        #: Events lost because even the spool could not be written (disk full, no access).
        self.dropped = 0

    @property
    def name(self) -> str:
        return self.bus.name

    def __repr__(self) -> str:
        return f"SpoolingPublisher({self.bus!r}, spool_dir={str(self.spool_dir)!r})"

    # publishing

    def publish(self, event: CloudEvent) -> None:
        """Publish ``event`` or spool it; never raises and never waits for another flush.

        Only if the spool itself cannot be written is the event dropped: logged at error
        level with its id and counted in :attr:`dropped`.
        """
        if self._spooling and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush(wait=False)
        with self._state:
            if self._spooling:
                self._spool(event)
                return
        try:
            self.bus.publish(event)
            return
        except Exception as exc:  # the producer must never fail
            log.warning(
                "bus_unavailable_spooling",
                bus=self.bus.name,
                event_id=event.id,
                error=type(exc).__name__,
            )
        with self._state:
            self._spooling = True
            self._last_flush = time.monotonic()  # back off before the next try
            self._spool(event)

    def spool(self, event: CloudEvent) -> None:
        """Write ``event`` to the spool without trying the bus (for callers that already know
        the store or bus is unreachable); a later :meth:`flush` delivers it. Never raises."""
        with self._state:
            self._spool(event)

    def _spool(self, event: CloudEvent) -> None:
        try:
            self._append(event.to_json())
        except OSError as exc:
            self.dropped += 1
            log.error(
                "bus_spool_write_failed_event_dropped",
                event_id=event.id,
                spool_dir=str(self.spool_dir),
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
            )

    def pending(self) -> int:
        """How many envelopes wait in the spool directory (every publisher's files)."""
        total = 0
        for path in self._spool_files():
            try:
                with path.open("rb") as fh:
                    total += sum(1 for line in fh if line.strip())
            except FileNotFoundError:
                continue
        return total

    def flush(self) -> int:
        """Send every spooled envelope in order; how many the bus accepted.

        Stops at the first envelope the bus refuses (the rest stay spooled). Files another
        process is flushing are skipped; waits for a flush of this publisher in progress.
        """
        return self._flush(wait=True)

    def _flush(self, *, wait: bool) -> int:
        if not self._flushing.acquire(blocking=wait):
            return 0
        try:
            self._last_flush = time.monotonic()
            sent, complete = 0, True
            for path in self._spool_files():
                done, ok = self._flush_file(path)
                sent += done
                if not ok:
                    complete = False
                    break
            with self._state:  # appends hold it too: no event slips in unseen
                if complete and not self._spool_files():
                    self._spooling = False
            if sent:
                log.info("bus_spool_flushed", bus=self.bus.name, events=sent)
            return sent
        finally:
            self._flushing.release()

    # the rest of the bus interface

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        return self.bus.consume(group, consumer, max_count=max_count, block_ms=block_ms)

    def ack(self, group: str, delivery: Delivery) -> None:
        self.bus.ack(group, delivery)

    def close(self) -> None:
        """Try a last flush (what stays spooled is sent by a later publisher), then close."""
        try:
            if self._spooling:
                self.flush()
        finally:
            self.bus.close()

    # files

    def _spool_files(self) -> list[Path]:
        if not self.spool_dir.is_dir():
            return []
        found = [
            *self.spool_dir.glob(f"spool-*{_LIVE}"),
            *self.spool_dir.glob(f"spool-*{_CLAIMED}"),
        ]
        stamped = []
        for path in found:
            try:
                stamped.append((path.stat().st_mtime_ns, path.name, path))
            except FileNotFoundError:
                continue
        return [path for _, _, path in sorted(stamped)]

    def _append(self, line: bytes) -> None:
        """Append one envelope to this publisher's own file, durably."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self._path
        for _ in range(_APPEND_TRIES):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    time.sleep(0.001)  # a flusher is renaming it away: reopen
                    continue
                try:
                    if os.fstat(fd).st_ino != os.stat(path).st_ino:
                        continue  # renamed away by a flusher after our open
                except FileNotFoundError:
                    continue
                new_file = os.fstat(fd).st_size == 0
                _write_all(fd, line.rstrip(b"\n") + b"\n")
                os.fsync(fd)
                if new_file:
                    _fsync_dir(self.spool_dir)  # the new file's name survives a crash too
                return
            finally:
                os.close(fd)  # also releases the lock
        # A flusher held the file the whole time: write to a fresh file of our own instead.
        self._path = self.spool_dir / f"spool-{os.getpid()}-{uuid.uuid4().hex[:12]}{_LIVE}"
        self._append(line)

    def _flush_file(self, path: Path) -> tuple[int, bool]:
        """Publish the lines of one file; (lines accepted, whether all were)."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0, True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, True  # someone else is flushing or writing it
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    return 0, True
            except FileNotFoundError:
                return 0, True
            if path.name.endswith(_LIVE):  # move it out of its writer's way
                claimed = path.with_name(
                    path.name[: -len(_LIVE)] + f".{uuid.uuid4().hex[:8]}{_CLAIMED}"
                )
                os.rename(path, claimed)
                path = claimed
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = [line for line in fh.read().splitlines() if line.strip()]
            sent = 0
            for line in lines:
                try:
                    event = CloudEvent.from_json(line)
                except ValueError:
                    log.error("bus_spool_unreadable_line", file=path.name, line_no=sent + 1)
                    sent += 1
                    continue
                try:
                    self.bus.publish(event)
                except Exception as exc:  # keep the rest for later
                    log.warning(
                        "bus_spool_flush_stopped",
                        bus=self.bus.name,
                        event_id=event.id,
                        error=type(exc).__name__,
                    )
                    self._rewrite(path, lines[sent:])
                    return sent, False
                sent += 1
            os.unlink(path)
            return sent, True
        finally:
            os.close(fd)

    def _rewrite(self, path: Path, lines: list[bytes]) -> None:
        """Replace ``path`` by ``lines`` atomically, keeping its mode and modification time
        (files are flushed oldest first)."""
        tmp = path.with_name(path.name + ".tmp")
        before = os.stat(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

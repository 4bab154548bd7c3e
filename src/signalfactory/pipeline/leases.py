"""One executor per idempotency key: a lease in the store, kept alive by a heartbeat.

Two processes that start the same key race for the lease; the loser waits for the winner and
returns its run. A lease whose owner died (``kill -9``) is taken over at once when the owner
ran on this host, or once its heartbeat is older than ``STALE_AFTER_S`` otherwise.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from types import TracebackType

import structlog

from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import RunLease, RunRecord, RunStatus

log = structlog.get_logger("signalfactory.lease")
HEARTBEAT_S = 2.0
STALE_AFTER_S = 15.0
_HOST = socket.gethostname()


def owner_id() -> str:
    """host:pid:token — the token tells two claims from one process apart."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_alive(owner: str) -> bool:
    """False only when the owner certainly died: same host and no such process."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(store: MetadataStore, key: str, run_id: str, owner: str) -> RunLease:
    """The lease holder for ``key`` after ``owner`` tried to take it for ``run_id``.

    The caller won when the returned lease's owner is ``owner``.
    """
    lease = store.acquire_lease(RunLease(key, run_id, owner), STALE_AFTER_S)
    if lease.owner != owner and not owner_alive(lease.owner):
        lease = store.acquire_lease(RunLease(key, run_id, owner), 1e-6)
    return lease


def wait_for(store: MetadataStore, key: str, winner: str, poll_s: float = 0.2) -> RunRecord | None:
    """Wait until the winner's run ends; None if its lease went stale first (it crashed)."""
    while True:
        run = store.get_run(winner)
        if run is not None and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return run
        probe = owner_id()
        holder = store.acquire_lease(RunLease(key, "__probe__", probe), STALE_AFTER_S)
        if holder.owner == probe:
            store.release_lease(key, "__probe__")
            return None
        if not owner_alive(holder.owner):
            return None
        time.sleep(poll_s)


class Heartbeat:
    """Keeps a held lease fresh from a daemon thread; releases it on exit."""

    def __init__(self, store: MetadataStore, key: str, run_id: str) -> None:
        self.store, self.key, self.run_id = store, key, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sf-lease", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.store.heartbeat_lease(self.key, self.run_id)
            except Exception as exc:
                log.warning("lease_heartbeat_missed", run_id=self.run_id, error=type(exc).__name__)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S * 2)
        self.store.release_lease(self.key, self.run_id)

"""Fault injection for crash tests: ``SIGNALFACTORY_FAULT=<point>`` makes this process
``kill -9`` itself when it reaches that point (e.g. ``after_certified_commit``).

Used by the reliability tests to hit exact windows (between a Delta commit and the store
update) that an external ``kill -9`` can only hit by chance. Unset, it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "SIGNALFACTORY_FAULT"

#: The named points the runtime passes through.
POINTS = (
    "after_checkpoint",
    "before_publish",
    "after_layer_commits",
    "after_certified_commit",
    "after_evidence",
)


def crash_point(point: str, *, chunk: int | None = None) -> None:
    """Die here, as ``kill -9`` would, if the environment asks for this point.

    ``after_checkpoint:3`` dies after chunk 3's checkpoint; plain names match any chunk.
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, at = wanted.partition(":")
    if name != point:
        return
    if at and (chunk is None or str(chunk) != at):
        return
    os.kill(os.getpid(), signal.SIGKILL)

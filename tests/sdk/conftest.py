"""Fixtures of the observe() SDK tests: a registered dataset in a real store and lake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from factories import Project
from signalfactory.api import SignalFactory


@pytest.fixture
def registered(project: Project) -> SignalFactory:
    """The factories' orders dataset (TIER_1, hard-fail) registered on a SQLite home."""
    return project.open()


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    """Every structlog entry logged during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def lake_files(home: Path) -> list[Path]:
    lake = home / "lake"
    return sorted(p for p in lake.rglob("*") if p.is_file()) if lake.is_dir() else []

"""Shared pytest fixtures."""

from __future__ import annotations

# --- BEGIN external services (knowledge plane) ----------------------------------------------
# require_service() and the postgres_url fixture. Keep additions outside this block.
import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the test because ``name`` is unavailable, or fail it when services are required.

    Set ``SIGNALFACTORY_REQUIRE_SERVICES=1`` (CI does) to turn the skip into a failure.
    """
    message = f"{name} is not available: {reason}"
    if os.environ.get("SIGNALFACTORY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (SIGNALFACTORY_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database for this test module; dropped after.

    The server is ``SIGNALFACTORY_TEST_POSTGRES_URL`` (default: postgres@127.0.0.1:5432/test,
    which must allow CREATE DATABASE).
    """
    base = make_url(os.environ.get("SIGNALFACTORY_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg")
    shown = base.render_as_string(hide_password=True)
    admin = create_engine(
        base, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    name = f"sf_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        admin.dispose()
        detail = (str(exc.orig or exc).strip().splitlines() or ["unknown error"])[0]
        require_service(
            "PostgreSQL",
            f"cannot create a database on {shown}: {detail}. Start the server or set "
            "SIGNALFACTORY_TEST_POSTGRES_URL",
        )
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- END external services (knowledge plane) ------------------------------------------------


# --- BEGIN pipeline projects (runner tests) -------------------------------------------------
# The ``project`` fixture: a dataset project folder (see tests/factories.py) whose
# SignalFactory homes are closed after the test.


@pytest.fixture
def project(tmp_path: os.PathLike[str]) -> Iterator[object]:
    from pathlib import Path

    from factories import Project

    proj = Project(Path(tmp_path) / "project")
    try:
        yield proj
    finally:
        proj.close()


# --- END pipeline projects (runner tests) ---------------------------------------------------


# --- BEGIN session isolation ------------------------------------------------------------------
# pytest's shared numbered temp folders are pruned by whichever session starts next, so two
# sessions on one machine could delete each other's files. Each session gets its own folder.


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.basetemp:
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="signalfactory-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        import shutil

        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()
# --- END session isolation --------------------------------------------------------------------

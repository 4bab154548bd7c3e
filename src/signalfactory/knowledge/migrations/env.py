"""Alembic environment of the knowledge plane, driven from code (no alembic.ini).

``signalfactory.knowledge.store.SqlStore.migrate`` builds an ``alembic.config.Config`` with
``script_location`` pointing here and passes an open connection as
``config.attributes["connection"]``. A URL in ``config.attributes["url"]`` (or the
``sqlalchemy.url`` main option) works too; offline mode renders SQL for that URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

VERSION_TABLE = "signalfactory_alembic_version"

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database for the migrations: pass config.attributes['connection'] or "
            "config.attributes['url'] (or set the sqlalchemy.url main option)"
        )
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

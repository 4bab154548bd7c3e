"""What every ``SqlStore`` mixin may call: the plumbing ``SqlStore`` itself provides.

The mixins (runtime, bus, signals, incidents, lineage, baselines) inherit this so type
checkers know the methods; at run time ``SqlStore`` defines them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, RowMapping
    from sqlalchemy.sql import ColumnElement

__all__ = ["StorePlumbing"]


class StorePlumbing:
    """Declarations only: connections, inserts, upserts and selects of ``SqlStore``."""

    display_url: str

    if TYPE_CHECKING:  # provided by SqlStore

        def _conn(self, *, write: bool = False) -> AbstractContextManager[Connection]: ...

        def _insert(self, table: Table, row: dict[str, Any], what: str, fix: str = ...) -> None: ...

        def _upsert(self, table: Table, row: dict[str, Any], key: str) -> None: ...

        def _select(
            self,
            table: Table,
            *where: ColumnElement[bool],
            newest_first: bool = False,
            limit: int = 0,
            order_by: Sequence[ColumnElement[Any]] = (),
        ) -> list[RowMapping]: ...

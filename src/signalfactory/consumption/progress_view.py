"""Rich views of a run's live progress (B9).

* :class:`RunProgressView`: the live bar ``signalfactory run`` shows on a terminal; pass its
  ``update`` as ``SignalFactory(progress_listener=...)``. It may be called from the progress
  refresher thread; Rich's ``Progress`` is thread-safe.
* :func:`summary_line` / :func:`progress_table`: a stored :class:`RunProgress` for
  ``signalfactory status`` (one line) and ``status --watch`` (a small table).
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from signalfactory.core.records import RunProgress, utcnow

UNKNOWN = "?"


# -- formatting ----------------------------------------------------------------------------


def fmt_count(value: int | None) -> str:
    return UNKNOWN if value is None else f"{value:,}"


def fmt_of(done: int, total: int | None) -> str:
    """``17,000/40,000`` or ``17,000/?``."""
    return f"{done:,}/{fmt_count(total)}"


def fmt_rate(rows_per_s: float) -> str:
    if not math.isfinite(rows_per_s) or rows_per_s <= 0:
        return "– rows/s"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rows_per_s >= limit:
            return f"{rows_per_s / limit:.1f}{suffix} rows/s"
    return f"{rows_per_s:.0f} rows/s"


def fmt_eta(eta_s: float | None) -> str:
    """``0:42``, ``1:02:03``, or ``–`` when unknown."""
    if eta_s is None or not math.isfinite(eta_s) or eta_s < 0:
        return "–"
    total = round(eta_s)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def fmt_percent(percent: float | None) -> str:
    return f"{UNKNOWN:>5} %" if percent is None else f"{percent:5.1f} %"


def fmt_rss(rss_mb: float) -> str:
    return f"{rss_mb / 1024:.2f} GB" if rss_mb >= 1024 else f"{rss_mb:.0f} MB"


def fmt_cpu(cpu_pct: float) -> str:
    return f"{cpu_pct:.0f}%"


def age_s(progress: RunProgress) -> float:
    """Seconds since ``progress`` was stored (0 when the writer's clock runs ahead)."""
    return max((utcnow() - progress.updated_at).total_seconds(), 0.0)


def summary_line(progress: RunProgress, *, show_age: bool = True) -> str:
    """``processing 42.5 % · chunks 17/40 · rows 17,000/40,000 · 8.1k rows/s · ETA 0:03 · …``."""
    parts = [
        f"{progress.phase} {fmt_percent(progress.percent).strip()}",
        f"chunks {fmt_of(progress.chunks_done, progress.chunks_total)}",
        f"rows {fmt_of(progress.rows_done, progress.rows_total)}",
        fmt_rate(progress.rows_per_s),
        f"ETA {fmt_eta(progress.eta_s)}",
        f"RSS {fmt_rss(progress.rss_mb)}",
        f"CPU {fmt_cpu(progress.cpu_pct)}",
    ]
    if show_age:
        parts.append(f"updated {age_s(progress):.1f} s ago")
    return " · ".join(parts)


def progress_table(progress: RunProgress, *, title: str | None = None) -> Table:
    """The figures of ``progress`` as a two-column table."""
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = (
        ("phase", progress.phase),
        ("progress", fmt_percent(progress.percent).strip()),
        ("chunks", fmt_of(progress.chunks_done, progress.chunks_total)),
        ("rows", fmt_of(progress.rows_done, progress.rows_total)),
        ("rate", fmt_rate(progress.rows_per_s)),
        ("ETA", fmt_eta(progress.eta_s)),
        ("RSS", fmt_rss(progress.rss_mb)),
        ("CPU", fmt_cpu(progress.cpu_pct)),
        ("updated", f"{age_s(progress):.1f} s ago"),
    )
    for name, value in rows:
        table.add_row(name, value)
    return table


# -- the live bar --------------------------------------------------------------------------


def _progress_of(task: Task) -> RunProgress | None:
    value = task.fields.get("progress")
    return value if isinstance(value, RunProgress) else None


class FigureColumn(ProgressColumn):
    """A column showing one figure of the task's :class:`RunProgress` (``fields["progress"]``)."""

    def __init__(self, render: Any, style: str = "", *, empty: str = "") -> None:
        super().__init__()
        self._render, self._style, self._empty = render, style, empty

    def render(self, task: Task) -> Text:
        progress = _progress_of(task)
        text = self._empty if progress is None else str(self._render(progress))
        return Text(text, style=self._style)


def progress_columns() -> list[ProgressColumn]:
    return [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        FigureColumn(lambda p: fmt_percent(p.percent), "progress.percentage"),
        FigureColumn(lambda p: f"chunks {fmt_of(p.chunks_done, p.chunks_total)}"),
        FigureColumn(lambda p: f"rows {fmt_of(p.rows_done, p.rows_total)}"),
        FigureColumn(lambda p: fmt_rate(p.rows_per_s), "cyan"),
        FigureColumn(lambda p: f"ETA {fmt_eta(p.eta_s)}", "progress.remaining"),
        FigureColumn(lambda p: f"RSS {fmt_rss(p.rss_mb)}", "magenta"),
        FigureColumn(lambda p: f"CPU {fmt_cpu(p.cpu_pct)}", "magenta"),
    ]


class RunProgressView:
    """A Rich ``Progress`` fed by :class:`RunProgress` values (one task: the run).

    ```python
    with RunProgressView(console) as view:
        SignalFactory(progress_listener=view.update).run(...)
    ```
    The bar is pulsing while the percentage is unknown. It stays on screen after the run
    (pass ``transient=True`` to remove it).
    """

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.progress = Progress(
            *progress_columns(), console=console, transient=transient, refresh_per_second=8
        )
        self._task: TaskID | None = None
        self.last: RunProgress | None = None
        self.updates = 0

    def update(self, progress: RunProgress) -> None:
        """The listener: show ``progress`` (safe to call from any thread)."""
        percent = progress.percent
        total = 100.0 if percent is not None else None
        if self._task is None:
            self._task = self.progress.add_task(progress.phase, total=total, progress=progress)
        self.progress.update(
            self._task,
            description=progress.phase,
            total=total,
            completed=percent or 0.0,
            progress=progress,
        )
        self.last = progress
        self.updates += 1

    __call__ = update

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        if self._task is not None:
            task = self.progress.tasks[0]
            if task.total is not None and task.completed >= task.total:
                self.progress.update(self._task, description="done")
        self.progress.stop()

    def __enter__(self) -> RunProgressView:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Live progress in the CLI (B9): ``status`` from another process while ``run`` works.

The run is the real console script in a subprocess; ``signalfactory status RUN_ID --json`` is
polled, also in subprocesses, while it runs. A python step naps a little per chunk so the
40 chunks take long enough to be watched; nothing asserts how long anything took.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
import time
from typing import Any

from rich.console import Console

from consumption.harness import SIGNALFACTORY, Result, cli_env, sf, squash
from factories import DAY1, TEST_PII_KEY, URN, Project, orders, pipeline_doc
from signalfactory.consumption.progress_view import (
    RunProgressView,
    fmt_eta,
    fmt_rate,
    progress_table,
    summary_line,
)
from signalfactory.core.records import RunProgress

ROWS, CHUNK = 40_000, 1_000
ENV = {"SIGNALFACTORY_PII_KEY": TEST_PII_KEY, "SIGNALFACTORY_LOG_LEVEL": "ERROR"}
NAP = "import time\n\n\ndef nap(batch):\n    time.sleep(0.1)\n    return batch\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _project(project: Project, rows: int, *, slow: bool) -> Project:
    silver = [{"python": "slow:nap"}] if slow else []
    project.write_module("slow", NAP)
    project.write(pipeline=pipeline_doc(fmt="parquet", chunk_size=CHUNK, silver=silver))
    project.partition(DAY1, orders(rows, seed=21), "parquet")
    return project


def _status(project: Project, *args: str) -> Result:
    return sf("status", *args, home=project.root / "home", env=ENV).expect(0)


def test_status_from_another_process_follows_a_running_run(project: Project) -> None:
    _project(project, ROWS, slow=True)
    store = project.open().store  # registers the dataset in project/home
    run = subprocess.Popen(
        [
            str(SIGNALFACTORY),
            "run",
            str(project.pipeline_yaml),
            "--partition",
            f"dt={DAY1}",
            "--json",
        ],
        env=cli_env(project.root / "home", ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    polls: list[dict[str, Any]] = []
    try:
        run_id = None
        deadline = time.monotonic() + 180
        while run.poll() is None and time.monotonic() < deadline:
            if run_id is None:
                runs = store.list_runs(dataset_urn=URN)
                run_id = runs[0].run_id if runs else None
                time.sleep(0.05)
                continue
            polls.append(_status(project, run_id, "--json").json())
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err
    outcome = _json_doc(out)  # not a TTY: no progress bar mixed into the JSON
    assert run_id is not None
    assert run_id == outcome["run_id"]

    assert polls, "the run ended before status could be polled"
    assert all("progress" in p for p in polls)
    live = [p for p in polls if p["status"] == "RUNNING" and p["progress"] is not None]
    assert live, [p["status"] for p in polls]
    for poll in live:
        progress = poll["progress"]
        assert progress["chunks_total"] == ROWS // CHUNK
        assert progress["rows_total"] == ROWS
        assert progress["phase"] in ("processing", "publishing", "done")
        assert 0.0 <= progress["percent"] <= 100.0
    done = [p["progress"]["rows_done"] for p in polls if p["progress"] is not None]
    assert done == sorted(done), "rows_done went backwards"

    final = _status(project, run_id, "--json").json()
    assert final["status"] == "SUCCEEDED"
    progress = final["progress"]
    assert progress["rows_done"] == final["rows_read"] == ROWS
    assert progress["chunks_done"] == ROWS // CHUNK
    assert progress["percent"] == 100.0
    assert progress["phase"] in ("publishing", "done")  # the run finished either way
    assert done[-1] <= progress["rows_done"]

    text = squash(_status(project, run_id).stdout)
    assert squash("progress: done 100.0 %") in text
    assert squash(f"chunks {ROWS // CHUNK}/{ROWS // CHUNK}") in text
    assert squash(f"rows {ROWS:,}/{ROWS:,}") in text

    watched = sf("status", run_id, "--watch", "--json", home=project.root / "home", env=ENV)
    lines = watched.expect(0).stdout.splitlines()
    assert len(lines) == 1  # the run has ended: one refresh, then done
    assert _json_doc(lines[0])["progress"]["percent"] == 100.0


def _json_doc(text: str) -> Any:
    return json.loads(text)


def test_run_on_a_terminal_shows_the_live_progress_bar(project: Project) -> None:
    _project(project, 5 * CHUNK, slow=False)
    project.open()
    primary, secondary = os.openpty()
    env = cli_env(project.root / "home", {**ENV, "COLUMNS": "220", "LINES": "50"})
    env.pop("NO_COLOR", None)
    env.pop("TERM", None)
    proc = subprocess.Popen(
        [str(SIGNALFACTORY), "run", str(project.pipeline_yaml), "--partition", f"dt={DAY1}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO once the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        _, err = proc.communicate(timeout=180)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    assert proc.returncode == 0, err.decode()
    screen = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    assert "Traceback" not in screen
    assert "chunks 5/5" in screen, screen[-3000:]
    assert "rows 5,000/5,000" in screen
    assert "100.0 %" in screen
    assert "rows/s" in screen
    assert "ETA" in screen
    assert "RSS" in screen
    assert "CPU" in screen
    assert "SUCCEEDED" in screen  # the run's report follows the bar


# -- the views, fed directly -------------------------------------------------------------


def _progress(**changes: Any) -> RunProgress:
    values: dict[str, Any] = {
        "run_id": "run_x",
        "chunks_done": 17,
        "chunks_total": 40,
        "rows_done": 17_000,
        "rows_total": 40_000,
        "bytes_done": 425,
        "bytes_total": 1000,
        "rows_per_s": 8_100.0,
        "eta_s": 3725.0,
        "rss_mb": 312.4,
        "cpu_pct": 187.0,
        "phase": "processing",
    }
    return RunProgress(**(values | changes))


def test_the_live_view_renders_every_figure() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    view = RunProgressView(console)
    with view:
        view.update(_progress())
        view.update(_progress(chunks_done=40, rows_done=40_000, bytes_done=1000, eta_s=0.0))
    assert view.updates == 2
    screen = ANSI.sub("", buffer.getvalue())
    for figure in ("100.0 %", "chunks 40/40", "rows 40,000/40,000", "8.1k rows/s", "ETA 0:00"):
        assert figure in screen, screen
    assert "RSS 312 MB" in screen
    assert "CPU 187%" in screen


def test_unknown_figures_are_shown_as_unknown() -> None:
    unknown = _progress(chunks_total=None, rows_total=None, bytes_total=None, eta_s=None)
    line = summary_line(unknown, show_age=False)
    assert line.startswith("processing ? %")
    assert "chunks 17/?" in line
    assert "rows 17,000/?" in line
    assert "ETA –" in line
    assert fmt_rate(0.0) == "– rows/s"
    assert fmt_rate(float("nan")) == "– rows/s"
    assert (fmt_eta(59.6), fmt_eta(3725.0), fmt_eta(float("inf"))) == ("1:00", "1:02:05", "–")
    buffer = io.StringIO()
    Console(file=buffer, width=100).print(progress_table(_progress()))
    assert "42.5 %" in buffer.getvalue()
    assert "1:02:05" in buffer.getvalue()

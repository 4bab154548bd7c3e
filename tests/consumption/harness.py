"""Helpers for the CLI tests: the real console script as a subprocess, or Typer's CliRunner.

Every invocation, either way, is checked for what no CLI output may ever hold: a Python
traceback or a raw e-mail address / phone number of the kind the demo data seeds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from signalfactory.consumption.cli import app
from signalfactory.consumption.demo import build_demo

URN = "ds://curated/orders_enriched"
DAY1, DAY2, DAY3 = "2026-02-13", "2026-02-14", "2026-02-15"
#: Key material for tokenization in tests; never a real secret.
TEST_PII_KEY = "c0" * 32
TIMEOUT_S = 180


def _console_script() -> Path:
    beside = Path(sys.executable).with_name("signalfactory")
    if beside.is_file():
        return beside
    found = shutil.which("signalfactory")
    if found is None:
        pytest.fail("the signalfactory console script is not installed (pip install -e .)")
    return Path(found)


SIGNALFACTORY = _console_script()

# Raw values as the demo generates them. Tokens (tok_…) and masks (***-***-1234,
# ***@example.com) do not match: a raw value has a letter or digit right before the '@',
# and no '*' or digit right before the phone number.
RAW_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@example\.com")
RAW_PHONE = re.compile(r"(?<![\d*])555-\d{3}-\d{4}")


def assert_no_raw_pii(*texts: str) -> None:
    for text in texts:
        assert not RAW_EMAIL.search(text), f"raw e-mail in CLI output: {text[:2000]}"
        assert not RAW_PHONE.search(text), f"raw phone number in CLI output: {text[:2000]}"


def squash(text: str) -> str:
    """``text`` without any whitespace: robust to Rich wrapping long lines."""
    return "".join(text.split())


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as exactly one JSON document (fails on anything around it)."""
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"signalfactory {' '.join(self.args)} -> exit {self.exit_code}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )

    def expect(self, code: int) -> Result:
        assert self.exit_code == code, self.describe()
        return self

    def assert_one_paragraph_error(self, *fragments: str) -> None:
        """stderr is one paragraph (no blank line), no traceback, naming every fragment."""
        err = self.stderr.strip()
        assert err, self.describe()
        assert "\n\n" not in err, self.describe()
        assert "Traceback" not in self.stderr, self.describe()
        for fragment in fragments:
            assert squash(fragment) in squash(err), f"{fragment!r} missing\n{self.describe()}"


def _checked(result: Result) -> Result:
    assert "Traceback" not in result.stderr, result.describe()
    assert "Traceback" not in result.stdout, result.describe()
    assert_no_raw_pii(result.stdout, result.stderr)
    return result


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any SIGNALFACTORY_* setting, plus ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALFACTORY_")}
    env["SIGNALFACTORY_HOME"] = str(home)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Call:
    args: Sequence[str]
    home: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


def run_cli(*calls: Call) -> list[Result]:
    """Run the console script once per call, all at the same time; results in call order."""
    procs = [
        (
            tuple(c.args),
            subprocess.Popen(
                [str(SIGNALFACTORY), *c.args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=cli_env(c.home, c.env),
                cwd=c.cwd,
            ),
        )
        for c in calls
    ]
    results = []
    for args, proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"signalfactory {' '.join(args)} timed out\n{out}\n{err}")
        results.append(_checked(Result(args, proc.returncode, out, err)))
    return results


def sf(
    *args: str | Path,
    home: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Result:
    """One run of the real ``signalfactory`` console script in a subprocess."""
    return run_cli(Call([str(a) for a in args], home, env, cwd))[0]


def sf_inproc(*args: str | Path, home: Path, env: Mapping[str, str] | None = None) -> Result:
    """The same command in-process with Typer's CliRunner (no interpreter start-up)."""
    overrides: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("SIGNALFACTORY_")
    }
    overrides["SIGNALFACTORY_HOME"] = str(home)
    overrides.update(env or {})
    try:
        res = CliRunner().invoke(app, [str(a) for a in args], env=overrides)
    finally:
        # The CLI points structlog at the runner's (now closed) stderr; undo that so later
        # in-process code in this session does not log into a closed stream.
        structlog.reset_defaults()
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(
            f"signalfactory {' '.join(map(str, args))} raised {res.exception!r}"
        ) from res.exception
    return _checked(Result(tuple(map(str, args)), res.exit_code, res.stdout, res.stderr))


@dataclass(frozen=True)
class Workspace:
    """The demo's files (dataset, policy, pipeline, three days of raw orders) and a home."""

    root: Path
    home: Path
    env: Mapping[str, str]

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline.yaml"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.yaml"

    @property
    def policy(self) -> Path:
        return self.root / "policy_bundle.yaml"

    def sf(self, *args: str | Path) -> Result:
        return sf(*args, home=self.home, env=self.env, cwd=self.root)

    def call(self, *args: str | Path) -> Call:
        return Call([str(a) for a in args], self.home, self.env, self.root)

    def inproc(self, *args: str | Path) -> Result:
        return sf_inproc(*args, home=self.home, env=self.env)


def make_workspace(
    root: Path, *, register: bool = True, env: Mapping[str, str] | None = None
) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    build_demo(root)
    ws = Workspace(
        root=root,
        home=root / "home",
        env={"SIGNALFACTORY_PII_KEY": TEST_PII_KEY, **(env or {})},
    )
    if register:
        ws.inproc("register", ws.dataset, "--policy", ws.policy).expect(0)
    return ws

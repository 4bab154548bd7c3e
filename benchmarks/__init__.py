"""Benchmarks for signalfactory: ``python -m benchmarks`` (or ``make bench``).

Nothing here is part of the installed package; the modules run from the repository root.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Generated inputs and results live here (gitignored).
BENCH_DIR = REPO_ROOT / ".bench"

"""The curated top-level API: what `import signalfactory` promises."""

from __future__ import annotations

import pickle

import pytest

import signalfactory


def test_all_names_resolve_and_are_sorted() -> None:
    names = [n for n in signalfactory.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in signalfactory.__all__:
        assert getattr(signalfactory, name) is not None, name


def test_no_private_or_plane_modules_leak_into_all() -> None:
    assert not [n for n in signalfactory.__all__ if n.startswith("_") and n != "__version__"]
    assert "runner" not in signalfactory.__all__


@pytest.mark.parametrize(
    "error",
    [
        signalfactory.ConfigError("bad key 'x' in f.yaml"),
        signalfactory.InputDataError("file.csv: line 3"),
        signalfactory.StoreError("db down"),
        signalfactory.NotFoundError("run x"),
    ],
)
def test_errors_pickle_across_processes_and_keep_exit_codes(
    error: signalfactory.SignalFactoryError,
) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.message == error.message
    assert clone.exit_code == error.exit_code


def test_retry_markers() -> None:
    assert issubclass(signalfactory.ConfigError, signalfactory.Terminal)
    assert issubclass(signalfactory.StoreError, signalfactory.Transient)
    assert signalfactory.ConfigError("x").exit_code == 2
    assert signalfactory.InputDataError("x").exit_code == 1


def test_every_public_name_loads_lazily_and_unknown_names_fail() -> None:
    assert set(signalfactory._LAZY) == set(signalfactory.__all__) - {"__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = signalfactory.nope  # type: ignore[attr-defined]

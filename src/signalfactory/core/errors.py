"""One error root for the whole package.

Every error says what was received, what is allowed and how to fix it. ``Terminal`` errors
must not be retried; ``Transient`` ones may be. All errors pickle across processes because
their only state is the message passed to ``Exception.__init__`` plus plain attributes.
"""

from __future__ import annotations


class SignalFactoryError(Exception):
    """Root of every error raised on purpose by Signal Factory."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[SignalFactoryError], tuple[str]]:
        return (type(self), (self.message,))


class Terminal(SignalFactoryError):
    """Retrying cannot help: the input or configuration is wrong."""


class Transient(SignalFactoryError):
    """May succeed when retried (a lock, a network blip, a busy database)."""


class ConfigError(Terminal):
    """A YAML file, CLI flag or setting is invalid. CLI exit code 2."""

    exit_code = 2


class InputDataError(Terminal):
    """Source data is missing or unreadable. CLI exit code 1."""


class StoreError(Transient):
    """The metadata store could not be reached or written."""


class NotFoundError(Terminal):
    """A run, dataset or table that was asked for does not exist. CLI exit code 2."""

    exit_code = 2


class LimitExceeded(Terminal):
    """A run went over its time or memory limit. Its checkpoints are kept for a resume."""

    def __init__(self, message: str, kind: str = "time") -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[LimitExceeded], tuple[str, str]]:  # type: ignore[override]
        return (type(self), (self.message, self.kind))

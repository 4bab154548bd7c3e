"""Typed settings, read from ``SIGNALFACTORY_*`` environment variables. Nothing runs at import."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("signalfactory", appauthor=False))


class Settings(BaseSettings):
    """All configuration in one place.

    ``SIGNALFACTORY_HOME`` holds the SQLite store (``signalfactory.db``) and the lake
    (``lake/``). ``SIGNALFACTORY_DATABASE_URL`` points the store elsewhere, e.g.
    ``postgresql+psycopg://user@127.0.0.1:5432/db``.
    """

    model_config = SettingsConfigDict(
        env_prefix="SIGNALFACTORY_", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    pii_key: SecretStr | None = None
    pii_key_file: Path | None = None
    log_level: str = "WARNING"
    #: Evidence bus: ``store`` (embedded, default), ``redis://host:6379/0`` or
    #: ``nats://host:4222``. Events spool under ``home/spool`` while the bus is unreachable.
    bus_url: str = "store"
    #: OpenLineage emission for our runs; off unless set. ``OPENLINEAGE_URL`` is honoured too.
    openlineage_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SIGNALFACTORY_OPENLINEAGE_URL", "OPENLINEAGE_URL"),
    )
    openlineage_namespace: str = "signalfactory"
    #: Alert sinks besides the log: a JSON webhook and a Slack-compatible incoming webhook.
    alert_webhook_url: str | None = None
    alert_slack_webhook_url: str | None = None
    #: Kill switch of the observe() SDK: when true it does nothing at all.
    observe_disabled: bool = False

    @property
    def lake_root(self) -> Path:
        return self.home / "lake"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'signalfactory.db'}"


def load_settings() -> Settings:
    return Settings()

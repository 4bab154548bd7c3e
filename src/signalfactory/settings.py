"""Typed settings, read from ``SIGNALFACTORY_*`` environment variables. Nothing runs at import."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("signalfactory", appauthor=False))


class Settings(BaseSettings):
    """All configuration in one place.

    ``SIGNALFACTORY_HOME`` holds the SQLite store (``signalfactory.db``) and the lake
    (``lake/``). ``SIGNALFACTORY_DATABASE_URL`` points the store elsewhere, e.g.
    ``postgresql+psycopg://user@127.0.0.1:5432/db``.
    """

    model_config = SettingsConfigDict(env_prefix="SIGNALFACTORY_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    pii_key: SecretStr | None = None
    pii_key_file: Path | None = None
    log_level: str = "WARNING"

    @property
    def lake_root(self) -> Path:
        return self.home / "lake"

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'signalfactory.db'}"


def load_settings() -> Settings:
    return Settings()

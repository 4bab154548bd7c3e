"""Load a YAML file into a pydantic model with errors that name the file, key and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from signalfactory.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, kind: str) -> dict[str, Any]:
    """Parse ``path`` as a YAML mapping; ``kind`` names the file's role in messages."""
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist. Check the path (it is read as given).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise ConfigError(
            f"{kind} {path} is not valid YAML at {where}: {exc.problem}. "
            "Fix the indentation or quoting there."
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} {path} could not be read as YAML: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{kind} {path} must hold a YAML mapping (key: value lines); "
            f"it holds {type(data).__name__}."
        )
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        received = err.get("input")
        shown = "" if isinstance(received, dict | list) else f" (received {received!r})"
        lines.append(f"key '{key}': {err['msg']}{shown}")
    return f"{source} is invalid: " + "; ".join(lines) + "."


def load_model(path: Path, model: type[M], kind: str) -> M:
    data = read_yaml(path, kind)
    try:
        return model.model_validate(data, context={"source": f"{kind} {path}"})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{kind} {path}")) from None

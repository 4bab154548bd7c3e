"""Signal Factory: run data pipelines and prove, at every stage, that the data is good.

The public Python API. Everything else is importable from its plane's package but may change.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from signalfactory.api import Pipeline, SignalFactory
from signalfactory.core.errors import (
    ConfigError,
    InputDataError,
    NotFoundError,
    SignalFactoryError,
    StoreError,
    Terminal,
    Transient,
)
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    DatasetRecord,
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    QuarantineRecord,
    RunRecord,
    RunStatus,
    Stage,
    Transition,
)
from signalfactory.enforcement.catalog import EnforcementLevel
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.pipeline.queue import RunQueue, RunRequest
from signalfactory.pipeline.runner import RunOutcome
from signalfactory.pipeline.validate import ValidationSummary, validate_files
from signalfactory.production.spec import PipelineSpec

try:
    __version__ = version("signalfactory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CertificationState",
    "CertificationStatus",
    "ConfigError",
    "DatasetRecord",
    "DatasetSpec",
    "EnforcementLevel",
    "Evidence",
    "GateResult",
    "InputDataError",
    "LifecycleEvent",
    "LifecycleEventType",
    "NotFoundError",
    "Pipeline",
    "PipelineSpec",
    "PolicyBundle",
    "QuarantineRecord",
    "RunOutcome",
    "RunQueue",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "SignalFactory",
    "SignalFactoryError",
    "Stage",
    "StoreError",
    "Terminal",
    "Transient",
    "Transition",
    "ValidationSummary",
    "__version__",
    "validate_files",
]

"""Signal Factory: run data pipelines and prove, at every stage, that the data is good.

The public Python API. Everything else is importable from its plane's package but may change.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
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
    from signalfactory.core.observability import (
        CloudEvent,
        Incident,
        IncidentStatus,
        Severity,
        Signal,
        SignalKind,
        SignalState,
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
    from signalfactory.sdk import Observation, ObservationResult, WriteResult, WriteStatus, observe

# Imported on first use (PEP 562): `import signalfactory` stays cheap, and a process that
# only validates files never loads the store, the lake or the CLI.
_LAZY = {
    "Pipeline": "signalfactory.api",
    "SignalFactory": "signalfactory.api",
    "CertificationState": "signalfactory.core.records",
    "CertificationStatus": "signalfactory.core.records",
    "DatasetRecord": "signalfactory.core.records",
    "Evidence": "signalfactory.core.records",
    "GateResult": "signalfactory.core.records",
    "LifecycleEvent": "signalfactory.core.records",
    "LifecycleEventType": "signalfactory.core.records",
    "QuarantineRecord": "signalfactory.core.records",
    "RunRecord": "signalfactory.core.records",
    "RunStatus": "signalfactory.core.records",
    "Stage": "signalfactory.core.records",
    "Transition": "signalfactory.core.records",
    "ConfigError": "signalfactory.core.errors",
    "InputDataError": "signalfactory.core.errors",
    "NotFoundError": "signalfactory.core.errors",
    "SignalFactoryError": "signalfactory.core.errors",
    "StoreError": "signalfactory.core.errors",
    "Terminal": "signalfactory.core.errors",
    "Transient": "signalfactory.core.errors",
    "EnforcementLevel": "signalfactory.enforcement.catalog",
    "DatasetSpec": "signalfactory.enforcement.policy",
    "PolicyBundle": "signalfactory.enforcement.policy",
    "RunQueue": "signalfactory.pipeline.queue",
    "RunRequest": "signalfactory.pipeline.queue",
    "RunOutcome": "signalfactory.pipeline.runner",
    "ValidationSummary": "signalfactory.pipeline.validate",
    "validate_files": "signalfactory.pipeline.validate",
    "PipelineSpec": "signalfactory.production.spec",
    "CloudEvent": "signalfactory.core.observability",
    "Incident": "signalfactory.core.observability",
    "IncidentStatus": "signalfactory.core.observability",
    "Severity": "signalfactory.core.observability",
    "Signal": "signalfactory.core.observability",
    "SignalKind": "signalfactory.core.observability",
    "SignalState": "signalfactory.core.observability",
    "observe": "signalfactory.sdk",
    "Observation": "signalfactory.sdk",
    "ObservationResult": "signalfactory.sdk",
    "WriteResult": "signalfactory.sdk",
    "WriteStatus": "signalfactory.sdk",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'signalfactory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


try:
    __version__ = version("signalfactory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CertificationState",
    "CertificationStatus",
    "CloudEvent",
    "ConfigError",
    "DatasetRecord",
    "DatasetSpec",
    "EnforcementLevel",
    "Evidence",
    "GateResult",
    "Incident",
    "IncidentStatus",
    "InputDataError",
    "LifecycleEvent",
    "LifecycleEventType",
    "NotFoundError",
    "Observation",
    "ObservationResult",
    "Pipeline",
    "PipelineSpec",
    "PolicyBundle",
    "QuarantineRecord",
    "RunOutcome",
    "RunQueue",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "Severity",
    "Signal",
    "SignalFactory",
    "SignalFactoryError",
    "SignalKind",
    "SignalState",
    "Stage",
    "StoreError",
    "Terminal",
    "Transient",
    "Transition",
    "ValidationSummary",
    "WriteResult",
    "WriteStatus",
    "__version__",
    "observe",
    "validate_files",
]

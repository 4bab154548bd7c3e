"""The idempotency key of a run (B3): what makes two submissions the same run.

SHA-256 of the input files' digests (or the manifest's digest, whose files were verified
against it), the pipeline parameters that change what a run computes, the partition, the
policy, the salt and the code of Python steps. Engine, chunk size, retries, limits and
exports do not change the result, so they are not in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from signalfactory.production.spec import PipelineSpec


def idempotency_key(
    files: Sequence[Path],
    spec: PipelineSpec,
    partition: Mapping[str, str],
    policy_digest: str,
    manifest_digest: str | None = None,
) -> str:
    """SHA-256 of the input digests (or the manifest's) + pipeline params + policy + salt (B3)."""
    digest = hashlib.sha256()
    if manifest_digest is not None:
        # The manifest's files were just verified against it: no need to read them twice.
        digest.update(f"manifest:{manifest_digest}\n".encode())
    for path in files if manifest_digest is None else ():
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{path.name}:{path.stat().st_size}:{content}\n".encode())
    params = spec.model_dump(
        mode="json",
        exclude={
            "base_dir",
            "source_file",
            "engine",
            "engine_address",
            "max_workers",
            "chunk_size",
            "exports",
            "retries",
            "dead_letter",
            "limits",
        },
    )
    # The code of Python steps is part of what produced the output: a fix changes the key.
    code = {}
    for step in (*spec.steps.silver, *spec.steps.gold):
        if step.python:
            module = spec.base_dir / (step.python.split(":")[0].replace(".", "/") + ".py")
            if module.is_file():
                code[step.python] = hashlib.sha256(module.read_bytes()).hexdigest()
    digest.update(
        json.dumps([params, dict(partition), policy_digest, code], sort_keys=True).encode()
    )
    return digest.hexdigest()

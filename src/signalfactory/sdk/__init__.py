"""``observe()``: evidence, certification and lifecycle events for jobs we do not run (O9).

```python
import signalfactory

with signalfactory.observe(
    dataset="ds://curated/orders_enriched",
    run_id="airflow__2026-02-15",
    partition={"dt": "2026-02-15"},
) as obs:
    obs.write(raw_df, layer="bronze")  # optional earlier layers
    obs.write(orders_df, layer="gold")  # gates + certification from the registered bundle
print(obs.result.certified, obs.result.quarantine_table)
```

Entering emits ``JobRunStarted`` and records a run (pipeline ``sdk:<job>``) like a pipeline
run, so ``signalfactory status``/``runs``/``evidence`` show it. Each ``write`` evaluates the
gates of the stages up to its layer, routes invalid rows to the run's quarantine table,
commits the valid rows to the layer table and, on gold, advances the certified table only
when every gate passed (else ``HELD_AT_PREVIOUS``). Leaving emits ``JobRunCompleted``, or
``JobRunFailed`` when the block raised; the producer's exception propagates unchanged.

Producer safety: nothing in here raises into the producer's job. If the store (or the bus
behind the run hooks) cannot be used, one warning is logged, nothing is certified and the
lifecycle events go to the spool (see ``sdk.degraded``). An unregistered dataset is the
producer's configuration bug: it is logged as an error and the observation does nothing,
unless ``strict=True`` asks for a ``NotFoundError``. ``SIGNALFACTORY_OBSERVE_DISABLED=1``
turns the whole SDK into a no-op whose ``write`` returns None.
"""

from __future__ import annotations

from pathlib import Path

from signalfactory.sdk.degraded import EventSpool, MemorySpool
from signalfactory.sdk.observe import Observation
from signalfactory.sdk.results import ObservationResult, WriteResult, WriteStatus
from signalfactory.settings import Settings


def observe(
    dataset: str,
    run_id: str | None = None,
    *,
    partition: dict[str, str] | None = None,
    home: str | Path | None = None,
    settings: Settings | None = None,
    code_ref: str | None = None,
    dag_run_id: str | None = None,
    producer_urn: str | None = None,
    job: str | None = None,
    strict: bool = False,
    spool: EventSpool | None = None,
) -> Observation:
    """Observe one run of an external job writing ``dataset`` (a registered dataset URN).

    ``run_id`` is the producer's id for the run (a new one is made when omitted; a retry of a
    recorded run id becomes ``<run_id>__retry<N>``); ``job`` names it (pipeline ``sdk:<job>``,
    default: the dataset's name). ``settings``/``home`` choose the Signal Factory home as for
    ``SignalFactory``. ``strict=True`` raises on an unregistered dataset, an unknown layer or
    an unsupported frame instead of logging them. ``spool`` receives the lifecycle events of
    a degraded run.
    """
    return Observation(
        dataset,
        run_id,
        partition=partition,
        home=home,
        settings=settings,
        code_ref=code_ref,
        dag_run_id=dag_run_id,
        producer_urn=producer_urn,
        job=job,
        strict=strict,
        spool=spool,
    )


__all__ = [
    "EventSpool",
    "MemorySpool",
    "Observation",
    "ObservationResult",
    "WriteResult",
    "WriteStatus",
    "observe",
]

"""Evidence → consumer latency through each evidence bus: the store, Redis Streams, NATS.

``python -m benchmarks.bench_bus [--quick] [--only store,redis,nats]``. Results go to
``.bench/results-bus.json``. Per bus, two measurements on a fresh, isolated stream:

1. **Latency**: a producer thread publishes evidence envelopes at a steady rate (each
   carries its send time); a consumer group member reads (blocking), acknowledges and records
   receive − send. Reported: p50 / p95 / max in milliseconds.
2. **Throughput**: publish N envelopes back to back (publish rate, events/s), then drain them
   with one consumer in batches of 100 with acks (consume rate, events/s).
3. **Evidence → signal**: ``signalfactory watch --follow``'s loop (``processing.follow``) runs
   on the bus against a store holding a registered dataset with freshness and volume SLOs and
   ten days of commits; one envelope about that dataset is published at a time and the time
   until its signals are evaluated and stored is recorded (p50 / p95).

Redis and NATS are the local servers (``SIGNALFACTORY_TEST_REDIS_URL`` /
``SIGNALFACTORY_TEST_NATS_URL``, defaults 127.0.0.1:6379 and :4222); a bus that cannot be
reached is reported as skipped. The store bus is a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import BENCH_DIR, REPO_ROOT
from signalfactory.core.observability import EVIDENCE_EVENT_TYPE, CloudEvent
from signalfactory.knowledge import open_store
from signalfactory.processing.bus import BusUnavailable, EvidenceBus, StoreBus

BUSES = ("store", "redis", "nats")
REDIS_URL = os.environ.get("SIGNALFACTORY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("SIGNALFACTORY_TEST_NATS_URL", "nats://127.0.0.1:4222")
#: (latency events, paced rate per second, throughput events) for full and quick runs.
FULL = (2_000, 500, 10_000)
QUICK = (300, 300, 1_000)
BLOCK_MS = 200


def _event(n: int, sent_ns: int) -> CloudEvent:
    return CloudEvent(
        id=f"bench-{uuid.uuid4().hex}",
        source="urn:signalfactory:run:bench",
        type=EVIDENCE_EVENT_TYPE,
        subject="ds://bench/orders",
        time=datetime.now(UTC),
        data={
            "n": n,
            "sent_ns": sent_ns,
            "gate": "G3_SCHEMA",
            "result": "PASS",
            "metrics": {"rows": 1000, "null_rate": 0.0},
        },
    )


@contextmanager
def open_bench_bus(name: str) -> Iterator[EvidenceBus]:
    """A fresh bus of kind ``name`` on its own stream; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    if name == "store":
        with tempfile.TemporaryDirectory(prefix="sf-bench-bus-") as tmp:
            store = open_store(f"sqlite:///{Path(tmp) / 'bus.db'}")
            try:
                yield StoreBus(store)
            finally:
                store.close()
        return
    bus: Any
    if name == "redis":
        from signalfactory.processing.bus.redis_bus import RedisBus

        bus = RedisBus(f"{REDIS_URL}?stream=sf-bench-{tag}")
    else:
        from signalfactory.processing.bus.nats_bus import NatsBus

        bus = NatsBus(f"{NATS_URL}?stream=SF_BENCH_{tag}&subject=sf.bench.{tag}")
    try:
        yield bus
    finally:
        try:
            bus.delete_stream()
        finally:
            bus.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(bus: EvidenceBus, count: int, rate: float) -> dict[str, Any]:
    group = f"lat-{uuid.uuid4().hex[:8]}"
    bus.consume(group, "bench", max_count=1)  # create the group before the clock starts
    errors: list[BaseException] = []

    def produce() -> None:
        start = time.perf_counter()
        try:
            for n in range(count):
                wait = start + n / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                bus.publish(_event(n, time.perf_counter_ns()))
        except BaseException as exc:  # reported by the consumer side
            errors.append(exc)

    producer = threading.Thread(target=produce, name="bench-producer")
    producer.start()
    latencies_ms: list[float] = []
    deadline = time.monotonic() + count / rate + 60
    while len(latencies_ms) < count and time.monotonic() < deadline and not errors:
        for delivery in bus.consume(group, "bench", max_count=100, block_ms=BLOCK_MS):
            latencies_ms.append((time.perf_counter_ns() - delivery.event.data["sent_ns"]) / 1e6)
            bus.ack(group, delivery)
    producer.join()
    if errors:
        raise errors[0]
    return {
        "events": count,
        "received": len(latencies_ms),
        "rate_per_s": rate,
        "p50_ms": statistics.median(latencies_ms),
        "p95_ms": _percentile(latencies_ms, 0.95),
        "max_ms": max(latencies_ms),
    }


def measure_throughput(bus: EvidenceBus, count: int) -> dict[str, Any]:
    group = f"tp-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    for n in range(count):
        bus.publish(_event(n, 0))
    publish_s = time.perf_counter() - start
    start, got = time.perf_counter(), 0
    while got < count:
        batch = bus.consume(group, "bench", max_count=100, block_ms=BLOCK_MS)
        if not batch:
            break
        for delivery in batch:
            bus.ack(group, delivery)
        got += len(batch)
    consume_s = time.perf_counter() - start
    return {
        "events": count,
        "consumed": got,
        "publish_per_s": count / publish_s,
        "consume_per_s": got / consume_s if consume_s else 0.0,
    }


SIGNAL_URN = "ds://bench/orders"


def _signal_store(folder: Path) -> Any:
    """A store with one registered dataset and ten days of certified commits."""
    from datetime import timedelta

    from signalfactory.core.records import (
        DatasetRecord,
        LifecycleEvent,
        LifecycleEventType,
    )

    store = open_store(f"sqlite:///{folder / 'signals.db'}")
    spec = {
        "urn": SIGNAL_URN,
        "owner_team": "bench",
        "tier": "TIER_1",
        "storage": {"bronze": "b/", "silver": "s/", "gold": "g/"},
        "slo": {
            "freshness": {
                "expected_update_by": "02:00 UTC daily",
                "grace_period": "30m",
                "partition_key": "dt",
            },
            "volume": {"anomaly_threshold_pct": 40},
        },
    }
    store.put_dataset(DatasetRecord(SIGNAL_URN, "bench", "TIER_1", spec, {}, {}))
    today = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    for back in range(10, 0, -1):
        day = today - timedelta(days=back)
        dt = f"dt={(day - timedelta(days=1)).date()}"
        run_id = f"run_bench_{back}"
        for kind, payload in (
            (LifecycleEventType.JOB_RUN_STARTED, {"partition": {"dt": dt[3:]}}),
            (
                LifecycleEventType.DATASET_WRITE_COMMITTED,
                {"layer": "certified", "rows_written": 1000 + back, "partition_key": dt},
            ),
            (LifecycleEventType.JOB_RUN_COMPLETED, {"partition": {"dt": dt[3:]}}),
        ):
            store.add_event(LifecycleEvent(kind, run_id, SIGNAL_URN, payload, timestamp=day))
    return store


def measure_signal_latency(bus: EvidenceBus, count: int) -> dict[str, Any]:
    """Publish one envelope at a time; time until ``follow`` has evaluated its dataset."""
    import queue

    from signalfactory.processing.follow import follow

    with tempfile.TemporaryDirectory(prefix="sf-bench-signal-") as tmp:
        store = _signal_store(Path(tmp))
        done = threading.Event()
        reports: queue.Queue[Any] = queue.Queue()
        group = f"watch-{uuid.uuid4().hex[:8]}"

        def loop() -> None:
            for report in follow(store, bus, interval_s=3600, group=group, stop=done.is_set):
                reports.put(report)

        worker = threading.Thread(target=loop, name="bench-follow", daemon=True)
        worker.start()
        try:
            assert reports.get(timeout=60).scope is None  # the first full pass
            latencies_ms: list[float] = []
            for n in range(count):
                event = CloudEvent(
                    id=f"sig-{uuid.uuid4().hex}",
                    source="urn:signalfactory:run:bench",
                    type=EVIDENCE_EVENT_TYPE,
                    subject=SIGNAL_URN,
                    time=datetime.now(UTC),
                    data={"n": n},
                )
                sent = time.perf_counter()
                bus.publish(event)
                report = reports.get(timeout=60)
                latencies_ms.append((time.perf_counter() - sent) * 1000)
                assert report.scope == (SIGNAL_URN,)
                assert report.signals
        finally:
            done.set()
            worker.join(timeout=10)
            store.close()
    return {
        "events": count,
        "p50_ms": statistics.median(latencies_ms),
        "p95_ms": _percentile(latencies_ms, 0.95),
        "max_ms": max(latencies_ms),
    }


def run(quick: bool, only: tuple[str, ...] = BUSES) -> dict[str, Any]:
    """Measure every bus in ``only``; a bus that cannot be reached is marked skipped."""
    lat_n, rate, tp_n = QUICK if quick else FULL
    results: dict[str, Any] = {}
    for name in only:
        try:
            with open_bench_bus(name) as bus:
                results[name] = {
                    "latency": measure_latency(bus, lat_n, rate),
                    "throughput": measure_throughput(bus, tp_n),
                }
            with open_bench_bus(name) as bus:
                results[name]["signal"] = measure_signal_latency(bus, 30 if quick else 200)
        except BusUnavailable as exc:
            results[name] = {"skipped": exc.message}
    return results


def _print(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Evidence bus: evidence → consumer, and → signal", title_justify="left")
    columns = ("bus", "p50 ms", "p95 ms", "max ms", "publish/s", "consume+ack/s",
               "→ signal p50 ms", "→ signal p95 ms")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "bus" else "right")
    for name, row in results.items():
        if "skipped" in row:
            table.add_row(name, "skipped", *[""] * (len(columns) - 2))
            continue
        lat, tp, sig = row["latency"], row["throughput"], row["signal"]
        table.add_row(
            name,
            f"{lat['p50_ms']:.1f}",
            f"{lat['p95_ms']:.1f}",
            f"{lat['max_ms']:.1f}",
            f"{tp['publish_per_s']:,.0f}",
            f"{tp['consume_per_s']:,.0f}",
            f"{sig['p50_ms']:.1f}",
            f"{sig['p95_ms']:.1f}",
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    for name, row in results.items():
        if "skipped" in row:
            console.print(f"• {name} skipped: {row['skipped']}", soft_wrap=True)
        elif row["latency"]["received"] < row["latency"]["events"]:
            console.print(f"• {name}: only {row['latency']['received']} events arrived")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_bus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with fewer events")
    parser.add_argument("--only", default=",".join(BUSES), help="comma-separated buses")
    args = parser.parse_args(argv)
    only = tuple(b.strip() for b in args.only.split(",") if b.strip())
    unknown = sorted(set(only) - set(BUSES))
    if unknown:
        parser.error(f"unknown buses {unknown}; choose from {', '.join(BUSES)}")
    results = run(args.quick, only)
    _print(results)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / "results-bus.json"
    payload = {"quick": args.quick, "results": results}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results written to {path.relative_to(REPO_ROOT)}")
    lost = [
        n
        for n, r in results.items()
        if "latency" in r and r["latency"]["received"] < r["latency"]["events"]
    ]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

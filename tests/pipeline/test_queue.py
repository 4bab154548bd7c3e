"""RunQueue: priority order, FIFO ties, a real concurrency limit, cancel, errors, shutdown.

Executions are held with events and barriers, never timed with sleeps; every wait has a
generous timeout so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, wait

import pytest

from factories import DAY1, DAY2, DAY3, URN, Project, orders
from signalfactory.api import SignalFactory
from signalfactory.core.errors import ConfigError, Transient
from signalfactory.core.records import CertificationStatus, RunStatus
from signalfactory.pipeline.queue import PRIORITIES, RunQueue, RunRequest, resolve_priority
from signalfactory.pipeline.runner import RunOutcome

TIMEOUT = 30


def req(tag: str, by: str = "test") -> RunRequest:
    """A request whose pipeline field carries a tag the fake executes record."""
    return RunRequest(pipeline=tag, partition={"dt": DAY1}, submitted_by=by)


class Recorder:
    """An ``execute`` that records tags in order; the ``hold`` tag blocks until released."""

    def __init__(self, fail: Callable[[str], BaseException | None] = lambda _: None) -> None:
        self.order: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, request: RunRequest) -> str:
        tag = str(request.pipeline)
        with self.lock:
            self.order.append(tag)
        if tag == "hold":
            self.started.set()
            assert self.release.wait(TIMEOUT), "test never released the held run"
        error = self.fail(tag)
        if error is not None:
            raise error
        return f"done:{tag}"


@pytest.fixture
def held() -> Iterator[tuple[RunQueue[str], Recorder, Future[str]]]:
    """A started single-worker queue whose worker is busy with the ``hold`` request."""
    recorder = Recorder(fail=lambda t: Transient(f"boom {t}") if t.startswith("bad") else None)
    queue = RunQueue(recorder, max_concurrent=1, name="held")
    queue.start()
    first = queue.submit(req("hold"))
    assert recorder.started.wait(TIMEOUT)
    try:
        yield queue, recorder, first
    finally:
        recorder.release.set()
        queue.shutdown(wait=True)


def test_mixed_priorities_run_highest_first_and_fifo_among_equals(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, recorder, first = held
    futures = [
        queue.submit(req("low"), "low"),
        queue.submit(req("normal"), "normal"),
        queue.submit(req("high-1"), "high"),
        queue.submit(req("critical"), "critical"),
        queue.submit(req("high-2"), 100),
    ]
    recorder.release.set()
    assert [f.result(TIMEOUT) for f in futures] == [
        "done:low",
        "done:normal",
        "done:high-1",
        "done:critical",
        "done:high-2",
    ]
    assert first.result(TIMEOUT) == "done:hold"
    assert recorder.order == ["hold", "critical", "high-1", "high-2", "normal", "low"]


def test_int_priorities_higher_first_default_zero_and_negative_last(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, recorder, _ = held
    futures = [
        queue.submit(req("default")),
        queue.submit(req("minus"), -5),
        queue.submit(req("seventy"), 70),
        queue.submit(req("zero"), 0),
        queue.submit(req("named-low"), "LOW"),
    ]
    recorder.release.set()
    wait(futures, timeout=TIMEOUT)
    assert recorder.order == ["hold", "seventy", "default", "zero", "named-low", "minus"]


def test_pending_snapshot_is_in_run_order(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, _, _ = held
    a = req("a", by="alice")
    b = req("b", by="bob")
    c = req("c", by="carol")
    queue.submit(a, "normal")
    queue.submit(b, "critical")
    queue.submit(c, "normal")
    snapshot = queue.pending()
    assert [p.request_id for p in snapshot] == [b.request_id, a.request_id, c.request_id]
    assert [p.priority for p in snapshot] == [200, 50, 50]
    assert [p.submitted_by for p in snapshot] == ["bob", "alice", "carol"]
    assert snapshot[1].enqueued_at <= snapshot[2].enqueued_at
    assert queue.active == 1
    assert "pending=3" in repr(queue)


def test_cancelling_a_pending_request_removes_it(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, recorder, first = held
    a, b, c = req("a"), req("b"), req("c")
    fa, fb, fc = queue.submit(a), queue.submit(b), queue.submit(c)
    assert fb.cancel()
    assert not first.cancel()  # already running
    assert [p.request_id for p in queue.pending()] == [a.request_id, c.request_id]
    recorder.release.set()
    assert fa.result(TIMEOUT) == "done:a"
    assert fc.result(TIMEOUT) == "done:c"
    assert fb.cancelled()
    with pytest.raises(CancelledError):
        fb.result(TIMEOUT)
    assert recorder.order == ["hold", "a", "c"]


def test_an_exception_goes_to_its_future_and_the_worker_keeps_going(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, recorder, _ = held
    bad = queue.submit(req("bad-1"), "high")
    good = queue.submit(req("good"))
    recorder.release.set()
    error = bad.exception(TIMEOUT)
    assert isinstance(error, Transient)
    assert error.message == "boom bad-1"
    assert good.result(TIMEOUT) == "done:good"
    assert recorder.order == ["hold", "bad-1", "good"]
    assert queue.active == 0


def test_shutdown_with_cancel_pending_cancels_waiting_runs_and_finishes_the_running_one(
    held: tuple[RunQueue[str], Recorder, Future[str]],
) -> None:
    queue, recorder, first = held
    waiting = [queue.submit(req(f"w{i}")) for i in range(3)]
    queue.shutdown(wait=False, cancel_pending=True)
    assert all(f.cancelled() for f in waiting)
    assert queue.pending() == []
    with pytest.raises(RuntimeError, match="shut down"):
        queue.submit(req("late"))
    with pytest.raises(RuntimeError, match="shut down"):
        queue.start()
    recorder.release.set()
    queue.shutdown(wait=True)
    assert first.result(TIMEOUT) == "done:hold"
    assert recorder.order == ["hold"]


def test_shutdown_without_cancel_drains_even_a_queue_never_started() -> None:
    recorder = Recorder()
    queue = RunQueue(recorder, max_concurrent=1)
    futures = [queue.submit(req(t), p) for t, p in (("x", 0), ("y", 200), ("z", 50))]
    assert not any(f.done() for f in futures)  # nothing runs before start()
    queue.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert recorder.order == ["y", "z", "x"]


def test_max_concurrent_two_never_runs_more_than_two_at_once() -> None:
    lock = threading.Lock()
    running = 0
    observed: list[int] = []
    pair = threading.Barrier(2, timeout=TIMEOUT)  # two runs must overlap to pass

    def execute(request: RunRequest) -> str:
        nonlocal running
        with lock:
            running += 1
            observed.append(running)
        try:
            pair.wait()
        finally:
            with lock:
                running -= 1
        return str(request.pipeline)

    with RunQueue(execute, max_concurrent=2, name="pairs") as queue:
        futures = [queue.submit(req(f"j{i}")) for i in range(6)]
        assert [f.result(TIMEOUT) for f in futures] == [f"j{i}" for i in range(6)]
    assert len(observed) == 6
    assert max(observed) == 2
    assert queue.active == 0


def test_the_third_run_waits_while_two_are_active() -> None:
    started = [threading.Event() for _ in range(3)]
    release = threading.Event()

    def execute(request: RunRequest) -> int:
        index = int(str(request.pipeline))
        started[index].set()
        assert release.wait(TIMEOUT)
        return index

    with RunQueue(execute, max_concurrent=2) as queue:
        requests = [req(str(i)) for i in range(3)]
        futures = [queue.submit(r) for r in requests]
        assert started[0].wait(TIMEOUT)
        assert started[1].wait(TIMEOUT)
        assert queue.active == 2
        assert not started[2].is_set()
        assert [p.request_id for p in queue.pending()] == [requests[2].request_id]
        release.set()
        assert [f.result(TIMEOUT) for f in futures] == [0, 1, 2]


def test_many_threads_submitting_at_once_each_run_completes_exactly_once() -> None:
    lock = threading.Lock()
    executed: Counter[str] = Counter()

    def execute(request: RunRequest) -> str:
        with lock:
            executed[request.request_id] += 1
        return request.request_id

    futures: list[tuple[RunRequest, Future[str]]] = []
    go = threading.Barrier(4, timeout=TIMEOUT)

    def submitter(queue: RunQueue[str], who: int) -> None:
        go.wait()
        for i in range(25):
            request = req(f"t{who}-{i}", by=f"thread-{who}")
            future = queue.submit(request, ("low", "normal", "high", "critical")[i % 4])
            with lock:
                futures.append((request, future))

    with RunQueue(execute, max_concurrent=3, name="crowd") as queue:
        threads = [threading.Thread(target=submitter, args=(queue, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    assert len(futures) == 100
    assert all(f.result(0) == r.request_id for r, f in futures)
    assert len(executed) == 100
    assert set(executed.values()) == {1}


def test_invalid_priorities_and_limits_are_config_errors() -> None:
    assert resolve_priority("critical") == PRIORITIES["critical"] == 200
    assert resolve_priority(-3) == -3
    for bad in ("urgent", True, 1.5, None):
        with pytest.raises(ConfigError, match="priority"):
            resolve_priority(bad)  # type: ignore[arg-type]
    for limit in (0, -1, True, 2.0):
        with pytest.raises(ConfigError, match="max_concurrent"):
            RunQueue(Recorder(), max_concurrent=limit)  # type: ignore[arg-type]


def test_run_request_is_frozen_and_keeps_its_own_partition() -> None:
    partition = {"dt": DAY1}
    request = RunRequest("pipeline.yaml", partition, engine="threads", chunk_size=500)
    partition["dt"] = DAY2
    assert request.partition == {"dt": DAY1}
    assert request.request_id != RunRequest("pipeline.yaml").request_id
    with pytest.raises(AttributeError):
        request.engine = "sequential"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.partition["dt"] = DAY3  # type: ignore[index]


def test_queued_signal_factory_runs_certify_in_priority_order(project: Project) -> None:
    for seed, day in enumerate((DAY1, DAY2, DAY3)):
        project.partition(day, orders(300, seed=seed, first_id=1 + 1000 * seed, day=day))
    sf: SignalFactory = project.open()

    def execute(request: RunRequest) -> RunOutcome:
        return sf.run(
            request.pipeline,
            request.partition,
            engine=request.engine,
            chunk_size=request.chunk_size,
        )

    queue = RunQueue(execute, max_concurrent=1, name="sf")
    # Queued before start(), so the single worker sees all three and picks by priority.
    futures = {
        day: queue.submit(RunRequest(project.pipeline_yaml, {"dt": day}), priority)
        for day, priority in ((DAY1, "low"), (DAY2, "critical"), (DAY3, "normal"))
    }
    with queue:
        outcomes = {day: f.result(TIMEOUT * 4) for day, f in futures.items()}

    for day, outcome in outcomes.items():
        assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
        assert outcome.run.certification_status is CertificationStatus.CERTIFIED
        assert outcome.run.partition == {"dt": day}
        assert not outcome.reused
    runs = sorted(sf.store.list_runs(URN), key=lambda r: r.started_at)
    assert [r.partition["dt"] for r in runs] == [DAY2, DAY3, DAY1]
    assert [r.run_id for r in runs] == [outcomes[d].run.run_id for d in (DAY2, DAY3, DAY1)]
    assert all(r.finished_at is not None for r in runs)
    assert runs[0].finished_at <= runs[1].started_at  # type: ignore[operator]
    assert runs[1].finished_at <= runs[2].started_at  # type: ignore[operator]
    assert sf.certified(URN).certification_status is CertificationStatus.CERTIFIED

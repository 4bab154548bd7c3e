"""The evidence bus on NATS JetStream: a durable pull consumer per group, ``Nats-Msg-Id`` de-dup.

* stream ``SIGNAL_FACTORY`` on subject ``signal_factory.evidence`` (created on first use with a
  ``duplicate_window_s`` de-dup window);
* publish sends the envelope with header ``Nats-Msg-Id: <event id>``, so JetStream drops a
  re-published id within the window;
* each consumer group is a durable pull consumer (explicit ack, from the start of the
  stream); an unacknowledged delivery is redelivered after ``ack_wait_s``;
* ``delivery_id`` is the message's ack subject, so any process can acknowledge it.

nats-py is asyncio: the bus owns one private event loop in a daemon thread and every call
submits a coroutine to it and waits at most its timeout. URL query parameters
(``nats://host:4222?stream=...&subject=...&ack_wait_s=...``) override the keyword arguments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from signalfactory.core.errors import ConfigError
from signalfactory.core.observability import CloudEvent
from signalfactory.processing.bus import _nats
from signalfactory.processing.bus.base import (
    DEFAULT_SUBJECT,
    BusUnavailable,
    Delivery,
    check_consume_args,
)

__all__ = ["DEFAULT_STREAM", "NatsBus"]

T = TypeVar("T")
DEFAULT_STREAM = "SIGNAL_FACTORY"
MAX_BLOCK_MS = 10_000
_MIN_FETCH_S = 0.1
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
log = structlog.get_logger("signalfactory.bus.nats")
_OPTIONS = ("stream", "subject", "ack_wait_s", "duplicate_window_s")


class _LoopThread:
    """A private asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="signalfactory-nats-bus", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # also the builtin TimeoutError since 3.11
            if future.done():
                raise  # the coroutine's own timeout
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def stop(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


class NatsBus:
    """:class:`~signalfactory.processing.bus.base.EvidenceBus` on NATS JetStream (≥ 2.9)."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        ack_wait_s: float = 30.0,
        duplicate_window_s: float = 120.0,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 2.0,
    ) -> None:
        url, options = _split_options(url)
        self.stream = options.get("stream", stream)
        self.subject = options.get("subject", subject)
        if not _NAME.match(self.stream):
            raise ConfigError(
                f"NATS stream name {self.stream!r} is not allowed; use letters, digits, - and _"
            )
        self._display = _redact(url)
        self.timeout_s = timeout_s
        self._core = _nats.AsyncJetStream(
            url,
            stream=self.stream,
            subject=self.subject,
            ack_wait_s=_positive("ack_wait_s", options.get("ack_wait_s", ack_wait_s)),
            duplicate_window_s=_positive(
                "duplicate_window_s", options.get("duplicate_window_s", duplicate_window_s)
            ),
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
        )
        self._loop = _LoopThread()
        self._closed = False
        # Longest a call may take: connecting (2 x connect timeout) + the call itself.
        self._budget = connect_timeout_s * 2 + timeout_s * 2

    @property
    def name(self) -> str:
        return "nats"

    def __repr__(self) -> str:
        return f"NatsBus({self._display!r}, stream={self.stream!r}, subject={self.subject!r})"

    def _call(self, doing: str, coro: Coroutine[Any, Any, T], extra_s: float = 0.0) -> T:
        if self._closed:
            coro.close()
            raise ConfigError(f"the NATS evidence bus at {self._display} is closed; open a new one")
        try:
            return self._loop.run(coro, self._budget + extra_s)
        except BaseException as exc:
            if isinstance(exc, TimeoutError) or _nats.is_unavailable(exc):
                detail = str(exc) or "no answer in time (unreachable or too slow)"
                raise BusUnavailable(
                    f"cannot {doing} on the NATS evidence bus at {self._display} (stream "
                    f"{self.stream!r}): {type(exc).__name__}: {detail}. Fix: start nats-server "
                    "with JetStream (-js) or set SIGNALFACTORY_BUS_URL to a reachable bus; "
                    "producers spool meanwhile"
                ) from None
            if isinstance(exc, _nats.NatsApiError):
                raise ConfigError(
                    f"the NATS evidence bus at {self._display} refused to {doing} (stream "
                    f"{self.stream!r}, subject {self.subject!r}): {exc}. Fix: check the stream "
                    "and consumer configuration on the server"
                ) from None
            raise

    def publish(self, event: CloudEvent) -> None:
        self._call("publish", self._core.publish(event.id, event.to_json()))

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        check_consume_args(group, consumer, max_count, block_ms)
        if not _NAME.match(group):
            raise ConfigError(
                f"consumer group {group!r} cannot name a NATS durable consumer; "
                "use letters, digits, - and _"
            )
        wait_s = max(min(block_ms, MAX_BLOCK_MS) / 1000, _MIN_FETCH_S)
        fetched = self._call(
            "consume", self._core.fetch(group, consumer, max_count, wait_s), extra_s=wait_s
        )
        return [Delivery(CloudEvent.from_json(f.data), f.reply, f.num_delivered) for f in fetched]

    def ack(self, group: str, delivery: Delivery) -> None:
        self._call("ack", self._core.ack(delivery.delivery_id))

    def delete_stream(self) -> None:
        """Delete the stream and its consumers (tests and administration)."""
        self._call("delete the stream", self._core.delete_stream())

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._loop.run(self._core.close(), self._budget)
        except BaseException as exc:  # closing must not fail
            log.debug("nats_bus_close_failed", error=type(exc).__name__)
        finally:
            self._closed = True
            self._loop.stop()


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS])
    return urlunsplit(parts._replace(query=rest)), options


def _positive(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ConfigError(f"the NATS evidence bus option {name} must be positive, got {value!r}")
    return number


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

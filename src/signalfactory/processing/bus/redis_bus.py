"""The evidence bus on Redis Streams: consumer groups, ``XACK`` and ``XAUTOCLAIM``.

* stream key ``signal_factory.evidence`` (the PRD's topic name; ``stream=`` to change it);
* publish = one Lua script that sets the de-dup key ``<stream>:dedup:<event id>`` with
  ``SET NX PX`` and only then ``XADD``s the envelope (field ``envelope``, plus ``id``),
  atomically, so a re-published id within ``dedup_ttl_s`` is never added twice;
* a consumer group is created on first use at the start of the stream (``XGROUP CREATE ... 0
  MKSTREAM``); ``consume`` first takes over entries of the group pending longer than
  ``min_idle_ms`` (``XAUTOCLAIM``), then reads new ones (``XREADGROUP >``);
* the stream is capped at about ``maxlen`` entries (``XADD MAXLEN ~``).

URL query parameters (``redis://host:6379/0?stream=...&min_idle_ms=...``) set ``stream``,
``min_idle_ms``, ``dedup_ttl_s`` and ``maxlen``; the rest of the URL goes to redis-py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from signalfactory.core.errors import ConfigError
from signalfactory.core.observability import CloudEvent
from signalfactory.processing.bus import _redis
from signalfactory.processing.bus.base import (
    DEFAULT_SUBJECT,
    BusUnavailable,
    Delivery,
    check_consume_args,
)

__all__ = ["RedisBus"]

#: Longest wait of one ``consume`` call; the client's read timeout is this plus ``timeout_s``.
MAX_BLOCK_MS = 10_000

_PUBLISH = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*',
                    'id', ARGV[4], 'envelope', ARGV[1])
end
return false
"""
_OPTIONS = ("stream", "min_idle_ms", "dedup_ttl_s", "maxlen")


class RedisBus:
    """:class:`~signalfactory.processing.bus.base.EvidenceBus` on Redis Streams (Redis ≥ 6.2)."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_SUBJECT,
        min_idle_ms: int = 30_000,
        dedup_ttl_s: float = 86_400.0,
        maxlen: int = 1_000_000,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 2.0,
    ) -> None:
        url, options = _split_options(url)
        self.stream = str(options.get("stream", stream))
        self.min_idle_ms = _positive_int("min_idle_ms", options.get("min_idle_ms", min_idle_ms))
        ttl = options.get("dedup_ttl_s", dedup_ttl_s)
        self.dedup_ttl_ms = _positive_int("dedup_ttl_s", float(ttl) * 1000)
        self.maxlen = _positive_int("maxlen", options.get("maxlen", maxlen))
        self._display = _redis.redact(url)
        self._pub = _redis.connect(url, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        read_timeout = timeout_s + MAX_BLOCK_MS / 1000
        self._sub = _redis.connect(url, connect_timeout_s=connect_timeout_s, timeout_s=read_timeout)
        self._script = self._pub.register_script(_PUBLISH)
        self._groups: set[str] = set()
        self._closed = False

    @property
    def name(self) -> str:
        return "redis"

    def __repr__(self) -> str:
        return f"RedisBus({self._display!r}, stream={self.stream!r})"

    def _unavailable(self, doing: str, exc: Exception) -> BusUnavailable:
        return BusUnavailable(
            f"cannot {doing} on the Redis evidence bus at {self._display} (stream "
            f"{self.stream!r}): {type(exc).__name__}: {exc}. Fix: start Redis or set "
            "SIGNALFACTORY_BUS_URL to a reachable bus; producers spool meanwhile"
        )

    def _refused(self, doing: str, exc: Exception) -> ConfigError:
        return ConfigError(
            f"the Redis server at {self._display} refused to {doing} on stream "
            f"{self.stream!r}: {exc}. Fix: make sure the key {self.stream!r} is a stream used "
            "only by the evidence bus (Redis >= 6.2)"
        )

    def publish(self, event: CloudEvent) -> None:
        keys = [self.stream, f"{self.stream}:dedup:{event.id}"]
        args = [event.to_json(), self.dedup_ttl_ms, self.maxlen, event.id]
        try:
            self._script(keys=keys, args=args)
        except _redis.UNAVAILABLE as exc:
            raise self._unavailable("publish", exc) from None
        except _redis.RedisError as exc:
            raise self._refused("publish", exc) from None

    def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            self._sub.xgroup_create(self.stream, group, id="0", mkstream=True)
        except _redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(group)

    def consume(
        self, group: str, consumer: str, *, max_count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        check_consume_args(group, consumer, max_count, block_ms)
        try:
            try:
                return self._consume(group, consumer, max_count, block_ms)
            except _redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.discard(group)  # the stream was deleted and made again
                return self._consume(group, consumer, max_count, block_ms)
        except _redis.UNAVAILABLE as exc:
            raise self._unavailable("consume", exc) from None
        except _redis.RedisError as exc:
            raise self._refused("consume", exc) from None

    def _consume(self, group: str, consumer: str, max_count: int, block_ms: int) -> list[Delivery]:
        self._ensure_group(group)
        out = self._reclaim(group, consumer, max_count)
        room = max_count - len(out)
        if room > 0:
            block = min(block_ms, MAX_BLOCK_MS) if block_ms and not out else None
            reply = self._sub.xreadgroup(
                group, consumer, {self.stream: ">"}, count=room, block=block
            )
            for _stream, entries in reply or []:
                out.extend(self._delivery(i, f, 1) for i, f in entries if f)
        return out

    def _reclaim(self, group: str, consumer: str, max_count: int) -> list[Delivery]:
        reply: Any = self._sub.xautoclaim(
            self.stream, group, consumer, self.min_idle_ms, start_id="0-0", count=max_count
        )
        entries = [(i, f) for i, f in reply[1] if f]
        if not entries:
            return []
        pending = self._sub.xpending_range(
            self.stream,
            group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) * 2,
            consumername=consumer,
        )
        times = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        # XAUTOCLAIM counts the claim as a delivery.
        return [self._delivery(i, f, times.get(i, 2)) for i, f in entries]

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], attempt: int) -> Delivery:
        event = CloudEvent.from_json(fields[b"envelope"])
        return Delivery(event, entry_id.decode(), attempt)

    def ack(self, group: str, delivery: Delivery) -> None:
        try:
            self._sub.xack(self.stream, group, delivery.delivery_id)
        except _redis.UNAVAILABLE as exc:
            raise self._unavailable("ack", exc) from None
        except _redis.RedisError as exc:
            raise self._refused("ack", exc) from None

    def delete_stream(self) -> None:
        """Delete the stream, its groups and its de-dup keys (tests and administration)."""
        try:
            self._pub.delete(self.stream)
            for key in self._pub.scan_iter(match=f"{self.stream}:dedup:*", count=1000):
                self._pub.delete(key)
        except _redis.UNAVAILABLE as exc:
            raise self._unavailable("delete the stream", exc) from None
        self._groups.clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pub.close()
            self._sub.close()


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _OPTIONS])
    return urlunsplit(parts._replace(query=rest)), options


def _positive_int(name: str, value: object) -> int:
    try:
        number = int(float(str(value)))
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(
            f"the Redis evidence bus option {name} must be a positive number, got {value!r}"
        )
    return number

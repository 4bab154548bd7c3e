"""The one module that imports nats-py (``pip install 'signalfactory[nats]'``).

:class:`AsyncJetStream` is the asyncio half of the NATS JetStream bus: one connection, one
stream, durable pull consumers. :mod:`signalfactory.processing.bus.nats_bus` runs it on a
private event loop and gives it a blocking interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from signalfactory.core.errors import ConfigError

try:
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
except ImportError as exc:  # pragma: no cover - nats-py is installed in development
    raise ConfigError(
        f"the NATS evidence bus needs nats-py, which cannot be imported ({exc}); "
        "install it with: pip install 'signalfactory[nats]'"
    ) from None

__all__ = ["UNAVAILABLE", "AsyncJetStream", "Fetched", "NatsApiError"]

#: Errors meaning the server could not be reached or did not answer in time.
UNAVAILABLE: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, asyncio.TimeoutError)
NatsApiError = nats.js.errors.APIError
_SERVICE_UNAVAILABLE = 503


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    reply: str
    num_delivered: int


async def _quiet(_exc: Exception) -> None:
    """Connection errors surface as exceptions of our calls; do not also log them."""


class AsyncJetStream:
    """One JetStream stream on one connection; every method must run on one event loop."""

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subject: str,
        ack_wait_s: float,
        duplicate_window_s: float,
        connect_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject = subject
        self.ack_wait_s = ack_wait_s
        self.duplicate_window_s = duplicate_window_s
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._nc: Client | None = None
        self._js: Any = None
        self._subs: dict[tuple[str, str], Any] = {}

    async def _ready(self) -> Any:
        """The JetStream context, connecting (and creating the stream) when needed."""
        if self._nc is not None and not self._nc.is_closed:
            return self._js
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.url],
                    connect_timeout=self.connect_timeout_s,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=_quiet,
                ),
                timeout=self.connect_timeout_s * 2,
            )
        except BaseException:
            await nc.close()
            raise
        js = nc.jetstream(timeout=self.timeout_s)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=self.stream,
                subjects=[self.subject],
                duplicate_window=self.duplicate_window_s,
            )
            await js.add_stream(config)
        self._nc, self._js, self._subs = nc, js, {}
        return js

    async def publish(self, msg_id: str, payload: bytes) -> bool:
        """Publish one message; whether the stream took it as new (``False``: a duplicate)."""
        js = await self._ready()
        ack = await js.publish(
            self.subject,
            payload,
            timeout=self.timeout_s,
            stream=self.stream,
            headers={"Nats-Msg-Id": msg_id},
        )
        return not bool(ack.duplicate)

    async def fetch(
        self, group: str, consumer: str, max_count: int, wait_s: float
    ) -> list[Fetched]:
        js = await self._ready()
        sub = self._subs.get((group, consumer))
        if sub is None:
            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
            )
            sub = await js.pull_subscribe(
                self.subject, durable=group, stream=self.stream, config=config
            )
            self._subs[(group, consumer)] = sub
        try:
            msgs = await sub.fetch(batch=max_count, timeout=wait_s)
        except TimeoutError:  # nats-py raises its own and asyncio's, both TimeoutError
            return []  # nothing arrived in time
        return [Fetched(m.data, m.reply, int(m.metadata.num_delivered)) for m in msgs]

    async def ack(self, reply: str) -> None:
        await self._ready()
        assert self._nc is not None
        # Not flushed here: the client's flusher sends it at once, and a lost ack only means
        # a redelivery (at-least-once); close() flushes what is still buffered.
        await self._nc.publish(reply, b"+ACK")

    async def delete_stream(self) -> None:
        js = await self._ready()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(self.stream)
        self._subs = {}

    async def close(self) -> None:
        nc, self._nc, self._subs = self._nc, None, {}
        if nc is not None and not nc.is_closed:
            await nc.close()


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "try again later" rather than "this configuration is wrong"."""
    if isinstance(exc, NatsApiError):
        return getattr(exc, "code", None) == _SERVICE_UNAVAILABLE
    return isinstance(exc, UNAVAILABLE)

"""The one module that imports redis-py (``pip install 'signalfactory[redis]'``).

It hands out clients with short timeouts and no automatic retries (the spool retries), and
the exception types that mean "the server is unreachable or too slow".
"""

from __future__ import annotations

from typing import Any

from signalfactory.core.errors import ConfigError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - redis is installed in development
    raise ConfigError(
        f"the Redis evidence bus needs redis-py, which cannot be imported ({exc}); "
        "install it with: pip install 'signalfactory[redis]'"
    ) from None

__all__ = ["UNAVAILABLE", "RedisError", "ResponseError", "connect", "redact"]

#: Errors meaning the server could not be reached or did not answer in time.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


def connect(url: str, *, connect_timeout_s: float, timeout_s: float | None) -> Any:
    """A ``redis.Redis`` client for ``url`` (bytes responses, no retries); lazy: no I/O yet."""
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot use the Redis URL {redact(url)} for the evidence bus: {exc}. "
            "Expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://..."
        ) from None


def redact(url: str) -> str:
    """``url`` with any credentials replaced by ``***``."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"

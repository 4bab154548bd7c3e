"""Alert sinks: a structured log line, a JSON webhook, a Slack-compatible incoming webhook.

A sink has a ``name`` and ``send(alert)``, which returns how many attempts it took (``None``
means one) or raises when it could not deliver. The webhook sinks retry connection errors,
timeouts, 5xx and 429 with exponential backoff (tenacity) and then raise
:class:`AlertDeliveryError`; :func:`signalfactory.processing.alerting.dispatch` records either
outcome and never lets a sink's failure reach its caller. Webhook URLs are never shown whole:
their paths hold secrets (Slack's do).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx
import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from signalfactory.core.errors import ConfigError, Transient

if TYPE_CHECKING:
    from signalfactory.processing.alerting import Alert

__all__ = [
    "SINK_TYPES",
    "AlertDeliveryError",
    "AlertSink",
    "LogSink",
    "SlackSink",
    "WebhookSink",
    "make_sink",
]

log = structlog.get_logger("signalfactory.alerts")


@runtime_checkable
class AlertSink(Protocol):
    """Where alerts go. ``send`` returns how many attempts it took (``None`` means one) or
    raises when it could not deliver; :func:`dispatch` records either outcome."""

    name: str

    def send(self, alert: Alert) -> int | None: ...


class AlertDeliveryError(Transient):
    """A sink gave up on an alert after ``attempts`` tries."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts

    def __reduce__(self) -> tuple[type[AlertDeliveryError], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.attempts))


class LogSink:
    """One structured log line per alert (structlog, logger ``signalfactory.alerts``)."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    def send(self, alert: Alert) -> None:
        fields = alert.to_dict()
        fields["alert_event"] = fields.pop("event")
        fields["blast_radius_count"] = len(alert.blast_radius)
        log.warning("incident_alert", sink=self.name, **fields)


class _RetryableStatus(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class WebhookSink:
    """POSTs the alert as JSON to ``url``; retries connection errors, timeouts, 5xx and 429
    with exponential backoff, at most ``attempts`` tries in all, then raises
    :class:`AlertDeliveryError`. Other 4xx answers are not retried."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        timeout_s: float = 5.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"alert webhook URL of sink {name!r} must be an http(s) URL such as "
                f"https://hooks.example.com/alerts, got {_shown(url)!r}"
            )
        if attempts < 1:
            raise ConfigError(f"attempts of alert sink {name!r} must be >= 1, got {attempts}")
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.headers = {"User-Agent": "signalfactory-alerts", **(headers or {})}

    def __repr__(self) -> str:  # never show the URL's path: webhook paths hold secrets
        return f"{type(self).__name__}(name={self.name!r}, url={_shown(self.url)!r})"

    def payload(self, alert: Alert) -> dict[str, Any]:
        return {"type": "io.signalfactory.alert.v1", **alert.to_dict()}

    def send(self, alert: Alert) -> int:
        body = json.dumps(self.payload(alert), ensure_ascii=False).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        tries = 0
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
            reraise=True,
        )
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                for attempt in retrying:
                    with attempt:
                        tries += 1
                        response = client.post(self.url, content=body, headers=headers)
                        code = response.status_code
                        if code == 429 or code >= 500:
                            raise _RetryableStatus(code)
                        if code >= 400:
                            raise AlertDeliveryError(
                                f"{self.name} sink: {_shown(self.url)} refused the alert with "
                                f"HTTP {code} (not retried); check the webhook URL and token",
                                tries,
                            )
        except (httpx.TransportError, _RetryableStatus) as exc:
            what = str(exc) if isinstance(exc, _RetryableStatus) else type(exc).__name__
            raise AlertDeliveryError(
                f"{self.name} sink: {_shown(self.url)} did not take the alert after {tries} "
                f"attempt(s), last: {what}; check that the receiver is up",
                tries,
            ) from None
        return tries


class SlackSink(WebhookSink):
    """A Slack-compatible incoming webhook: ``text`` (the fallback) plus Block Kit ``blocks``."""

    def __init__(self, url: str, *, name: str = "slack", **options: Any) -> None:
        super().__init__(url, name=name, **options)

    def payload(self, alert: Alert) -> dict[str, Any]:
        fields = [
            ("Owner", alert.owner_team or "unknown"),
            ("Dataset", f"`{alert.dataset_urn}`"),
            ("Signature", f"`{alert.signature}`"),
            ("Severity", str(alert.severity)),
        ]
        if alert.partition:
            fields.append(("Partition", alert.partition))
        if alert.run_id:
            fields.append(("Run", f"`{alert.run_id}`"))
        if alert.quarantine_table:
            fields.append(("Quarantine", f"`{alert.quarantine_table}`"))
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.summary[:3000]}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]}
                    for label, value in fields[:10]
                ],
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Suggested remediation*\n{alert.remediation}"},
            },
        ]
        if alert.blast_radius:
            shown = ", ".join(f"`{u}`" for u in alert.blast_radius[:20])
            more = len(alert.blast_radius) - 20
            tail = f" and {more} more" if more > 0 else ""
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*Blast radius*\n{shown}{tail}"[:3000]},
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Root cause: `{alert.explain}`"}],
            }
        )
        owner = f" (owner {alert.owner_team})" if alert.owner_team else ""
        return {"text": f"{alert.title}{owner}", "blocks": blocks}


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" if parts.scheme else "<not a URL>"


#: Sink types by name (for configuration files and ``make_sink``).
SINK_TYPES: Mapping[str, Callable[..., AlertSink]] = {
    "log": LogSink,
    "webhook": WebhookSink,
    "slack": SlackSink,
}


def make_sink(kind: str, **options: Any) -> AlertSink:
    """A sink of type ``kind`` (``log``, ``webhook``, ``slack``) built with ``options``."""
    try:
        factory = SINK_TYPES[kind]
    except KeyError:
        allowed = ", ".join(SINK_TYPES)
        raise ConfigError(f"unknown alert sink type {kind!r}; expected one of {allowed}") from None
    return factory(**options)

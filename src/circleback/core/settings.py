"""Configuration: the operator's environment variables, the engine's tuning, the callers' limits.

Every setting has a default that works for the embedded case (a SQLite file,
notifications on standard output). ``Settings.from_env()`` reads the documented
``CIRCLEBACK_*`` variables; command-line flags override them field by field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ConfigurationError

__all__ = ["EngineTuning", "HttpTuning", "Limits", "Settings"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ConfigurationError(f"{attribute.name} must not be negative, not {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what a caller may ask for, so one caller cannot flood the engine."""

    min_interval_seconds: float = attrs.field(default=1.0, validator=_positive)
    max_interval_seconds: float = attrs.field(default=86_400.0, validator=_positive)
    max_delay_seconds: float = attrs.field(default=30 * 86_400.0, validator=_positive)
    max_attempts: int = attrs.field(default=10_000, validator=_positive)
    max_message_chars: int = attrs.field(default=4_000, validator=_positive)
    max_check_config_bytes: int = attrs.field(default=16_384, validator=_positive)
    max_active_jobs_per_user: int = attrs.field(default=100, validator=_positive)
    max_list_results: int = attrs.field(default=200, validator=_positive)
    #: Characters of a check result that ``{result}`` may bring into a message.
    max_result_chars: int = attrs.field(default=2_000, validator=_positive)


@attrs.frozen(kw_only=True)
class EngineTuning:
    """How the engine works through due jobs and outgoing messages."""

    #: Most jobs claimed by one statement.
    batch_size: int = attrs.field(default=500, validator=_positive)
    #: Most checks running at once in one worker.
    max_concurrent_checks: int = attrs.field(default=1_000, validator=_positive)
    #: A check taking longer is cut off and counts as "not yet".
    check_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)
    #: How long a claim is exclusive; must outlast the check timeout.
    lease_seconds: float = attrs.field(default=90.0, validator=_positive)
    #: How often a worker renews its leases and reports that it is alive;
    #: ``None``: a third of ``lease_seconds``, at most 5 s.
    heartbeat_seconds: float | None = None
    #: Longest sleep between looks at the store, for jobs added by other processes.
    max_sleep_seconds: float = attrs.field(default=1.0, validator=_positive)
    #: How far ahead a claim reaches: jobs falling due within this many seconds are
    #: leased early and started in memory the moment they fall due. One claim then
    #: serves many jobs and checks start on time; 0 claims only what is due. At most
    #: half of what ``lease_seconds`` leaves beyond ``check_timeout_seconds`` is used.
    claim_ahead_seconds: float = attrs.field(default=1.0, validator=_not_negative)
    #: How long the recorder waits after a result for more, to write them in one
    #: transaction; 0 writes whatever has arrived at once.
    record_linger_seconds: float = attrs.field(default=0.05, validator=_not_negative)
    #: How long the result of a check that leaves its job waiting for the next one
    #: ("not yet") may wait to be written with others — never past the moment the
    #: job's next check would be claimed. Nobody waits for such a result, so the
    #: worker gathers many into one transaction instead of writing a few at a time.
    #: Results that finish a job go out within ``record_linger_seconds``.
    not_yet_linger_seconds: float = attrs.field(default=1.0, validator=_not_negative)
    #: How much later than its due moment a check may start, so that checks falling
    #: due close together start on one wake-up of the worker instead of one each.
    timer_slack_seconds: float = attrs.field(default=0.002, validator=_not_negative)
    #: How much later than its due moment a check may start in a dense stream: when
    #: sixteen checks fall due within this long of the next one, the worker wakes when
    #: the sixteenth falls due and starts them together, instead of waking every few
    #: milliseconds. A sparse stream keeps ``timer_slack_seconds``.
    dense_timer_slack_seconds: float = attrs.field(default=0.02, validator=_not_negative)
    #: Most messages handed to completion modes at once.
    max_concurrent_deliveries: int = attrs.field(default=200, validator=_positive)
    #: A delivery taking longer is cut off and retried.
    delivery_timeout_seconds: float = attrs.field(default=60.0, validator=_positive)
    #: Attempts at delivering one message before it is marked dead.
    delivery_max_attempts: int = attrs.field(default=20, validator=_positive)
    #: First retry delay of a failed delivery; doubles each time up to the maximum.
    delivery_backoff_seconds: float = attrs.field(default=1.0, validator=_positive)
    delivery_backoff_max_seconds: float = attrs.field(default=300.0, validator=_positive)
    #: How long a stopping worker waits for checks in flight before releasing them.
    shutdown_grace_seconds: float = attrs.field(default=10.0, validator=_positive)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two heartbeats of a worker."""
        if self.heartbeat_seconds is not None:
            return self.heartbeat_seconds
        return min(5.0, self.lease_seconds / 3)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_seconds is not None and self.heartbeat_seconds * 2 >= self.lease_seconds:
            raise ConfigurationError(
                "heartbeat_seconds must be under half of lease_seconds, or a live worker's "
                "leases could expire between two heartbeats"
            )
        if self.lease_seconds <= self.check_timeout_seconds:
            raise ConfigurationError(
                "lease_seconds must be longer than check_timeout_seconds, or a slow check "
                "would lose its lease while it runs"
            )

    @property
    def claim_ahead(self) -> float:
        """Seconds a claim reaches ahead: ``claim_ahead_seconds``, within what the lease allows.

        A job claimed ahead waits, then is checked, on one lease: at most half
        of what the lease leaves beyond the check timeout goes to waiting.
        """
        return min(self.claim_ahead_seconds, (self.lease_seconds - self.check_timeout_seconds) / 2)


@attrs.frozen(kw_only=True)
class HttpTuning:
    """How the HTTP checkers (``poll_url``, ``poll_module``'s default caller) use the network."""

    #: Longest wait for a connection, name resolution and TLS included.
    connect_timeout_seconds: float = attrs.field(default=5.0, validator=_positive)
    #: Longest wait for the next bytes of an answer.
    read_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    #: Longest time for one whole check: every redirect and the body included.
    total_timeout_seconds: float = attrs.field(default=20.0, validator=_positive)
    #: Bytes of a response body read at most; the rest is cut off unread.
    max_response_bytes: int = attrs.field(default=1_048_576, validator=_positive)
    #: Connections open at once per client, and idle ones kept for reuse.
    max_connections: int = attrs.field(default=100, validator=_positive)
    max_keepalive_connections: int = attrs.field(default=20, validator=_positive)
    #: A PEM file of certificate authorities trusted for https, besides the usual ones
    #: (for internal services the operator allowed); None: the usual ones only.
    ca_file: str | None = None


def _parse_modules(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"CIRCLEBACK_MODULES is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError(
            "CIRCLEBACK_MODULES must be a JSON object mapping module names to base URLs"
        )
    return value


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _parse_number(name: str, raw: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(raw.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigurationError(f"{name} must be {noun}, not {raw!r}") from None


@attrs.frozen(kw_only=True)
class Settings:
    """Everything an engine, the CLI and the service need to know from the operator."""

    database_url: str = "sqlite:///circleback.db"
    redis_url: str | None = None
    core_url: str | None = None
    core_token: str | None = None
    modules: Mapping[str, str] = attrs.field(factory=dict)
    api_token: str | None = None
    allow_networks: tuple[str, ...] = ()
    limits: Limits = attrs.field(factory=Limits)
    tuning: EngineTuning = attrs.field(factory=EngineTuning)
    #: ``notify``: a PUBLISH that reached no subscriber is retried; False: fire and forget.
    notify_require_subscriber: bool = True
    #: ``resume_conversation``: tries of ``/continue`` per delivery before falling back to
    #: ``notify``, each under the timeout, with a doubling backoff between them.
    resume_attempts: int = attrs.field(default=3, validator=_positive)
    resume_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    resume_backoff_seconds: float = attrs.field(default=0.5, validator=_positive)
    #: Timeouts, response size cap and connection pool of the HTTP checkers.
    http: HttpTuning = attrs.field(factory=HttpTuning)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read the ``CIRCLEBACK_*`` variables; keyword arguments that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if url := env.get("CIRCLEBACK_DATABASE_URL"):
            values["database_url"] = url
        for field, name in (
            ("redis_url", "CIRCLEBACK_REDIS_URL"),
            ("core_url", "CIRCLEBACK_CORE_URL"),
            ("core_token", "CIRCLEBACK_CORE_TOKEN"),
            ("api_token", "CIRCLEBACK_API_TOKEN"),
        ):
            if raw := env.get(name):
                values[field] = raw
        if raw := env.get("CIRCLEBACK_MODULES"):
            values["modules"] = _parse_modules(raw)
        if raw := env.get("CIRCLEBACK_ALLOW_NETWORKS"):
            values["allow_networks"] = _split_list(raw)
        if raw := env.get("CIRCLEBACK_NOTIFY_REQUIRE_SUBSCRIBER"):
            values["notify_require_subscriber"] = _parse_bool(
                "CIRCLEBACK_NOTIFY_REQUIRE_SUBSCRIBER", raw
            )
        for field, name, kind in (
            ("resume_attempts", "CIRCLEBACK_RESUME_ATTEMPTS", int),
            ("resume_timeout_seconds", "CIRCLEBACK_RESUME_TIMEOUT", float),
            ("resume_backoff_seconds", "CIRCLEBACK_RESUME_BACKOFF", float),
        ):
            if raw := env.get(name):
                values[field] = _parse_number(name, raw, kind)
        http: dict[str, Any] = {}
        for field, name, kind in (
            ("total_timeout_seconds", "CIRCLEBACK_HTTP_TIMEOUT", float),
            ("max_response_bytes", "CIRCLEBACK_HTTP_MAX_RESPONSE_BYTES", int),
        ):
            if raw := env.get(name):
                http[field] = _parse_number(name, raw, kind)
        if raw := env.get("CIRCLEBACK_HTTP_CA_FILE"):
            http["ca_file"] = raw
        if http:
            values["http"] = HttpTuning(**http)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

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
    """What an operator may tune in the engine; the rest of its pacing is fixed."""

    #: Most checks running at once in one worker.
    max_concurrent_checks: int = attrs.field(default=1_000, validator=_positive)
    #: A check taking longer is cut off and counts as "not yet".
    check_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)
    #: How long a claim is exclusive; must outlast the check timeout.
    lease_seconds: float = attrs.field(default=90.0, validator=_positive)
    #: A delivery taking longer is cut off and retried.
    delivery_timeout_seconds: float = attrs.field(default=60.0, validator=_positive)
    #: How long a stopping worker waits for checks in flight before releasing them.
    shutdown_grace_seconds: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.lease_seconds <= self.check_timeout_seconds:
            raise ConfigurationError(
                "lease_seconds must be longer than check_timeout_seconds, or a slow check "
                "would lose its lease while it runs"
            )


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


#: Former fields of :class:`EngineTuning` that the engine now fixes itself.
_FIXED_BY_THE_ENGINE = (
    "batch_size", "heartbeat_seconds", "max_sleep_seconds", "claim_ahead_seconds",
    "record_linger_seconds", "not_yet_linger_seconds", "timer_slack_seconds",
    "dense_timer_slack_seconds", "max_concurrent_deliveries", "delivery_max_attempts",
    "delivery_backoff_seconds", "delivery_backoff_max_seconds",
)


def _refuse_fixed_knobs(env: Mapping[str, str]) -> None:
    """Name a variable for a setting the engine now fixes, rather than ignore it."""
    for knob in _FIXED_BY_THE_ENGINE:
        name = f"CIRCLEBACK_{knob.upper()}"
        for named in (name, name.removesuffix("_SECONDS")):
            if named in env:
                raise ConfigurationError(
                    f"{named}: {knob} is no longer a setting (the engine fixes it); "
                    f"unset {named}"
                )


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
        _refuse_fixed_knobs(env)
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

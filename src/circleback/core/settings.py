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

__all__ = ["EngineTuning", "Limits", "Settings"]


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
    """How the engine works through due jobs and outgoing messages."""

    #: Most jobs claimed by one statement.
    batch_size: int = attrs.field(default=500, validator=_positive)
    #: Most checks running at once in one worker.
    max_concurrent_checks: int = attrs.field(default=1_000, validator=_positive)
    #: A check taking longer is cut off and counts as "not yet".
    check_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)
    #: How long a claim is exclusive; must outlast the check timeout.
    lease_seconds: float = attrs.field(default=90.0, validator=_positive)
    #: Longest sleep between looks at the store, for jobs added by other processes.
    max_sleep_seconds: float = attrs.field(default=1.0, validator=_positive)
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

    def __attrs_post_init__(self) -> None:
        if self.lease_seconds <= self.check_timeout_seconds:
            raise ConfigurationError(
                "lease_seconds must be longer than check_timeout_seconds, or a slow check "
                "would lose its lease while it runs"
            )


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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

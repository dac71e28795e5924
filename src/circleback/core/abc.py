"""The interfaces plugins implement: checkers (job types) and notifiers (completion modes).

Built-in and third-party plugins subclass these and hand instances to the
engine through the registration hooks in :mod:`circleback.core.hookspecs`.
Each engine builds its own instances, so a plugin may keep per-engine state
(an HTTP client, a Redis connection) and open it in :meth:`start`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .clock import Clock
from .errors import DeliveryFailed, ModuleCallFailed
from .models import Caller, CheckOutcome, Job, Notification
from .settings import Limits, Settings

if TYPE_CHECKING:
    from .registry import PluginRegistry

__all__ = [
    "Checker",
    "DeliveryContext",
    "DeliveryFailed",
    "DeliveryReceipt",
    "ModuleCallFailed",
    "ModuleCaller",
    "Notifier",
    "Runtime",
    "ValidationContext",
]


@attrs.frozen(kw_only=True)
class ValidationContext:
    """What a checker may consult while validating a ``check_config``."""

    settings: Settings

    @property
    def limits(self) -> Limits:
        """The callers' limits in force."""
        return self.settings.limits


@attrs.frozen(kw_only=True)
class Runtime:
    """What a running plugin may use: settings, the clock, the other plugins, a logger."""

    settings: Settings
    clock: Clock
    plugins: PluginRegistry
    logger: logging.Logger


class Checker(abc.ABC):
    """A job type: declares its ``check_config`` and checks whether the condition holds.

    Subclasses set :attr:`job_type` and implement :meth:`config_schema` and
    :meth:`check`; the other methods have sensible defaults.
    """

    #: The ``job_type`` this checker serves; unique among the registered checkers.
    job_type: ClassVar[str]
    #: One sentence for people and LLMs on what this job type watches.
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of ``check_config``: its one set of rules.

        The tool manifest publishes it and every job is checked against it when it
        is added, so state every rule a schema can state here: types, limits
        (from ``context.limits``), enums, required and cross-field rules. An
        ``errorMessage`` string (or an object of them per keyword) words the
        error of the schema that holds it; see :mod:`circleback.core.schema`.
        """

    def refine_config(
        self, config: dict[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        """Normalise a ``check_config`` the schema accepted; apply rules it cannot state.

        Returns what is stored (defaults filled in, one spelling per value). Raises
        a :class:`~circleback.ValidationError` (a subclass with its own ``code``)
        whose ``field`` is the key inside ``check_config``. Called before anything
        is written, so it must not do I/O. By default the config is kept as given.
        """
        return config

    def first_check_delay(self, config: Mapping[str, Any]) -> float:
        """Seconds from creation to the first check; polls check at once (0)."""
        return 0.0

    def describe(self, config: Mapping[str, Any]) -> str:
        """A short human description of what is watched, used in default messages."""
        return self.job_type

    async def start(self, runtime: Runtime) -> None:  # noqa: B027 - optional hook
        """Open what the checker needs (clients, pools). Called once when the engine starts."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close what :meth:`start` opened. Called once, shielded, when the engine stops."""

    @abc.abstractmethod
    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        """Check the condition once for ``job``.

        Returns :class:`~circleback.CheckOutcome`. An exception counts as "not yet"
        with the exception as the job's last error; the engine enforces a timeout.
        """


@attrs.frozen(kw_only=True)
class DeliveryReceipt:
    """How a message went out: through which completion mode, with an optional note."""

    via: str
    note: str | None = None


@attrs.frozen(kw_only=True)
class DeliveryContext:
    """What a notifier may use while delivering one message."""

    runtime: Runtime
    #: The check result behind the message, for modes that pass it on structured.
    result: Any
    #: 1 on the first try of this message, 2 on the first retry, and so on.
    attempt: int

    def notifier(self, name: str) -> Notifier:
        """Another registered completion mode, for example ``notify`` as a fallback."""
        return self.runtime.plugins.notifier(name)


class Notifier(abc.ABC):
    """A completion mode: delivers a finished job's notification somewhere."""

    #: The ``on_complete`` value this notifier serves; unique among the registered notifiers.
    name: ClassVar[str]
    #: One sentence for people and LLMs on what this completion mode does.
    description: ClassVar[str] = ""

    async def start(self, runtime: Runtime) -> None:  # noqa: B027 - optional hook
        """Open what the notifier needs. Called once when the engine starts."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close what :meth:`start` opened. Called once, shielded, when the engine stops."""

    @abc.abstractmethod
    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        """Deliver ``notification`` once.

        Returns a :class:`DeliveryReceipt`; raises :class:`DeliveryFailed` when it
        did not go out (retried with backoff while ``retryable``, else marked dead).
        Delivery is at least once: consumers deduplicate on ``notification_id``.
        """


class ModuleCaller(abc.ABC):
    """How ``poll_module`` calls another module's tool.

    Handed over by the ``circleback_module_caller`` hook, once per engine. The
    built-in caller speaks the module protocol over HTTP (``POST
    {module_url}/execute``); a host platform may hand over its own to call tools
    its own way. Every module a job may name is listed in ``Settings.modules``:
    a name not listed there is refused when the job is added.
    """

    @abc.abstractmethod
    async def call(
        self, module: str, tool: str, arguments: Mapping[str, Any], caller: Caller
    ) -> Any:
        """Call ``tool`` of ``module`` with ``arguments``, acting as ``caller``.

        Returns the tool's result (JSON data). Raises :class:`ModuleCallFailed`
        when the module is unknown or unreachable or the tool reported an error.
        Runs under the engine's check timeout.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close what the caller opened. Called once, shielded, when the engine stops."""

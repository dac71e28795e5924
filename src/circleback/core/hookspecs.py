"""The hooks a circleback plugin may implement.

Plugins are found through the ``circleback`` entry-point group, or registered
directly on an engine. Hooks hand objects over through a ``register``
callback rather than doing work, so every engine gets its own instances::

    import circleback

    @circleback.hookimpl
    def circleback_register_checkers(register):
        register(MyChecker())
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .abc import Checker, ModuleCaller, Notifier
from .settings import Settings

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

#: The pluggy project name, shared by the markers, the manager and the entry-point group.
PROJECT_NAME = "circleback"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def circleback_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register job types.

    Called once per engine while it starts. Call ``register`` with one new
    :class:`~circleback.Checker` instance per job type. Returns nothing.
    """


@hookspec
def circleback_register_notifiers(register: Callable[[Notifier], None]) -> None:
    """Register completion modes.

    Called once per engine while it starts. Call ``register`` with one new
    :class:`~circleback.Notifier` instance per ``on_complete`` value. Returns nothing.
    """


@hookspec(firstresult=True)
def circleback_module_caller(settings: Settings) -> ModuleCaller | None:
    """Provide how ``poll_module`` calls other modules' tools.

    Called once per engine when the ``poll_module`` checker starts, with the
    engine's settings. Return a new :class:`~circleback.ModuleCaller`, or None to
    leave the choice to other plugins; stops at the first non-None result. The
    built-in implementation (HTTP, ``POST {module_url}/execute``) runs last.
    """

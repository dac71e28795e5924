"""The checkers and notifiers one engine uses, by job type and by completion mode."""

from __future__ import annotations

from collections.abc import Mapping

import pluggy

from .abc import Checker, Notifier
from .errors import PluginError

__all__ = ["PluginRegistry"]


class PluginRegistry:
    """The checkers and notifiers one engine uses, by job type and by completion mode."""

    def __init__(
        self,
        checkers: Mapping[str, Checker],
        notifiers: Mapping[str, Notifier],
        hook: pluggy.HookRelay | None = None,
    ) -> None:
        self._checkers = dict(checkers)
        self._notifiers = dict(notifiers)
        self._hook = hook

    @classmethod
    def from_manager(cls, manager: pluggy.PluginManager) -> PluginRegistry:
        """Call the registration hooks and collect what they hand over."""
        checkers: dict[str, Checker] = {}
        notifiers: dict[str, Notifier] = {}

        def register_checker(checker: Checker) -> None:
            if not isinstance(checker, Checker):
                raise PluginError(f"{checker!r} is not a circleback.Checker")
            name = getattr(checker, "job_type", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"{checker!r} has no job_type")
            if name in checkers:
                raise PluginError(f"job type {name!r} is registered twice")
            checkers[name] = checker

        def register_notifier(notifier: Notifier) -> None:
            if not isinstance(notifier, Notifier):
                raise PluginError(f"{notifier!r} is not a circleback.Notifier")
            name = getattr(notifier, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"{notifier!r} has no name")
            if name in notifiers:
                raise PluginError(f"completion mode {name!r} is registered twice")
            notifiers[name] = notifier

        manager.hook.circleback_register_checkers(register=register_checker)
        manager.hook.circleback_register_notifiers(register=register_notifier)
        return cls(checkers, notifiers, hook=manager.hook)

    @property
    def hook(self) -> pluggy.HookRelay:
        """The plugin manager's hooks, for plugins that ask other plugins (``poll_module``)."""
        if self._hook is None:
            raise PluginError("this registry was not built from a plugin manager")
        return self._hook

    @property
    def checkers(self) -> Mapping[str, Checker]:
        """Registered checkers by job type."""
        return self._checkers

    @property
    def notifiers(self) -> Mapping[str, Notifier]:
        """Registered notifiers by completion mode."""
        return self._notifiers

    def checker(self, job_type: str) -> Checker:
        """The checker for ``job_type``; :class:`PluginError` when none is registered."""
        try:
            return self._checkers[job_type]
        except KeyError:
            raise PluginError(f"no checker is registered for job type {job_type!r}") from None

    def notifier(self, name: str) -> Notifier:
        """The notifier for completion mode ``name``; :class:`PluginError` when none is."""
        try:
            return self._notifiers[name]
        except KeyError:
            raise PluginError(f"no notifier is registered for completion mode {name!r}") from None

"""Finding plugins: the built-ins, the ones given, and the installed ones."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from ..core import hookspecs

__all__ = ["BUILTIN_PLUGINS", "make_plugin_manager"]


#: The modules of the built-in plugins, registered like any third-party plugin.
BUILTIN_PLUGINS = (
    "circleback.checkers.delay",
    "circleback.checkers.poll_url",
    "circleback.checkers.poll_module",
    "circleback.notifiers.notify",
    "circleback.notifiers.resume_conversation",
)


def _builtin_plugins() -> list[object]:
    return [importlib.import_module(name) for name in BUILTIN_PLUGINS]


def make_plugin_manager(
    plugins: Iterable[object] = (), *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, then ``plugins``, then the installed plugins.

    ``check_pending()`` runs last, so a misspelled hook name fails loudly here.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for plugin in _builtin_plugins():
        manager.register(plugin, name=getattr(plugin, "__name__", None))
    for plugin in plugins:
        manager.register(plugin)
    if load_entry_points:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    manager.check_pending()
    return manager

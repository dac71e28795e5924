"""The public surface: ``circleback.__all__`` is exact, and everything in it is documented."""

from __future__ import annotations
import __future__

import inspect
import types
from typing import Any

import circleback


def _public_namespace() -> dict[str, Any]:
    """Names a user finds on the package: no underscores, no submodules, no future flags."""
    return {
        name: value
        for name, value in vars(circleback).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }


def _defined_by_circleback(value: Any) -> bool:
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        return False
    home = getattr(value, "__module__", "") or ""
    return home == "circleback" or home.startswith("circleback.")


def test_all_lists_exactly_the_public_names() -> None:
    exported = list(circleback.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    missing = [name for name in exported if not hasattr(circleback, name)]
    assert missing == [], f"listed in __all__ but not defined: {missing}"
    public = _public_namespace()
    listed = {name for name in exported if not name.startswith("_")}
    assert set(public) - listed == set(), "public names missing from __all__"
    assert listed - set(public) == set(), "names in __all__ that are not public values"
    own = {name for name, value in public.items() if _defined_by_circleback(value)}
    assert own <= listed
    assert own, "the package exports no class or function of its own"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from circleback import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(circleback.__all__)


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties that ``cls`` defines itself."""
    found = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, staticmethod | classmethod):
            found.append((name, member.__func__))
        elif isinstance(member, property) or inspect.isfunction(member):
            found.append((name, member))
    return found


def _documented(value: Any) -> bool:
    # inspect.getdoc inherits a method's docstring from the class it overrides.
    doc = inspect.getdoc(value)
    return bool(doc and doc.strip())


def test_every_public_name_has_a_docstring() -> None:
    undocumented = []
    for name in circleback.__all__:
        if name.startswith("_"):
            continue
        value = getattr(circleback, name)
        if not (inspect.isclass(value) or callable(value)):
            continue
        if not _documented(value):
            undocumented.append(name)
        if inspect.isclass(value):
            for member_name, member in _members(value):
                if not _documented(member):
                    undocumented.append(f"{name}.{member_name}")
    assert undocumented == []
    assert circleback.__doc__ and circleback.__doc__.strip()


def test_public_classes_report_the_package_as_their_home() -> None:
    """Documented as ``circleback.Engine``, not as the module that happens to define it."""
    for name in circleback.__all__:
        value = getattr(circleback, name)
        if _defined_by_circleback(value):
            assert value.__module__ == "circleback", name

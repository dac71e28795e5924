"""The public surface: ``circleback.__all__`` is exact, and everything in it is documented.

What embedders and plugin authors import is ``circleback`` (at most 25 names),
``circleback.errors`` (the whole error tree) and ``circleback.testing``;
every other module is private.
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import types
from typing import Any

import circleback
import circleback.errors
import circleback.testing
from circleback.core import clock

#: The public names, grouped as the README's "Embedding" section lists them.
PUBLIC = {
    # the engine and its facades
    "Engine", "Scheduler", "SchedulerTools",
    # settings
    "Settings", "Limits", "EngineTuning", "HttpTuning",
    # records
    "Caller", "Job", "JobStatus", "Notification", "CheckOutcome",
    # the plugin API
    "Checker", "Notifier", "ModuleCaller", "Runtime", "ValidationContext", "DeliveryContext",
    "DeliveryReceipt", "hookimpl",
    # errors (the whole tree is in circleback.errors)
    "CirclebackError", "ValidationError", "DeliveryFailed", "ModuleCallFailed",
    "__version__",
}


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


def test_all_is_the_small_public_surface() -> None:
    assert set(circleback.__all__) == PUBLIC
    assert len(circleback.__all__) == len(PUBLIC) <= 25
    assert isinstance(circleback.__version__, str)


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
    classes = 0
    for name in circleback.__all__:
        value = getattr(circleback, name)
        if inspect.isclass(value):
            classes += 1
            assert value.__module__ == "circleback", name
        if _defined_by_circleback(value):
            assert value.__module__ == "circleback", name
    assert classes == len(PUBLIC) - 2  # all but hookimpl and __version__


def test_manual_clock_is_public_in_testing() -> None:
    assert circleback.testing.ManualClock is clock.ManualClock
    assert "ManualClock" in circleback.testing.__all__


# -- the error tree ------------------------------------------------------------------------


def _import_every_module() -> None:
    for module in pkgutil.walk_packages(circleback.__path__, "circleback."):
        # ``__main__`` runs the command line; the migrations run only inside Alembic.
        if module.name.endswith(".__main__") or module.name.startswith(
            "circleback.store.migrations."
        ):
            continue
        importlib.import_module(module.name)


def _error_classes() -> list[type[circleback.CirclebackError]]:
    _import_every_module()
    found: list[type[circleback.CirclebackError]] = []
    pending = [circleback.CirclebackError]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


#: One line of the drawn tree: its indentation, the class name, and what follows ``code:``.
_TREE_LINE = re.compile(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z]\w+)\s+code: (?P<code>.*)$")


def _drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Each error drawn in ``circleback.errors``' docstring: its drawn parent and code text."""
    doc = circleback.errors.__doc__
    assert doc
    drawn: dict[str, tuple[str | None, str]] = {}
    path: list[str] = []
    for line in doc.splitlines():
        match = _TREE_LINE.match(line.removeprefix("    "))
        if not match:
            continue
        depth = len(match["lead"]) // 4
        del path[depth:]
        drawn[match["name"]] = (path[-1] if path else None, match["code"])
        path.append(match["name"])
    return drawn


def test_every_error_is_exported_and_drawn_in_the_tree_with_its_code() -> None:
    drawn = _drawn_tree()
    classes = _error_classes()
    names = {cls.__name__ for cls in classes}
    assert len(names) == len(classes), "two error classes share a name"
    assert set(circleback.errors.__all__) == names
    assert set(drawn) == names
    for cls in classes:
        assert getattr(circleback.errors, cls.__name__) is cls
        parent, code = drawn[cls.__name__]
        assert f'"{cls.code}"' in code, cls.__name__
        bases = [base for base in cls.__bases__ if issubclass(base, circleback.CirclebackError)]
        assert parent == (bases[0].__name__ if bases else None), cls.__name__


def test_the_errors_in_the_package_namespace_are_the_same_classes() -> None:
    for name in ("CirclebackError", "ValidationError", "DeliveryFailed", "ModuleCallFailed"):
        assert getattr(circleback, name) is getattr(circleback.errors, name)


# -- what importing costs ------------------------------------------------------------------

#: Optional extras and the libraries only some jobs, settings or front ends need.
_NOT_ON_IMPORT = (
    "trio", "psycopg", "apscheduler", "aiosqlite", "sqlalchemy.dialects.postgresql",
    "sqlalchemy.ext.asyncio", "sqlalchemy.orm", "httpx", "httpcore", "redis", "alembic",
    "starlette", "hypercorn", "click",
)


def test_importing_the_public_modules_loads_no_optional_extra() -> None:
    script = (
        "import json, sys\n"
        "import circleback, circleback.errors, circleback.testing\n"
        f"print(json.dumps([name for name in {_NOT_ON_IMPORT!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []

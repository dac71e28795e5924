"""Failures a person can act on: the exit codes, and what each expected error says.

Every expected failure of configuration, environment or input ends in at most
three lines on standard error (what is wrong, what to do) and an exit code by
class; a traceback is printed only under ``--log-level debug``. The codes are
documented in ``circleback --help`` and the README.
"""

from __future__ import annotations

import enum
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from ..core.errors import (
    CirclebackError,
    ConfigurationError,
    JobNotFound,
    StoreError,
    ValidationError,
    WorkflowNotFound,
)

__all__ = [
    "EXIT_CODES_HELP", "Exit", "Failure", "closed_stdout", "explain", "report", "sqlite_path",
]


class Exit(enum.IntEnum):
    """The exit codes of every command."""

    #: The command did what was asked.
    OK = 0
    #: The command ran and the work failed (for example a job that had already finished).
    FAILED = 1
    #: The command line was wrong (an unknown option, a missing argument).
    USAGE = 2
    #: A job, workflow or message named does not exist.
    NOT_FOUND = 3
    #: The input was refused (a job that breaks a rule, an ambiguous id prefix).
    REFUSED = 4
    #: The configuration or the environment is unusable (the store, a missing extra).
    ENVIRONMENT = 5


EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 usage, 3 not found, 4 refused input, "
    "5 configuration or store unusable."
)


class Failure(click.ClickException):
    """An expected failure: one line of what is wrong, up to two of what to do."""

    def __init__(self, message: str, hint: str | None = None, code: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.hint = hint
        # click declares exit_code per class; this failure carries its own code.
        setattr(self, "exit_code", int(code))  # noqa: B010

    def show(self, file: object = None) -> None:
        lines = [f"circleback: {' '.join(self.message.split())}"]
        if self.hint:
            lines.append(f"  {self.hint}")
        click.echo("\n".join(lines), err=True)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the leaves of exception groups in it, and what caused each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
            continue
        yield current
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)


_EXTRAS = {
    "psycopg": ("PostgreSQL needs the postgres extra", "pip install 'circleback[postgres]'"),
    "trio": ("the trio backend needs trio", "pip install trio, or use --backend asyncio"),
    "redis": ("Redis notifications need the redis package", "pip install redis"),
}


def sqlite_path(database_url: str | None) -> Path | None:
    """The file a SQLite URL names (``None`` for another database or an in-memory one)."""
    if not database_url or not database_url.startswith("sqlite"):
        return None
    _, _, path = database_url.partition(":///")
    path = path.split("?", 1)[0].removeprefix("file:")
    return Path(path) if path and path != ":memory:" else None


def _database_failure(text: str, database_url: str | None) -> Failure | None:
    """The failure a driver's error message stands for, with what to do about it."""
    lowered = text.lower()
    path = sqlite_path(database_url)
    env = Exit.ENVIRONMENT
    if "unable to open database file" in lowered and path is not None:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.exists():
            return Failure(f"cannot open the SQLite database {path}: directory {parent} "
                           "does not exist", f"create it: mkdir -p {parent}", env)
        return Failure(f"cannot open the SQLite database {path}",
                       f"check that {parent} is writable by this user", env)
    if "readonly database" in lowered or "read-only" in lowered:
        where = f" {path}" if path else ""
        return Failure(f"the database{where} is read-only",
                       f"make it writable (chmod u+w{where}) or set CIRCLEBACK_DATABASE_URL "
                       "to another database", env)
    if "does not exist" in lowered and "database" in lowered:
        name = text.split('database "', 1)[-1].split('"', 1)[0] if 'database "' in text else ""
        return Failure(f"the PostgreSQL database {name or 'named'} does not exist",
                       f"create it (createdb {name or 'NAME'}) or fix CIRCLEBACK_DATABASE_URL",
                       env)
    if "password authentication failed" in lowered or (
        "role" in lowered and "does not exist" in lowered
    ):
        return Failure("the database server refused the login",
                       "fix the user and password in CIRCLEBACK_DATABASE_URL", env)
    if "connection refused" in lowered or "could not connect" in lowered or (
        "connection failed" in lowered
    ) or "timeout expired" in lowered or "name or service not known" in lowered:
        return Failure("cannot reach the database server",
                       "start it, or fix the host and port in CIRCLEBACK_DATABASE_URL", env)
    return None


def explain(exc: BaseException, database_url: str | None = None) -> Failure | None:
    """The expected failure ``exc`` stands for, or ``None`` for an unexpected one."""
    for cause in _chain(exc):
        if isinstance(cause, Failure):
            return cause
        if isinstance(cause, ImportError) and cause.name:
            top = cause.name.split(".", 1)[0]
            if top in _EXTRAS:
                message, hint = _EXTRAS[top]
                return Failure(f"{message} ({top} cannot be imported)", hint, Exit.ENVIRONMENT)
        if isinstance(cause, (JobNotFound, WorkflowNotFound)):
            return Failure(cause.message, None, Exit.NOT_FOUND)
        if isinstance(cause, ValidationError):
            return Failure(cause.message, None, Exit.REFUSED)
        if isinstance(cause, (ConfigurationError, StoreError)):
            found = _database_failure(cause.message, database_url)
            return found or Failure(cause.message, None, Exit.ENVIRONMENT)
        if isinstance(cause, CirclebackError):
            return Failure(cause.message, None, Exit.FAILED)
        name = type(cause).__module__.split(".", 1)[0]
        if name == "sqlalchemy" and type(cause).__name__ == "ArgumentError":
            return Failure("CIRCLEBACK_DATABASE_URL is not a database URL",
                           "use sqlite:///path/to/file.db or postgresql://user@host/dbname",
                           Exit.ENVIRONMENT)
        if name in ("sqlalchemy", "psycopg", "sqlite3") or isinstance(cause, OSError):
            found = _database_failure(str(cause), database_url)
            if found is not None:
                return found
    return None


def report(exc: Exception, *, debug: bool, database_url: str | None) -> Failure:
    """What to print for ``exc``: its explanation, or a short note on an unexpected error."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    found = explain(exc, database_url)
    if found is not None:
        return found
    first = (str(exc).splitlines() or [""])[0][:300]
    hint = None if debug else "run again with --log-level debug for the traceback"
    return Failure(f"unexpected error: {type(exc).__name__}: {first}", hint, Exit.FAILED)


def closed_stdout(exc: BaseException) -> bool:
    """Whether ``exc`` comes of a closed standard output (``circleback list | head``).

    Then the command ends quietly, as any Unix tool does; standard output is
    pointed at ``/dev/null`` so that flushing it at exit does not complain again.
    """
    if not any(isinstance(cause, BrokenPipeError) for cause in _chain(exc)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return True

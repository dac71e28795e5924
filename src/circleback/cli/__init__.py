"""The ``circleback`` command: run the engine, add, list and cancel jobs, operate the database.

The commands are grouped by topic: :mod:`.worker` (``run``, ``serve``),
:mod:`.jobs` (``add``, ``list``, ``cancel``, ``jobs show``), :mod:`.operators`
(``outbox``, ``workers``, ``db upgrade``); :mod:`.app` holds the group itself.
"""

from __future__ import annotations

from . import jobs, operators, worker
from .app import cli

__all__ = ["cli", "main"]

_COMMANDS = (jobs, operators, worker)  # imported for the commands they add to the group


def main() -> None:
    """Entry point of the ``circleback`` console script."""
    cli(prog_name="circleback")

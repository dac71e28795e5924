"""``python -m circleback`` is the ``circleback`` command."""

from .cli import main

main()

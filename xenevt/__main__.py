"""``python -m xenevt``: the same as the ``xenevt`` command."""

from .cli import run

run()

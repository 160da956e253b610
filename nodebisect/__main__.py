"""``python -m nodebisect`` is the ``nodebisect`` command."""

from nodebisect.cli import run

run()

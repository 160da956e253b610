"""``python -m nodebisect`` is the ``nodebisect`` command."""

from nodebisect.cli.main import run

run()

"""The ``nodebisect`` command: the only place that prints or exits."""

"""``nodebisect sweep``: run ``locate`` over a fleet of models and summarise the fleet.

Each model runs ``python -m nodebisect locate`` in its own child process, so a
crash, a hang or a memory blow-up of one model only costs that model's row.
The pieces, one job per module:

- ``tasks``      the ``ModelTask`` / ``SweepOptions`` records every other module shares
- ``sources``    directories of ``.pt2`` files and spec lists -> tasks
- ``zoo``        ``transformers`` architectures built offline from small configs
- ``worker``     one task -> one child process -> one result row
- ``warm``       a warm worker: one child runs many tasks (its loop: ``serve``)
- ``executors``  a local pool (warm or cold workers) or Ray spreads the tasks
- ``results``    ``sweep.jsonl``: append, resume, compare two sweeps
- ``sequences``  culprit signatures; op-type n-grams ending at culprits, ranked by how they separate the fleet
- ``summary``    ``sweep.md`` and the terminal table (pure text)
- ``cli``        arguments, progress bar; the only module that prints
"""

"""The TUI's prepared model, kept across re-runs while what is exported and captured stays the same.

A re-run that changes only how the search judges (tolerance, strategy, EP...) searches
the kept ``PreparedModel`` again, with its onnxruntime child, weights file and the answers
onnxruntime already gave; one that changes what is exported or captured
(``run.PREPARE_FIELDS``) prepares anew and closes the old one.
"""

from __future__ import annotations

from typing import Any

from nodebisect.run import PREPARE_FIELDS


class KeptPreparation:
    """At most one ``PreparedModel``, with what it was prepared from."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.prepared: Any = None

    def for_run(self, model: str, options: dict[str, Any], progress: Any, cancel: Any) -> Any:
        """The kept preparation when ``model`` and ``options`` export and capture the same; else a new one."""
        from nodebisect import prepare

        key = (model, tuple(repr(options.get(k)) for k in PREPARE_FIELDS))
        if self.prepared is not None and self.key == key:
            return self.prepared
        self.close()
        self.prepared, self.key = prepare(model, progress=progress, cancel=cancel, **options), key
        return self.prepared

    @staticmethod
    def search_options(options: dict[str, Any]) -> dict[str, Any]:
        """The options a search of the kept preparation takes (the rest made the preparation)."""
        return {k: v for k, v in options.items() if k not in PREPARE_FIELDS}

    def close(self) -> None:
        """Stop the kept onnxruntime child and remove its weights file (idempotent)."""
        prepared, self.prepared, self.key = self.prepared, None, None
        if prepared is not None:
            prepared.close()

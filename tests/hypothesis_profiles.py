"""Hypothesis profiles: ``dev`` (quick, the default) and ``ci`` (each test's full example count).

``HYPOTHESIS_PROFILE=ci`` (what ``make test`` sets) runs every property test with the
count it states; ``dev`` (``make test-fast``, a bare ``pytest``) caps each at 25 examples.
"""

from __future__ import annotations

import os

from hypothesis import settings

DEV_EXAMPLES = 25

settings.register_profile("ci")  # Hypothesis's defaults; tests state their own counts
settings.register_profile("dev", max_examples=DEV_EXAMPLES)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """A test's example count: ``ci`` under the ci profile, at most 25 under dev."""
    return ci if PROFILE == "ci" else min(ci, DEV_EXAMPLES)

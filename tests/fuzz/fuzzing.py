"""Hypothesis profiles and helpers for the fuzz suite (imported by each fuzz test module).

The default run (`make test`) is short and deterministic: each property a few seconds, derandomized, no example
database. `HARMONIZER_FUZZ=long` (what `make fuzz` sets) multiplies every test's example count by
`HARMONIZER_FUZZ_SCALE` (default 50: 5-10 minutes on 2 shared cores, where the default run takes 20-40 s),
draws fresh random examples each run, and keeps the failures it finds in .hypothesis/ so the next run replays
them first."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

LONG = os.environ.get("HARMONIZER_FUZZ", "") == "long"
SCALE = int(os.environ.get("HARMONIZER_FUZZ_SCALE", "50")) if LONG else 1

settings.register_profile("default", derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("long" if LONG else "default")


def fuzz(examples: int, deadline_ms: int = 10_000) -> settings:
    """Settings for one property: `examples` in the default run (× SCALE in the long one), and a per-example
    deadline (generous: the machine is shared) that catches a hang or a blow-up; none in the long run."""
    return settings(max_examples=examples * SCALE,
                    deadline=None if LONG else timedelta(milliseconds=deadline_ms))

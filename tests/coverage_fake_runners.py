"""Runners that misbehave on purpose, for tests of the coverage worker machinery (imported by the workers)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def crash(case: Any, report: Any) -> None:
    """Die the way a segfaulting TVM kernel does: no exception, no result, the process is gone."""
    report("compile")
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(case: Any, report: Any) -> None:
    """Hang on test_relu only (one timeout is enough to test, and each costs the whole timeout)."""
    report("run")
    if case.name == "test_relu":
        time.sleep(3600)


def passes(case: Any, report: Any) -> None:
    report("run")

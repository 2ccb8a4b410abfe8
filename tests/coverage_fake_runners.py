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


def pack_without_celu(case: Any, report: Any) -> None:
    """The "TVM + our pack" runner with the pack's Celu converter removed: a planted pack regression."""
    from harmonizer_deploy.coverage import tracker
    from harmonizer_deploy.frontend import pack

    pack.CONVERTERS.pop(("", "Celu"), None)
    tracker.run_tvm_pack(case, report)

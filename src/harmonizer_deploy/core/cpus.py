"""How many cores to use: TVM's default thread pool on x86 is half of what a VM's vCPUs offer."""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once (all allowed CPUs if topology is unreadable)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    groups = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            groups.add(siblings.read_text().strip())
        except OSError:
            groups.add(str(cpu))
    return max(1, len(groups))


def use_all_cpu_cores() -> None:
    """Size TVM's CPU thread pool to the physical cores, unless TVM_NUM_THREADS says otherwise.

    Why: on x86 TVM assumes two hardware threads per core and starts hardware_concurrency / 2 workers, so on
    a VM whose vCPUs are whole cores (2 vCPUs: one worker) every parallel kernel runs on half the machine while
    onnxruntime uses all of it. The pool is created at the first parallel kernel, so this must run before.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))

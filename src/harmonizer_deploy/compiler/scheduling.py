"""What the CPU and GPU schedule passes share: the "already scheduled" mark and the report they fill in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEDULED_ATTR = "tirx.is_scheduled"  # the attribute dlight and MetaSchedule set and check (TVM 0.27: tirx)


@dataclass
class ScheduleReport:
    """What a pipeline's schedule pass did, handed in by whoever builds the pipeline (compile records it in the
    manifest). `failure` keeps a scheduling error raised inside the pass: the FFI re-wraps it on the way out."""

    functions: dict[str, str] = field(default_factory=dict)  # kernel name -> rule or hand schedule used
    rule_errors: dict[str, str] = field(default_factory=dict)  # "kernel/rule" -> why that rule failed there
    failure: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"functions": dict(self.functions), "rule_errors": dict(self.rule_errors)}


def is_scheduled(func: Any) -> bool:
    return SCHEDULED_ATTR in func.attrs and int(func.attrs[SCHEDULED_ATTR]) == 1


def commit(mod: Any, updated: dict) -> Any:
    """Put the scheduled functions into `mod`."""
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod

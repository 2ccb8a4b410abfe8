"""What the CPU and GPU schedule passes share: the "already scheduled" mark and how results go back in."""

from __future__ import annotations

from typing import Any

SCHEDULED_ATTR = "tirx.is_scheduled"  # the attribute dlight and MetaSchedule set and check (TVM 0.27: tirx)


def is_scheduled(func: Any) -> bool:
    return SCHEDULED_ATTR in func.attrs and int(func.attrs[SCHEDULED_ATTR]) == 1


def commit(mod: Any, updated: dict, last_report: dict, report: dict) -> Any:
    """Put the scheduled functions into `mod` and make `report` the pass's last report."""
    for gvar, func in updated.items():
        mod[gvar] = func
    last_report.clear()
    last_report.update(report)
    return mod

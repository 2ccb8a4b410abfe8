"""The one call of `tvm.compile`: compile, tune, debug and coverage all build through `build_executable`, so
the errors users hit are translated in one place."""

from __future__ import annotations

from typing import Any

from harmonizer_deploy.compiler.scheduling import ScheduleReport
from harmonizer_deploy.core.errors import HarmonizerError


def build_executable(mod: Any, tvm_target: Any, *, pipeline: Any = None, schedules: ScheduleReport | None = None,
                     target_name: str = "") -> Any:
    """`tvm.compile` with `pipeline` (TVM's default for the module when None).

    A scheduling error raised inside a pass reaches Python re-wrapped by the FFI; the pass also records it in
    `schedules`, and that original one-line error is what the user sees. The GPU error users hit most ("Did you
    forget to bind?") becomes one clear line too.
    """
    import tvm

    extra = {} if pipeline is None else {"relax_pipeline": pipeline}
    try:
        return tvm.compile(mod, target=tvm_target, **extra)
    except Exception as exc:
        if schedules is not None and schedules.failure is not None:
            raise schedules.failure from None
        if "Did you forget to bind" not in str(exc):
            raise
        raise HarmonizerError(
            f"a GPU kernel for target {target_name!r} has loops not bound to threads (\"Did you forget to bind?\")",
            "schedule every function (pipeline = \"gpu\" does, per function) or add a rule to [options] "
            "schedule_rules",
        ) from exc

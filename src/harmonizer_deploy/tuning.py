"""MetaSchedule tuning: records per (target, CPU), found and applied by `compile` when they fit.

MetaSchedule tunes static shapes only, so tuned artifacts are compiled for a fixed [batch, time]; the
records live in `targets/tuning/<target>-<mcpu>/` next to a `meta.json` saying what they were tuned for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .artifacts import sha256_file, write_json
from .errors import HarmonizerError
from .targets import TargetSpec, load_target, targets_dir

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
META = "meta.json"


def fuse_for_tuning(mod: Any, target: Any, spec: TargetSpec | None = None) -> Any:
    """The kernels exactly as the CPU pipeline fuses them for `spec`, so tuned workloads match at compile time."""
    import tvm

    from .pipelines import cpu_front_passes, uses_winograd

    with target:
        return tvm.transform.Sequential(cpu_front_passes(target, winograd=uses_winograd(spec)))(mod)


def records_dir(spec: TargetSpec) -> Path:
    """`targets/tuning/<target>-<mcpu>`: records are only valid for the CPU they were measured on."""
    cpu = spec.resolved_target().get("mcpu", "generic")
    return targets_dir() / "tuning" / f"{spec.name}-{cpu}"


@dataclass
class TuningRecords:
    path: Path
    meta: dict

    def database(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.database.JSONDatabase(str(self.path / WORKLOADS), str(self.path / RECORDS), allow_missing=False)

    def describe(self) -> dict:
        return {"used": True, "records": str(self.path), "sha256": sha256_file(self.path / RECORDS), **self.meta}


def find_records(spec: TargetSpec, shape: tuple[int, int] | None) -> tuple[TuningRecords | None, str]:
    """Records usable for this target/CPU and static shape, or None with the reason."""
    if shape is None:
        return None, "dynamic shapes cannot use tuned records (pass --batch and --time to compile)"
    path = records_dir(spec)
    if not (path / META).is_file() or not (path / RECORDS).is_file():
        return None, f"no tuned records for this CPU at {path} (run `harmonizer-deploy tune --target {spec.name}`)"
    meta = json.loads((path / META).read_text())
    if list(shape) not in meta.get("shapes", []):
        return None, (f"tuned records at {path} cover [batch, time] {meta.get('shapes')}, not {list(shape)} "
                      f"(run `harmonizer-deploy tune --batch {shape[0]} --time {shape[1]}`)")
    return TuningRecords(path, meta), "ok"


def tune(
    model: str | Path = "build/model.onnx",
    target: str = "cpu",
    batch: int = 1,
    time_steps: int = 32,
    trials: int = 256,
    time_budget_min: float | None = None,
    trials_per_round: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Tune the model's fused kernels for `target` on this CPU; resumable (the JSON database accumulates)."""
    import importlib.util

    import tvm
    from tvm.s_tir import meta_schedule as ms

    from .compiler import import_onnx

    missing = [m for m in ("cloudpickle", "xgboost") if importlib.util.find_spec(m) is None]
    if missing:
        raise HarmonizerError(f"tuning needs {', '.join(missing)} (MetaSchedule's builder and cost model)",
                              "pip install -e '.[tune]'")
    from .conversion import check_onnx_file

    spec = load_target(target)
    spec.check_buildable()
    if spec.device != "cpu":
        raise HarmonizerError(f"tune supports CPU targets only, not {target!r}", "tune --target cpu")
    if batch < 1 or time_steps < 1 or trials < 1:
        raise HarmonizerError("tune needs batch, time and trials >= 1", "pass positive values")
    model = Path(model)
    onnx_model = check_onnx_file(model)
    mod, _, _, _ = import_onnx(onnx_model, {"batch": batch, "time": time_steps})
    tvm_target = spec.tvm_target()
    fused = fuse_for_tuning(mod, tvm_target, spec)
    tasks = ms.relax_integration.extract_tasks(fused, tvm_target)
    out = records_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    done, start = 0, time.perf_counter()
    work_dir = Path("build") / "tuning-logs" / out.name
    work_dir.mkdir(parents=True, exist_ok=True)
    while done < trials:
        if time_budget_min is not None and time.perf_counter() - start > time_budget_min * 60:
            break
        step = min(trials_per_round, trials - done)
        database = ms.database.JSONDatabase(str(out / WORKLOADS), str(out / RECORDS), allow_missing=True)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, str(work_dir))
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=step,
                      num_trials_per_iter=min(16, step), database=database)
        done += step
        if progress:
            progress(done, trials)
    seconds = time.perf_counter() - start
    tasks_by_shape = {**previous.get("tasks_by_shape", {}), f"{batch}x{time_steps}": len(tasks)}
    meta = {
        "target": spec.name, "target_json": spec.resolved_target(), "tvm": tvm.__version__,
        "model_sha256": sha256_file(model),
        "tasks_by_shape": tasks_by_shape,
        "shapes": [[int(n) for n in key.split("x")] for key in sorted(tasks_by_shape)],
        "trials": previous.get("trials", 0) + done,
        "tuning_seconds": round(previous.get("tuning_seconds", 0.0) + seconds, 1),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(meta_path, meta)
    return {"records": str(out), "tasks": len(tasks), **meta}

"""MetaSchedule tuning: records per (target, CPU), found and applied by `compile` when they fit.

MetaSchedule tunes static shapes only, so tuned artifacts are compiled for a fixed [batch, time]; a records folder
holds MetaSchedule's JSON database next to a `meta.json` saying what they were tuned for. `tune` writes to the
user cache (`<cache>/tuning/<target>-<mcpu>/`, or `-o DIR`), never into the installed package; records shipped
next to a target's TOML (`targets/tuning/<target>-<mcpu>/`) are read-only defaults that compile falls back to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harmonizer_deploy.compiler.executable import build_executable
from harmonizer_deploy.compiler.targets import TargetSpec, load_target
from harmonizer_deploy.core.artifacts import sha256_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.core.paths import cache_root
from harmonizer_deploy.core.remote import RemoteSpec

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
META = "meta.json"


def fuse_for_tuning(mod: Any, target: Any, spec: TargetSpec | None = None) -> Any:
    """The kernels exactly as the CPU pipeline fuses them for `spec`, so tuned workloads match at compile time."""
    import tvm

    from harmonizer_deploy.compiler.pipelines import cpu_front_passes, uses_winograd

    with target:
        return tvm.transform.Sequential(cpu_front_passes(target, winograd=uses_winograd(spec)))(mod)


def kernel_seconds(mod: Any, target: Any) -> float:
    """Median time of one call of a one-function TIR module on this CPU (seeded random inputs)."""
    import numpy as np
    import tvm

    from harmonizer_deploy.core.cpus import use_all_cpu_cores

    use_all_cpu_cores()
    device = tvm.cpu()
    func = mod["main"]
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.random([int(d) for d in p.shape]).astype(str(p.dtype)), device)
            for p in func.params]
    library = build_executable(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    return float(library.mod.time_evaluator("main", device, number=20, repeat=5)(*args).median)


def keep_winning_records(tasks: list[Any], path: Path, target: Any,
                         timer: Callable[[Any, Any], float] = kernel_seconds) -> dict[str, dict]:
    """Keep a task's best tuned record only where it beats the hand schedule compile would use without it.

    `compile` applies records before the hand schedules (`cpu_schedule`), so a record that lost to them would
    make a tuned artifact slower than an untuned one. Each kernel is timed both ways on this CPU; losing records
    are removed from the database in `path`. Returns {task: {"kept", "tuned_ms", "hand_ms", "hand_schedule"}}.
    """
    import os
    import shutil
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    from harmonizer_deploy.compiler.cpu.schedule import schedule_function

    database = ms.database.JSONDatabase(str(path / WORKLOADS), str(path / RECORDS), allow_missing=True)
    winners, decisions = [], {}
    for task in tasks:
        mod = task.dispatched[0]
        record = database.query_tuning_record(mod, target, "main")
        if record is None:
            continue
        hand, how = schedule_function(mod["main"])
        decision: dict[str, Any] = {"hand_schedule": how}
        if how.startswith("default"):  # nothing hand-written applies: the record can only help
            decision["kept"] = True
        else:
            tuned = database.query_schedule(mod, target, "main").mod
            decision["tuned_ms"] = round(timer(tuned, target) * 1e3, 4)
            decision["hand_ms"] = round(timer(type(mod)({"main": hand}), target) * 1e3, 4)
            decision["kept"] = decision["tuned_ms"] < decision["hand_ms"]
        decisions[task.task_name] = decision
        if decision["kept"]:
            winners.append((mod, record))
    winners += _best_records_of_other_workloads(database, [task.dispatched[0] for task in tasks])
    # a folder of our own (never a fixed name someone else's folder could have), removed on every path
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        pruned = ms.database.JSONDatabase(str(staging / WORKLOADS), str(staging / RECORDS), allow_missing=True)
        for mod, record in winners:
            pruned.commit_tuning_record(ms.database.TuningRecord(
                record.trace, pruned.commit_workload(mod), record.run_secs, record.target, record.args_info))
        for name in (WORKLOADS, RECORDS):
            (staging / name).touch()
            os.replace(staging / name, path / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return decisions


def _best_records_of_other_workloads(database: Any, current: list[Any]) -> list[tuple[Any, Any]]:
    """(module, best record) of every workload in `database` that is not one of `current`'s: the kernels of
    other shapes tuned earlier, already pruned then, kept as they are."""
    current_workloads = [database.commit_workload(mod) for mod in current]
    seen: list[Any] = []
    kept = []
    for record in database.get_all_tuning_records():
        workload = record.workload
        if any(workload.same_as(w) for w in current_workloads + seen):
            continue
        seen.append(workload)
        best = database.get_top_k(workload, 1)
        if best:
            kept.append((workload.mod, best[0]))
    return kept


def _records_name(spec: TargetSpec) -> str:
    """`<target>-<mcpu>`: records are only valid for the CPU they were measured on."""
    return f"{spec.name}-{spec.resolved_target().get('mcpu', 'generic')}"


def records_dir(spec: TargetSpec) -> Path:
    """Where `tune` writes by default: `<cache>/tuning/<target>-<mcpu>` (the user cache, see core.paths)."""
    return cache_root() / "tuning" / _records_name(spec)


def shipped_records_dir(spec: TargetSpec) -> Path:
    """Read-only records shipped next to the target's TOML: `<its folder>/tuning/<target>-<mcpu>`."""
    return Path(spec.path).parent / "tuning" / _records_name(spec)


@dataclass
class TuningRecords:
    path: Path
    meta: dict

    def database(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.database.JSONDatabase(str(self.path / WORKLOADS), str(self.path / RECORDS), allow_missing=False)

    def describe(self) -> dict:
        return {"used": True, "records": str(self.path), "sha256": sha256_file(self.path / RECORDS), **self.meta}


def find_records(spec: TargetSpec, shape: tuple[int, int] | None,
                 records: str | Path | None = None) -> tuple[TuningRecords | None, str]:
    """Records usable for this target/CPU and static shape, or None with the reason.

    `records` (compile --tuning-records DIR) is the only folder looked at, and one that does not fit is an error;
    otherwise the user's (where `tune` writes) come first, then the ones shipped with the target."""
    if records is not None:
        if shape is None:
            raise HarmonizerError("tuned records need static shapes", "pass --batch and --time with --tuning-records")
        found, why = _usable_records(Path(records), spec, shape)
        if found is None:
            raise HarmonizerError(f"--tuning-records {records}: {why}", "tune for this shape, or drop the option")
        return found, why
    if shape is None:
        return None, "dynamic shapes cannot use tuned records (pass --batch and --time to compile)"
    reasons = []
    for path in dict.fromkeys((records_dir(spec), shipped_records_dir(spec))):
        found, why = _usable_records(path, spec, shape)
        if found is not None:
            return found, why
        reasons.append(why)
    return None, "; ".join(reasons)


def _usable_records(path: Path, spec: TargetSpec, shape: tuple[int, int]) -> tuple[TuningRecords | None, str]:
    if not (path / META).is_file() or not (path / RECORDS).is_file():
        return None, f"no tuned records for this CPU at {path} (run `harmonizer-deploy tune --target {spec.name}`)"
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as exc:
        return None, f"{path / META} is unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, f"{path / META} is not a tuning meta.json"
    if list(shape) not in meta.get("shapes", []):
        return None, (f"tuned records at {path} cover [batch, time] {meta.get('shapes')}, not {list(shape)} "
                      f"(run `harmonizer-deploy tune --batch {shape[0]} --time {shape[1]}`)")
    decisions = {task: d for task, d in meta.get("records_vs_hand_schedules", {}).items()
                 if task.startswith(f"{shape[0]}x{shape[1]}/")}
    if decisions and not any(d["kept"] for d in decisions.values()):
        return None, (f"tuning at {path} kept no record for [batch, time] {list(shape)}: the hand schedules beat "
                      f"every tuned kernel (times in {META})")
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
    output: str | Path | None = None,
    remote: RemoteSpec | None = None,
) -> dict:
    """Tune the model's fused kernels for `target` on this CPU into `output` (default: the user cache, see
    `records_dir`); resumable (the JSON database accumulates); MetaSchedule's logs go to `output/logs/`.

    `remote`: build candidates here, measure them on every device server under the tracker key (MetaSchedule's
    RPCRunner); which server measured what goes to build/tuning-logs/<records>/rpc-measurements.jsonl."""

    import tvm
    from tvm.s_tir import meta_schedule as ms

    from harmonizer_deploy.compiler.relax_import import import_onnx

    require("tune (MetaSchedule's builder and cost model)", "cloudpickle", "xgboost")
    from harmonizer_deploy.conversion.convert import check_onnx_file

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
    out = Path(output) if output is not None else records_dir(spec)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarmonizerError(f"cannot create the records folder {out} ({exc.strerror})",
                              "pass a writable folder with -o") from exc
    meta_path = out / META
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    done, start = 0, time.perf_counter()
    work_dir = out  # MetaSchedule writes its logs under work_dir/logs
    work_dir.mkdir(parents=True, exist_ok=True)
    runner_args: dict[str, Any] = {}
    if remote is not None:
        from harmonizer_deploy.compiler.remote_tuning import MEASUREMENTS, local_builder, rpc_runner

        log_path = work_dir / MEASUREMENTS
        runner_args["runner"], servers = rpc_runner(remote, log_path)
        runner_args["builder"] = local_builder()
    started_at = time.time()
    while done < trials:
        if time_budget_min is not None and time.perf_counter() - start > time_budget_min * 60:
            break
        step = min(trials_per_round, trials - done)
        database = ms.database.JSONDatabase(str(out / WORKLOADS), str(out / RECORDS), allow_missing=True)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, str(work_dir))
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=step,
                      num_trials_per_iter=min(16, step), database=database, **runner_args)
        done += step
        if progress:
            progress(done, trials)
    seconds = time.perf_counter() - start
    shape_key = f"{batch}x{time_steps}"
    decisions = {**previous.get("records_vs_hand_schedules", {}),
                 **{f"{shape_key}/{task}": d for task, d in keep_winning_records(tasks, out, tvm_target,
                                                                                 _timer(remote)).items()}}
    tasks_by_shape = {**previous.get("tasks_by_shape", {}), shape_key: len(tasks)}
    meta = {
        "target": spec.name, "target_json": spec.resolved_target(), "tvm": tvm.__version__,
        "model_sha256": sha256_file(model),
        "tasks_by_shape": tasks_by_shape,
        "shapes": [[int(n) for n in key.split("x")] for key in sorted(tasks_by_shape)],
        "trials": previous.get("trials", 0) + done,
        "tuning_seconds": round(previous.get("tuning_seconds", 0.0) + seconds, 1),
        "records_vs_hand_schedules": decisions,
        "records_kept": sum(1 for d in decisions.values() if d["kept"]),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(meta_path, meta)
    result = {"records": str(out), "tasks": len(tasks), **meta}
    if remote is not None:
        from harmonizer_deploy.compiler.remote_tuning import measurements_by_server

        result["rpc"] = {"tracker": remote.tracker, "key": remote.key, "servers": servers, "log": str(log_path),
                         "measurements_by_server": measurements_by_server(log_path, started_at)}
    return result


def _timer(remote: RemoteSpec | None) -> Callable[[Any, Any], float]:
    """Where records are judged against the hand schedules: this CPU, or a device under the --rpc key."""
    if remote is None:
        return kernel_seconds
    from harmonizer_deploy.compiler.remote_tuning import remote_kernel_timer

    return remote_kernel_timer(remote)

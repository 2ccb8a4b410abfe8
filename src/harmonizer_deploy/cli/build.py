"""Commands that build artifacts and say what can be built: compile, tune, bundle, targets, doctor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.common import JsonOpt, cli_command, emit_json, out, parse_dims
from harmonizer_deploy.cli.progress import progress_bar, spinner
from harmonizer_deploy.cli.remote import RpcKeyOpt, RpcOpt, RpcTimeoutOpt

build_app = typer.Typer()


@build_app.command("compile")
@cli_command
def compile_(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")] = Path("build/model.onnx"),
    target: Annotated[str, typer.Option("--target", "-t", help="A target in targets/ (see `targets`).")] = "cpu",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory (default build/T).")]
    = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the cached artifact matches.")] = False,
    batch: Annotated[int | None, typer.Option(help="Fix the batch size (static shapes; needed for tuned "
                                              "kernels). Use with --time.")] = None,
    time_steps: Annotated[int | None, typer.Option("--time", help="Fix the number of time steps.")] = None,
    arch: Annotated[str | None, typer.Option(help="GPU architecture, e.g. sm_80, sm_89, sm_90 (cuda; default: "
                                             "this machine's GPU, else the target's default_arch).")] = None,
    fix_dim: Annotated[list[str] | None, typer.Option("--fix-dim", help="NAME=SIZE: compile for a fixed input "
                                                      "dim (batch, time) so shape computations fold "
                                                      "(repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile an ONNX model with TVM Relax for a target: library + params + manifest (+ deploy bundle)."""
    from harmonizer_deploy.compiler.build import compile as run

    dims = parse_dims(fix_dim or [])
    with spinner(f"compiling for {target} with TVM…", not as_json):
        result = run(model, target, output, force, batch, time_steps, arch, dims or None)
    if as_json:
        emit_json(result.to_dict())
        return
    size = sum(a["bytes"] for a in result.manifest["artifacts"].values())
    how = "reused cached artifact" if result.cached else f"compiled in {result.seconds:.1f} s"
    out.print(f"{result.out_dir}: {how} (target {result.manifest['target']}, "
              f"{json.dumps(result.manifest['target_json'])}, {size / 1e6:.1f} MB)")
    bundle = result.manifest.get("bundle")
    if bundle:
        out.print(f"deploy bundle {result.out_dir / bundle['dir']}: {bundle['bytes'] / 1e6:.1f} MB "
                  f"(TVM runtime {bundle['runtime_bytes'] / 1e6:.1f} MB, no compiler); on the target machine: "
                  f"pip install -r requirements.txt && python run.py verify", highlight=False)
    schedules = result.manifest.get("schedules") or {}
    if schedules.get("functions"):
        counts: dict[str, int] = {}
        for rule in schedules["functions"].values():
            counts[rule] = counts.get(rule, 0) + 1
        out.print("kernel schedules: " + ", ".join(f"{r}×{n}" for r, n in sorted(counts.items()))
                  + (f" ({len(schedules['rule_errors'])} rule fallbacks, see manifest.json)"
                     if schedules.get("rule_errors") else ""), highlight=False)
    tuning = result.manifest.get("tuning") or {}
    if tuning.get("used"):
        out.print(f"tuned kernels: {tuning['records']} ({tuning['trials']} trials, {tuning['tuning_seconds']:.0f} s)")
    elif result.manifest["device"] == "cpu":  # kernels carry the hand schedules printed above
        out.print(f"no tuned records, hand schedules only: {escape(tuning.get('reason', ''))}", highlight=False)
    prep = result.manifest.get("tvm_import", {})
    if prep.get("inlined") or prep.get("folded"):
        folded = ", ".join(f"{k}×{v}" for k, v in sorted(prep["folded"].items())) or "nothing"
        out.print(f"before TVM import: inlined {', '.join(prep['inlined']) or 'nothing'}; folded {folded}")


@build_app.command()
@cli_command
def tune(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")] = Path("build/model.onnx"),
    target: Annotated[str, typer.Option("--target", "-t", help="A CPU target in targets/.")] = "cpu",
    batch: Annotated[int, typer.Option(help="Batch size to tune for.")] = 1,
    time_steps: Annotated[int, typer.Option("--time", help="Time steps to tune for.")] = 32,
    trials: Annotated[int, typer.Option(help="MetaSchedule trials in total (this run).")] = 256,
    time_budget: Annotated[float | None, typer.Option("--time-budget", help="Stop after this many minutes.")]
    = None,
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """MetaSchedule-tune the model for this CPU (or, with --rpc, on every device server under the key);
    records go to targets/tuning/ and compile uses them."""
    from harmonizer_deploy.compiler.tuning import tune as run
    from harmonizer_deploy.core.remote import RemoteSpec

    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    with progress_bar(f"tuning for {target}", not as_json) as update:
        result = run(model, target, batch, time_steps, trials, time_budget, progress=update, remote=remote)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['records']}: {result['tasks']} tasks, {result['trials']} trials in total, "
              f"{result['tuning_seconds']:.0f} s; compile with --batch {batch} --time {time_steps} to use them")
    if result.get("rpc"):
        measured = ", ".join(f"{escape(s)}: {n}" for s, n in result["rpc"]["measurements_by_server"].items())
        out.print(f"measured on {result['rpc']['key']} devices via {result['rpc']['tracker']}: {measured or 'none'} "
                  f"(log {result['rpc']['log']})", highlight=False)
    shape = f"{batch}x{time_steps}/"
    for task, decision in sorted(result["records_vs_hand_schedules"].items()):
        if task.startswith(shape):
            times = (f" (tuned {decision['tuned_ms']} ms vs {decision['hand_schedule']} {decision['hand_ms']} ms)"
                     if "hand_ms" in decision else f" ({decision['hand_schedule']})")
            out.print(f"  {task[len(shape):]}: record {'kept' if decision['kept'] else 'dropped'}{times}")


@build_app.command("bundle")
@cli_command
def bundle_(
    artifact_dir: Annotated[Path | None, typer.Argument(help="Artifact directory (default build/T).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target the artifact was built for.")] = "cpu",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Bundle folder (default <artifact>/bundle)."
                                                )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy bundle of a compiled artifact: library, params, TVM runtime only and run.py (verify/bench there)."""
    from harmonizer_deploy.compiler.bundle import make_bundle

    artifact_dir = artifact_dir or Path("build") / target
    result = make_bundle(artifact_dir, output)
    where = output or artifact_dir / result["dir"]
    if as_json:
        emit_json({"bundle": str(where), **{k: v for k, v in result.items() if k != "dir"}})
        return
    out.print(f"wrote {where}: {result['bytes'] / 1e6:.1f} MB (TVM runtime {result['runtime_bytes'] / 1e6:.1f} MB); "
              f"run there: python {where}/run.py verify", highlight=False)


@build_app.command()
@cli_command
def doctor(as_json: JsonOpt = False) -> None:
    """What is installed and what each target needs, with the fix for each missing piece."""
    from harmonizer_deploy.run.doctor import doctor as run

    checks = run()
    if as_json:
        emit_json([c.to_dict() for c in checks])
        return
    table = Table(title="harmonizer-deploy doctor")
    for col in ("check", "", "detail", "fix"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]missing[/]", c.detail, c.fix)
    out.print(table)


@build_app.command()
@cli_command
def targets(as_json: JsonOpt = False) -> None:
    """List the targets in targets/ and whether this machine can build them."""
    from harmonizer_deploy.compiler.targets import available_targets, load_target

    rows = []
    for name in available_targets():
        spec = load_target(name)
        rows.append({"name": name, "backend": spec.backend, "description": spec.description,
                     "missing": spec.missing_capabilities()})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        status = "ready" if not r["missing"] else "missing " + ", ".join(r["missing"])
        out.print(escape(f"{r['name']:<10} {r['description']} [{status}]"), highlight=False)

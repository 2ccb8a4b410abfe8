"""Commands that build artifacts and say what can be built: compile, tune, bundle, targets, doctor."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.common import HELP, JsonOpt, cli_command, emit_json, err, out, parse_dims
from harmonizer_deploy.cli.progress import progress_bar, spinner
from harmonizer_deploy.cli.remote import RpcKeyOpt, RpcOpt, RpcTimeoutOpt
from harmonizer_deploy.core.errors import EXIT_USER_ERROR

build_app = typer.Typer(context_settings=HELP)


class WebWeights(StrEnum):
    float32 = "float32"
    float16 = "float16"
    uint8 = "uint8"


@build_app.command("compile")
@cli_command
def compile_(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")] = Path("build/model.onnx"),
    target: Annotated[str, typer.Option("--target", "-t", help="A target name (see `targets`) or the path of a "
                                        "target TOML.")] = "cpu",
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
    tuning_records: Annotated[Path | None, typer.Option("--tuning-records", help="Tuned records folder to use "
                                                        "(written by `tune -o`; default: the user cache's, then "
                                                        "the ones shipped with the target).")] = None,
    web_weights: Annotated[WebWeights | None, typer.Option(
        "--web-weights", help="How a web target (wasm, webgpu) ships its weights: float32, float16, or uint8 with "
        "a per-tensor scale and min (4x smaller; verify reports the error, held to [tolerance.<encoding>]).")]
    = None,
    allow_known_mismatch: Annotated[bool, typer.Option("--allow-known-mismatch", help="Build even when a node is "
                                                       "in a class the coverage tracker found TVM computes "
                                                       "wrongly (recorded in the manifest).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compile an ONNX model with TVM Relax for a target: library + params + manifest (+ deploy bundle)."""
    from harmonizer_deploy.compiler.build import compile as run

    dims = parse_dims(fix_dim or [])
    with spinner(f"compiling for {target} with TVM…", not as_json):
        result = run(model, target, output, force, batch, time_steps, arch, dims or None, tuning_records,
                     web_weights=web_weights.value if web_weights else None,
                     allow_known_mismatch=allow_known_mismatch)
    _coverage_warnings(result.manifest.get("coverage_check") or {})
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


def _coverage_warnings(check: dict) -> None:
    """On stderr: nodes built despite a known mismatch, and op classes no coverage case has tested."""
    for f in check.get("known_mismatch", []):
        err.print(f"warning: built with --allow-known-mismatch: node {f['node']!r} ({f['op']}) is in known-mismatch "
                  f"class {f['klass']} (coverage case {f['case']})", highlight=False, markup=False)
    for klass in check.get("untested", []):
        err.print(f"warning: op class {klass} is not covered by the coverage tracker's cases; check the artifact "
                  "with `verify`", highlight=False, markup=False)


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
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Records folder (default: the user cache, "
                                                "<cache>/tuning/<target>-<cpu>, where compile looks first).")]
    = None,
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """MetaSchedule-tune the model for this CPU (or, with --rpc, on every device server under the key); records go
    to the user cache (or -o DIR) and compile uses them."""
    from harmonizer_deploy.compiler.tuning import tune as run
    from harmonizer_deploy.core.remote import RemoteSpec

    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    with progress_bar(f"tuning for {target}", not as_json) as update:
        result = run(model, target, batch, time_steps, trials, time_budget, progress=update, output=output,
                     remote=remote)
    if as_json:
        emit_json(result)
        return
    use = f" --tuning-records {output}" if output is not None else ""
    out.print(f"{result['records']}: {result['tasks']} tasks, {result['trials']} trials in total, "
              f"{result['tuning_seconds']:.0f} s; compile with --batch {batch} --time {time_steps}{use} to use them")
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
def doctor(
    show_all: Annotated[bool, typer.Option("--all", help="Also check developer tools (docker, hadolint).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when something required is missing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What is installed and what each target needs, with the fix for each missing piece; each check is
    required (the core install) or optional."""
    from harmonizer_deploy.run.doctor import doctor as run
    from harmonizer_deploy.run.doctor import required_missing

    checks = run(developer=show_all)
    if as_json:
        emit_json([c.to_dict() for c in checks])
    else:
        table = Table(title="harmonizer-deploy doctor")
        for col in ("check", "", "needed", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            status = "[green]ok[/]" if c.ok else "[red]missing[/]" if c.required else "[yellow]missing[/]"
            table.add_row(escape(c.name), status, "required" if c.required else "optional", escape(c.detail),
                          escape(c.fix))
        out.print(table)
    missing = required_missing(checks)
    if strict and missing:
        err.print(f"[bold red]error:[/] required: {escape(', '.join(c.name for c in missing))} — see the fix "
                  "column", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USER_ERROR)


@build_app.command()
@cli_command
def targets(as_json: JsonOpt = False) -> None:
    """List the targets (search path: $HARMONIZER_DEPLOY_TARGETS, the user's folder, the shipped ones), whether
    this machine can build for each and whether it can run what is built."""
    from harmonizer_deploy.compiler.targets import available_targets, load_target
    from harmonizer_deploy.run.backends import target_can_run

    rows = []
    for name in available_targets():
        spec = load_target(name)
        missing = spec.missing_capabilities()
        can_run, run_detail = target_can_run(spec.device, spec.runner)
        rows.append({"name": name, "backend": spec.backend, "description": spec.description, "path": spec.path,
                     "missing": missing, "can_build": not missing, "can_run": can_run, "run_detail": run_detail})
    if as_json:
        emit_json(rows)
        return
    table = Table(title="targets")
    for col in ("target", "description", "can build", "can run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        build = "[green]yes[/]" if r["can_build"] else f"[red]no:[/] missing {escape(', '.join(r['missing']))}"
        run = "[green]yes[/]" if r["can_run"] else f"[red]no:[/] {escape(r['run_detail'])}"
        table.add_row(r["name"], escape(r["description"]), build, run)
    out.print(table)

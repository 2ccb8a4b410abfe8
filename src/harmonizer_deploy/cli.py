"""The `harmonizer-deploy` command: a thin Typer layer over the library API.

Every command prints one clear line and exits non-zero on bad input; tracebacks only with HARMONIZER_DEBUG=1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .debug_cli import TolOpt, debug_app
from .errors import EXIT_INTERNAL, EXIT_VERIFY_FAILED, HarmonizerError
from .progress import progress_bar, spinner

app = typer.Typer(
    name="harmonizer-deploy",
    help="Coconet harmonizer: TensorFlow → ONNX → TVM/MLC (cpu, cuda, vulkan, webgpu), verified against "
    "onnxruntime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide enough for the report tables when output goes to a file or CI log.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def cli_command(fn):
    """Turn library errors into one line + exit code; never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarmonizerError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("HARMONIZER_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first)} — rerun with "
                      "HARMONIZER_DEBUG=1 for the traceback and report it", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"harmonizer-deploy {__version__}")
        raise typer.Exit()


@app.command()
@cli_command
def convert(
    model: Annotated[str | None, typer.Argument(help="A .keras file, a SavedModel directory, or a bundled model "
                                                     "name (default: the bundled model).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ONNX model.")] = Path(
        "build/model.onnx"),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    custom_op_strategy: Annotated[str, typer.Option(
        "--custom-op-strategy", help="How registered custom layers/ops are converted: auto (each op's preferred "
        "strategy), rewrite, custom-op, decompose, or none (registry off).")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Convert a TensorFlow/Keras harmonizer to ONNX (tf2onnx), then check it against TensorFlow."""
    from .conversion import convert as run

    with spinner("converting with tf2onnx and checking against TensorFlow…", not as_json):
        result = run(model, output, opset, custom_op_strategy=custom_op_strategy)
    if as_json:
        emit_json(result.to_dict())
        return
    ops = ", ".join(f"{k}×{v}" for k, v in sorted(result.op_types.items()))
    out.print(f"wrote {result.onnx_path} (opset {result.opset}, {result.num_nodes} nodes: {ops})")
    out.print(f"onnxruntime vs TensorFlow: max abs error {result.max_abs_err:.3g}; sidecar {result.sidecar_path}")
    if result.custom_ops:
        out.print("custom ops: " + ", ".join(f"{k} → {v}" for k, v in sorted(result.custom_ops.items())))


ops_app = typer.Typer(help="Custom layers and ops: what breaks the TF → ONNX → TVM chain, and the fix.",
                      no_args_is_help=True)
app.add_typer(ops_app, name="ops")


@ops_app.command("scan")
@cli_command
def ops_scan(
    model: Annotated[str | None, typer.Argument(help="A .keras file, SavedModel dir, .onnx file, bundled model "
                                                     "name, or a directory holding models (an extracted archive).")]
    = None,
    tvm: Annotated[bool, typer.Option("--tvm/--no-tvm", help="Also check TVM's Relax importer.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """One row per layer/op: TF ops → tf2onnx → ONNX ops → TVM → verified → registry strategies."""
    from .ops_scan import scan

    with spinner("scanning ops…", not as_json):
        reports = scan(model, check_tvm=tvm)
    if as_json:
        emit_json([r.to_dict() for r in reports])
        return
    for report in reports:
        _print_scan(report)
    if any(r.broken for r in reports):
        out.print("[yellow]some ops break the chain; see the fix column[/]")


def _print_scan(report: Any) -> None:
    table = Table(title=f"ops scan: {report.model} ({report.kind})", show_lines=False)
    for col in ("layer / op", "Keras class", "TF ops", "tf2onnx", "ONNX ops", "TVM", "verified", "strategies",
                "status", "fix"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        tf2onnx = "–" if not r.tf_ops else ("[red]no: " + ", ".join(r.tf2onnx_missing) + "[/]"
                                            if r.tf2onnx_missing else "yes")
        tvm = "[red]no: " + ", ".join(r.tvm_missing) + "[/]" if r.tvm_missing else ("yes" if r.onnx_ops else "–")
        status = f"[red]{escape(r.status)}[/]" if r.breaks else "[green]ok[/]"
        table.add_row(escape(r.layer), r.keras_class + (" (custom)" if r.custom else ""), ", ".join(r.tf_ops),
                      tf2onnx, escape(", ".join(r.onnx_ops)), tvm, escape(r.verified), ", ".join(r.strategies) or "–",
                      status, escape(r.fix))
    out.print(table)
    out.print(f"plain conversion (registry off): tf2onnx unsupported: {', '.join(report.tf2onnx_unsupported) or 'none'}"
              f"; onnxruntime vs TF: {report.verified}; TVM import: {escape(report.tvm_import)}")
    if report.with_registry:
        w = report.with_registry
        out.print(f"with the registry ({', '.join(f'{k} → {v}' for k, v in sorted(w['strategies'].items()))}): "
                  f"onnxruntime vs TF: {w['verified']}; TVM import: {escape(w['tvm_import'])}")


@app.command("compile")
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
    from .compiler import compile as run

    dims = _parse_dims(fix_dim or [])
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


@app.command()
@cli_command
def tune(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")] = Path("build/model.onnx"),
    target: Annotated[str, typer.Option("--target", "-t", help="A CPU target in targets/.")] = "cpu",
    batch: Annotated[int, typer.Option(help="Batch size to tune for.")] = 1,
    time_steps: Annotated[int, typer.Option("--time", help="Time steps to tune for.")] = 32,
    trials: Annotated[int, typer.Option(help="MetaSchedule trials in total (this run).")] = 256,
    time_budget: Annotated[float | None, typer.Option("--time-budget", help="Stop after this many minutes.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """MetaSchedule-tune the model for this CPU; records go to targets/tuning/ and compile uses them."""
    from .tuning import tune as run

    with progress_bar(f"tuning for {target}", not as_json) as update:
        result = run(model, target, batch, time_steps, trials, time_budget, progress=update)
    if as_json:
        emit_json(result)
        return
    out.print(f"{result['records']}: {result['tasks']} tasks, {result['trials']} trials in total, "
              f"{result['tuning_seconds']:.0f} s; compile with --batch {batch} --time {time_steps} to use them")
    shape = f"{batch}x{time_steps}/"
    for task, decision in sorted(result["records_vs_hand_schedules"].items()):
        if task.startswith(shape):
            times = (f" (tuned {decision['tuned_ms']} ms vs {decision['hand_schedule']} {decision['hand_ms']} ms)"
                     if "hand_ms" in decision else f" ({decision['hand_schedule']})")
            out.print(f"  {task[len(shape):]}: record {'kept' if decision['kept'] else 'dropped'}{times}")


def parse_range(value: str | None) -> tuple[float, float] | None:
    """`--val-range LOW,HIGH` → (low, high)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise HarmonizerError(f"--val-range {value!r} is not LOW,HIGH", "pass e.g. --val-range 0,1") from None
    return low, high


def _parse_dims(items: list[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise HarmonizerError(f"--fix-dim {item!r} is not NAME=SIZE", "e.g. --fix-dim batch=1 --fix-dim time=32")
        dims[name] = int(size)
    return dims


@app.command()
@cli_command
def verify(
    artifact_dir: Annotated[Path | None, typer.Argument(help="Artifact directory (default build/T).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target the artifact was built for.")] = "cpu",
    num_inputs: Annotated[int | None, typer.Option(help="Number of seeded inputs (default: the target's, else 4).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated inputs.")] = 0,
    batch: Annotated[int | None, typer.Option(help="Batch size of each input (default: the artifact's static "
                                              "shape, else the target's, else 2).")] = None,
    time_steps: Annotated[int | None, typer.Option("--time", help="Time steps (16th notes) of each input "
                                                   "(default: static shape, else the target's, else 32).")] = None,
    save_inputs: Annotated[Path | None, typer.Option(help="Save the inputs used (npz) for replay.")] = None,
    load_inputs: Annotated[Path | None, typer.Option(help="Use inputs from an npz written by --save-inputs.")]
    = None,
    atol: TolOpt = None,
    rtol: TolOpt = None,
    check_error_stat: Annotated[str, typer.Option(help="Statistic held to the tolerance: max (every element), "
                                                       "mean or median.")] = "max",
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input out of tolerance.")] = False,
    validate: Annotated[bool, typer.Option(help="Only check the artifact's outputs for NaN/Inf (no reference).")]
    = False,
    histogram: Annotated[Path | None, typer.Option(help="Write a PNG histogram of the abs error here.")] = None,
    val_range: Annotated[str | None, typer.Option(help="Seeded uniform inputs in LOW,HIGH instead of realistic "
                                                       "pianorolls.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a compiled artifact with onnxruntime on seeded, realistic inputs; exit 3 on mismatch."""
    from .verification import parse_tolerance
    from .verification import verify as run

    with progress_bar(f"verifying {target} against onnxruntime", not as_json) as update:
        report = run(artifact_dir, target, num_inputs, seed, batch, time_steps, save_inputs, load_inputs,
                     parse_tolerance(atol, "atol"), parse_tolerance(rtol, "rtol"), update, check_error_stat,
                     fail_fast, validate, histogram, parse_range(val_range))
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_verify(report)
    if not report.passed:
        raise typer.Exit(EXIT_VERIFY_FAILED)


def _print_verify(report: Any) -> None:
    if report.mode == "validate":
        for o in report.outputs:
            out.print(f"{o['name']}: {o['nan_count']} NaN, {o['inf_count']} Inf of {o['total_elements']} values; "
                      f"finite range [{o['min']}, {o['max']}]")
    else:
        _print_compare(report)
    ranges = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in report.input_ranges[:4])
    if ranges:
        out.print(f"input value ranges: {ranges}{' …' if len(report.input_ranges) > 4 else ''}")
    if report.histogram:
        out.print(f"error histogram: {report.histogram}")
    for note in report.notes:
        out.print(f"[yellow]warning:[/] {escape(note)}")
    out.print("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]")


def _print_compare(report: Any) -> None:
    table = Table(title=f"verify {report.backend} vs {report.reference} ({report.num_inputs} inputs, "
                        f"seed {report.seed})")
    for col in ("output", "max abs", "max rel", "p99 abs", "mean abs", "median abs", "NaN/Inf", "argmax agree",
                "KL", "result"):
        table.add_column(col, justify="right")
    for o in report.outputs:
        agree = f"{o['argmax_agreement']:.2%}" if "argmax_agreement" in o else "–"
        kl = f"{o['kl_divergence']:.2e}" if "kl_divergence" in o else "–"
        table.add_row(escape(o["name"]), f"{o['max_abs_err']:.2e}", f"{o['max_rel_err']:.2e}",
                      f"{o['p99_abs_err']:.2e}", f"{o['mean_abs_err']:.2e}", f"{o['median_abs_err']:.2e}",
                      f"{o['nan_count']}/{o['inf_count']}", agree, kl,
                      "[green]PASS[/]" if o["passed"] else "[red]FAIL[/]")
    out.print(table)
    for o in report.outputs:
        out.print(f"{escape(o['name'])}: tolerance atol={o['atol']:g} rtol={o['rtol']:g} on the "
                  f"{o.get('check_error_stat', 'max')} error; needed atol={o['required_atol']:.2e}"
                  f" (rtol=0) or rtol={o['required_rtol']:.2e} (atol=0); {o['mismatched_elements']} of "
                  f"{o['total_elements']} elements outside tolerance")


@app.command()
@cli_command
def bench(
    batch: Annotated[list[int] | None, typer.Option("--batch", help="Batch size (repeatable).")] = None,
    backend: Annotated[list[str] | None, typer.Option("--backend", help="Backend (repeatable; default: "
                                                      "tensorflow, onnxruntime and every built local TVM target).")]
    = None,
    time_steps: Annotated[int, typer.Option("--time", help="Time steps per input.")] = 32,
    warmup: Annotated[int, typer.Option(help="Warm-up runs per backend.")] = 2,
    repeats: Annotated[int, typer.Option(help="Timed runs per backend (interleaved).")] = 10,
    build_dir: Annotated[Path, typer.Option(help="Where model.onnx and the artifacts are.")] = Path("build"),
    out_dir: Annotated[Path, typer.Option(help="Where to write results (json, md, png).")] = Path("bench/results"),
    name: Annotated[str, typer.Option(help="Base name of the result files.")] = "bench",
    harmonize_repeats: Annotated[int, typer.Option(help="End-to-end harmonizations of the two-bar sample (96 Gibbs "
                                                   "steps) per local backend; 0 skips them.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Latency of every available backend on the same inputs (min / p50 / p90, first run, GFLOP/s, ratio to
    onnxruntime in the same run), and end-to-end harmonize time per backend."""
    from .benchmark import bench as run
    from .benchmark import markdown_table

    with progress_bar("benchmarking", not as_json) as update:
        result = run(backend or None, tuple(batch or [1]), time_steps, warmup, repeats, 0, build_dir, out_dir, name,
                     update, harmonize_repeats)
    if as_json:
        emit_json(result)
        return
    out.print(markdown_table(result), highlight=False)
    for skipped in result.get("skipped", []):
        out.print(f"[yellow]not benchmarked:[/] {skipped['backend']} ({skipped['reason']})", highlight=False)
    out.print(f"results: {out_dir}/{name}.json, .md, .png")


@app.command("bundle")
@cli_command
def bundle_(
    artifact_dir: Annotated[Path | None, typer.Argument(help="Artifact directory (default build/T).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target the artifact was built for.")] = "cpu",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Bundle folder (default <artifact>/bundle)."
                                                )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy bundle of a compiled artifact: library, params, TVM runtime only and run.py (verify/bench there)."""
    from .bundle import make_bundle

    artifact_dir = artifact_dir or Path("build") / target
    result = make_bundle(artifact_dir, output)
    where = output or artifact_dir / result["dir"]
    if as_json:
        emit_json({"bundle": str(where), **{k: v for k, v in result.items() if k != "dir"}})
        return
    out.print(f"wrote {where}: {result['bytes'] / 1e6:.1f} MB (TVM runtime {result['runtime_bytes'] / 1e6:.1f} MB); "
              f"run there: python {where}/run.py verify", highlight=False)


@app.command()
@cli_command
def serve(
    build_dir: Annotated[Path, typer.Option("--build", help="Folder holding webgpu/ and/or wasm/ artifacts.")]
    = Path("build"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8000,
) -> None:
    """Serve the harmonizer page on 127.0.0.1: harmonize a melody in the browser (WebGPU, else wasm on the CPU)."""
    from .web.server import serve as make_server

    server = make_server(build_dir, port)
    out.print(f"harmonizer page: {server.url}/  (artifacts: {', '.join(sorted(server.artifacts))}; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()


@app.command()
@cli_command
def doctor(as_json: JsonOpt = False) -> None:
    """What is installed and what each target needs, with the fix for each missing piece."""
    from .diagnostics import doctor as run

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


@app.command()
@cli_command
def targets(as_json: JsonOpt = False) -> None:
    """List the targets in targets/ and whether this machine can build them."""
    from .targets import available_targets, load_target

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


@app.command()
@cli_command
def extract(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz, .tgz, .tar or .zip model archive.")],
    destination: Annotated[Path, typer.Argument(help="A new (or empty) directory to extract into.")],
    as_json: JsonOpt = False,
) -> None:
    """Unpack a model archive safely (no absolute paths, '..', escaping links or oversized members)."""
    from .extract import extract as run

    names = run(archive, destination)
    if as_json:
        emit_json({"destination": str(destination), "members": names})
        return
    out.print(f"extracted {len(names)} members into {destination}")


@app.command()
@cli_command
def train(
    dataset: Annotated[str, typer.Option(help="'music21' (Bach chorales shipped with music21) or a JSB-style .npz.")]
    = "music21",
    split: Annotated[str, typer.Option(help="Split of the .npz to train on.")] = "train",
    config: Annotated[str, typer.Option(help="Model config name or TOML path.")] = "default",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps in total (a resumed run continues to it).")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    crop: Annotated[int, typer.Option(min=4, help="Training crop length in 16th-note steps.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Initial Adam learning rate (cosine-decayed).")] = 2e-3,
    final_learning_rate: Annotated[float, typer.Option(help="Learning rate at the last step.")] = 2e-4,
    seed: Annotated[int, typer.Option(help="Seeds the init and every mask/crop draw.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 100,
    init: Annotated[str | None, typer.Option(help="Start from these Coconet-named weights (.npz).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory: checkpoint, model.npz/.toml/.json.")]
    = Path("runs/train"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore an existing checkpoint in --out.")] = False,
    log_every: Annotated[int, typer.Option(help="Without a terminal, print the loss every N steps.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Train a Coconet model (orderless NADE) with checkpoints; rerunning the same command resumes."""
    from .train import TrainSettings
    from .train import train as run_training

    settings = TrainSettings(dataset=dataset, split=split, config=config, steps=steps, batch_size=batch_size,
                             crop=crop, learning_rate=learning_rate, final_learning_rate=final_learning_rate,
                             seed=seed, checkpoint_every=checkpoint_every, init=init)
    with progress_bar("training", not as_json) as update:
        def report(done: int, total: int, loss: float) -> None:
            update(done, total)
            if not err.is_terminal and (done % log_every == 0 or done == total):
                err.print(f"step {done}/{total} loss {loss:.4f}", highlight=False)

        result = run_training(settings, out_dir, resume=not fresh, progress=report)
    summary = {"out": str(result.out_dir), "steps": result.steps, "final_loss": result.final_loss,
               "seconds_this_run": round(result.seconds, 1)}
    if as_json:
        emit_json(summary)
        return
    out.print(f"trained {result.steps} steps, final loss {result.final_loss:.4f} "
              f"({result.seconds:.0f} s this run) → {result.out_dir}/model.npz")


@app.command()
@cli_command
def evaluate(
    dataset: Annotated[str, typer.Option(help="JSB-style .npz (../shared/data/Jsb16thSeparated.npz) or 'music21'.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    model: Annotated[str | None, typer.Option(help="Bundled model name, .keras file or SavedModel.")] = None,
    backend: Annotated[str, typer.Option(help="tensorflow, onnxruntime or tvm-<dir>.")] = "tensorflow",
    build_dir: Annotated[Path, typer.Option(help="Where onnxruntime/TVM artifacts live.")] = Path("build"),
    masks: Annotated[int, typer.Option(min=1, help="Random orderless-NADE masks (orderings sampled) per piece.")] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N pieces.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Note-wise NLL on held-out chorales (orderless NADE estimate), next to Coconet's published figure."""
    from .evaluate import evaluate_dataset

    with progress_bar(f"scoring {split} pieces", not as_json) as update:
        result = evaluate_dataset(dataset, split, backend, build_dir, model, masks, seed, limit=limit,
                                  progress=update)
    if as_json:
        emit_json(result)
        return
    out.print(f"note-wise NLL {result['nll_per_note']:.4f} ± {result['stderr']:.4f} nats on {result['pieces']} "
              f"{split} pieces ({result['notes']} notes, {masks} masks/piece, {result['seconds']:.0f} s); "
              "published Coconet: {}-{}".format(*result["published"]["coconet_nll_per_note"]), highlight=False)


@app.command()
@cli_command
def harmonize(
    melody: Annotated[Path, typer.Argument(help="Melody as MIDI (.mid) or MusicXML (.xml/.musicxml/.mxl).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Four-part MIDI to write.")] = Path("chorale.mid"),
    backend: Annotated[str, typer.Option(help="tensorflow, onnxruntime or tvm-<dir> (e.g. tvm-cpu).")]
    = "tensorflow",
    build_dir: Annotated[Path, typer.Option(help="Where onnxruntime/TVM artifacts live.")] = Path("build"),
    model: Annotated[str | None, typer.Option(help="Model for the tensorflow backend (default: bundled).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed + backend → same chorale.")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Gibbs steps (the Bach Doodle uses 96).")] = 96,
    png: Annotated[Path | None, typer.Option(help="Also draw the pianoroll to this PNG.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Harmonize a melody into a four-part chorale (soprano = the melody, kept exactly)."""
    from .harmonize import harmonize_file

    with progress_bar(f"Gibbs sampling on {backend}", not as_json) as update:
        result = harmonize_file(melody, output, backend, build_dir, model, seed, steps, png, progress=update)
    if as_json:
        emit_json(result)
        return
    shift = result["transposed_semitones"]
    shifted = f", transposed {shift:+d} for the model" if shift else ""
    out.print(f"wrote {output} (4 voices, {result['time_steps']} 16th-note steps, {backend}, seed {seed}, "
              f"{steps} Gibbs steps, {result['seconds']:.1f} s{shifted})" + (f"; pianoroll {png}" if png else ""),
              highlight=False)


@app.command("import-weights")
@cli_command
def import_weights(
    checkpoint: Annotated[Path, typer.Argument(help="TF1 checkpoint prefix/dir, or TF.js weights_manifest.json.")],
    config: Annotated[str, typer.Option(help="Architecture: coconet-64x128, doodle-33x128, or a TOML.")]
    = "coconet-64x128",
    output: Annotated[Path, typer.Option("-o", "--output", help=".keras model (usable by convert) or .npz.")]
    = Path("coconet.keras"),
    as_json: JsonOpt = False,
) -> None:
    """Load Magenta's released weights (Python TF1 checkpoint or Bach Doodle TF.js) into the Keras model."""
    from .artifacts import atomic_file
    from .checkpoints import load_released
    from .config import load_config
    from .model import build_model, set_weights

    cfg = load_config(config)
    weights = load_released(checkpoint, cfg)
    if output.suffix == ".npz":
        import numpy as np

        with atomic_file(output) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **weights)
    elif output.suffix == ".keras":
        model = build_model(cfg)
        set_weights(model, cfg, weights, source=str(checkpoint))
        with atomic_file(output) as tmp:
            target = tmp.with_suffix(".keras")
            model.save(target)
            target.replace(tmp)
    else:
        raise HarmonizerError(f"unknown output type {output.suffix!r}", "use -o NAME.keras or -o NAME.npz")
    summary = {"checkpoint": str(checkpoint), "config": cfg.name, "variables": len(weights), "output": str(output)}
    if as_json:
        emit_json(summary)
        return
    out.print(f"imported {len(weights)} variables ({cfg.name}) → {output}", highlight=False)


app.add_typer(debug_app, name="debug")


from .coverage_report import coverage_command  # noqa: E402

app.command("coverage")(cli_command(coverage_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

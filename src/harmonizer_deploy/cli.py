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
    as_json: JsonOpt = False,
) -> None:
    """Convert a TensorFlow/Keras harmonizer to ONNX (tf2onnx), then check it against TensorFlow."""
    from .conversion import convert as run

    with spinner("converting with tf2onnx and checking against TensorFlow…", not as_json):
        result = run(model, output, opset)
    if as_json:
        emit_json(result.to_dict())
        return
    ops = ", ".join(f"{k}×{v}" for k, v in sorted(result.op_types.items()))
    out.print(f"wrote {result.onnx_path} (opset {result.opset}, {result.num_nodes} nodes: {ops})")
    out.print(f"onnxruntime vs TensorFlow: max abs error {result.max_abs_err:.3g}; sidecar {result.sidecar_path}")


@app.command("compile")
@cli_command
def compile_(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")] = Path("build/model.onnx"),
    target: Annotated[str, typer.Option("--target", "-t", help="A target in targets/ (see `targets`).")] = "cpu",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory (default build/T).")]
    = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the cached artifact matches.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compile an ONNX model with TVM Relax for a target: library + params + manifest."""
    from .compiler import compile as run

    with spinner(f"compiling for {target} with TVM…", not as_json):
        result = run(model, target, output, force)
    if as_json:
        emit_json(result.to_dict())
        return
    size = sum(a["bytes"] for a in result.manifest["artifacts"].values())
    how = "reused cached artifact" if result.cached else f"compiled in {result.seconds:.1f} s"
    out.print(f"{result.out_dir}: {how} (target {result.manifest['target']}, "
              f"{json.dumps(result.manifest['target_json'])}, {size / 1e6:.1f} MB)")


@app.command()
@cli_command
def verify(
    artifact_dir: Annotated[Path | None, typer.Argument(help="Artifact directory (default build/T).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target the artifact was built for.")] = "cpu",
    num_inputs: Annotated[int, typer.Option(help="Number of seeded inputs.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the generated inputs.")] = 0,
    batch: Annotated[int, typer.Option(help="Batch size of each input.")] = 2,
    time_steps: Annotated[int, typer.Option("--time", help="Time steps (16th notes) of each input.")] = 32,
    save_inputs: Annotated[Path | None, typer.Option(help="Save the inputs used (npz) for replay.")] = None,
    load_inputs: Annotated[Path | None, typer.Option(help="Use inputs from an npz written by --save-inputs.")]
    = None,
    atol: Annotated[float | None, typer.Option(help="Override the target's absolute tolerance.")] = None,
    rtol: Annotated[float | None, typer.Option(help="Override the target's relative tolerance.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a compiled artifact with onnxruntime on seeded, realistic inputs; exit 3 on mismatch."""
    from .verification import verify as run

    with progress_bar(f"verifying {target} against onnxruntime", not as_json) as update:
        report = run(artifact_dir, target, num_inputs, seed, batch, time_steps, save_inputs, load_inputs, atol,
                     rtol, update)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_verify(report)
    if not report.passed:
        raise typer.Exit(EXIT_VERIFY_FAILED)


def _print_verify(report: Any) -> None:
    table = Table(title=f"verify {report.backend} vs {report.reference} ({report.num_inputs} inputs, "
                        f"seed {report.seed})")
    for col in ("output", "max abs", "max rel", "p99 abs", "mean abs", "NaN/Inf", "argmax agree", "KL", "result"):
        table.add_column(col, justify="right")
    for o in report.outputs:
        agree = f"{o['argmax_agreement']:.2%}" if "argmax_agreement" in o else "–"
        kl = f"{o['kl_divergence']:.2e}" if "kl_divergence" in o else "–"
        table.add_row(o["name"], f"{o['max_abs_err']:.2e}", f"{o['max_rel_err']:.2e}", f"{o['p99_abs_err']:.2e}",
                      f"{o['mean_abs_err']:.2e}", f"{o['nan_count']}/{o['inf_count']}", agree, kl,
                      "[green]PASS[/]" if o["passed"] else "[red]FAIL[/]")
    out.print(table)
    for o in report.outputs:
        out.print(f"{o['name']}: tolerance atol={o['atol']:g} rtol={o['rtol']:g}; needed atol={o['required_atol']:.2e}"
                  f" (rtol=0) or rtol={o['required_rtol']:.2e} (atol=0); {o['mismatched_elements']} of "
                  f"{o['total_elements']} elements outside tolerance")
    for note in report.notes:
        out.print(f"[yellow]warning:[/] {escape(note)}")
    out.print("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]")


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
    as_json: JsonOpt = False,
) -> None:
    """Latency of every available backend on the same inputs: min / p50 / p90 and first run."""
    from .benchmark import bench as run
    from .benchmark import markdown_table

    with progress_bar("benchmarking", not as_json) as update:
        result = run(backend or None, tuple(batch or [1]), time_steps, warmup, repeats, 0, build_dir, out_dir, name,
                     update)
    if as_json:
        emit_json(result)
        return
    out.print(markdown_table(result), highlight=False)
    out.print(f"results: {out_dir}/{name}.json, .md, .png")


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
        out.print(f"{r['name']:<10} {r['description']} [{status}]")


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


from .coverage_report import coverage_command  # noqa: E402

app.command("coverage")(cli_command(coverage_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

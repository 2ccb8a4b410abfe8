"""Commands that run artifacts: verify, bench, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.common import JsonOpt, TolOpt, cli_command, emit_json, out, parse_range
from harmonizer_deploy.cli.progress import progress_bar
from harmonizer_deploy.cli.remote import RpcKeyOpt, RpcOpt, RpcTimeoutOpt
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED

check_app = typer.Typer()


@check_app.command()
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
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Compare a compiled artifact with onnxruntime on seeded, realistic inputs; exit 3 on mismatch."""
    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.verification.verify import parse_tolerance
    from harmonizer_deploy.verification.verify import verify as run

    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    with progress_bar(f"verifying {target} against onnxruntime", not as_json) as update:
        report = run(artifact_dir, target, num_inputs, seed, batch, time_steps, save_inputs, load_inputs,
                     parse_tolerance(atol, "atol"), parse_tolerance(rtol, "rtol"), update, check_error_stat,
                     fail_fast, validate, histogram, parse_range(val_range), remote)
    if as_json:
        emit_json(report.to_dict())
    else:
        print_verify(report)
    if not report.passed:
        raise typer.Exit(EXIT_VERIFY_FAILED)


def print_verify(report: Any) -> None:
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
    if getattr(report, "remote", None):
        out.print(f"ran on remote device {escape(report.remote['device'])} (key {escape(report.remote['key'])}, "
                  f"tracker {report.remote['tracker']})", highlight=False)
        for event in report.remote["events"]:
            out.print(f"[yellow]warning:[/] {escape(event)}")
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


@check_app.command()
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
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Latency of every available backend on the same inputs (min / p50 / p90, first run, GFLOP/s, ratio to
    onnxruntime in the same run), and end-to-end harmonize time per backend."""
    from harmonizer_deploy.benchmark.bench import bench as run
    from harmonizer_deploy.benchmark.bench import markdown_table
    from harmonizer_deploy.core.remote import RemoteSpec

    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    with progress_bar("benchmarking", not as_json) as update:
        result = run(backend or None, tuple(batch or [1]), time_steps, warmup, repeats, 0, build_dir, out_dir, name,
                     update, harmonize_repeats, remote)
    if as_json:
        emit_json(result)
        return
    out.print(markdown_table(result), highlight=False)
    for skipped in result.get("skipped", []):
        out.print(f"[yellow]not benchmarked:[/] {skipped['backend']} ({skipped['reason']})", highlight=False)
    out.print(f"results: {out_dir}/{name}.json, .md, .png")


@check_app.command()
@cli_command
def serve(
    build_dir: Annotated[Path, typer.Option("--build", help="Folder holding webgpu/ and/or wasm/ artifacts.")]
    = Path("build"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8000,
) -> None:
    """Serve the harmonizer page on 127.0.0.1: harmonize a melody in the browser (WebGPU, else wasm on the CPU)."""
    from harmonizer_deploy.web.server import serve as make_server

    server = make_server(build_dir, port)
    out.print(f"harmonizer page: {server.url}/  (artifacts: {', '.join(sorted(server.artifacts))}; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()

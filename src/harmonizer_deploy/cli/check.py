"""Commands that run artifacts: verify, bench, serve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.common import (
    HELP,
    LIBRARY_LOGGER,
    ErrorStat,
    JsonOpt,
    NoBuildOpt,
    TolOpt,
    cli_command,
    deprecated,
    emit_json,
    out,
    parse_tolerance,
)
from harmonizer_deploy.cli.progress import progress_bar
from harmonizer_deploy.cli.remote import RpcKeyOpt, RpcOpt, RpcTimeoutOpt
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED, HarmonizerError

check_app = typer.Typer(context_settings=HELP)
log = logging.getLogger(LIBRARY_LOGGER + ".cli")


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
    check_error_stat: Annotated[ErrorStat, typer.Option(help="Statistic held to the tolerance: max (every "
                                                        "element), mean or median.")] = ErrorStat.max,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first input out of tolerance.")] = False,
    validate: Annotated[bool, typer.Option(help="Only check the artifact's outputs for NaN/Inf (no reference).")]
    = False,
    histogram: Annotated[Path | None, typer.Option(help="Write a PNG histogram of the abs error here.")] = None,
    val_range: Annotated[list[str] | None, typer.Option(
        help="Seeded uniform inputs in LOW,HIGH (every input; for the harmonizer instead of realistic pianorolls), "
             "or NAME=LOW,HIGH for one input; repeatable.")] = None,
    no_build: NoBuildOpt = False,
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Compare a compiled artifact with onnxruntime on seeded, realistic inputs; exit 3 on mismatch. Without an
    artifact directory, a missing build/<target> is built first (unless --no-build)."""
    from harmonizer_deploy.conversion.inputs import parse_value_ranges
    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.run.ensure import ensure_artifact
    from harmonizer_deploy.verification.verify import VerifyOptions
    from harmonizer_deploy.verification.verify import verify as run

    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    options = VerifyOptions(
        num_inputs=num_inputs, seed=seed, batch=batch, time_steps=time_steps, save_inputs_to=save_inputs,
        load_inputs_from=load_inputs, atol=parse_tolerance(atol, "atol"), rtol=parse_tolerance(rtol, "rtol"),
        check_error_stat=check_error_stat.value, fail_fast=fail_fast, validate=validate, histogram=histogram,
        value_range=parse_value_ranges(val_range) or None,
    )
    if artifact_dir is None and not no_build and remote is None:
        ensure_artifact(target, "build")
    with progress_bar(f"verifying {target} against onnxruntime", not as_json) as update:
        report = run(artifact_dir, target, options=options, progress=update, remote=remote)
    finish_verify(report, as_json)


def finish_verify(report: Any, as_json: bool) -> None:
    """How every verify-like command ends: JSON or the table, then exit 3 when it did not pass."""
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
        log.warning(note)
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
                                                      "tensorflow, onnxruntime, openvino and every built local TVM "
                                                      "target; also openvino-bf16).")]
    = None,
    time_steps: Annotated[int, typer.Option("--time", help="Time steps per input.")] = 32,
    warmup: Annotated[int, typer.Option(help="Warm-up runs per backend.")] = 2,
    repeats: Annotated[int, typer.Option(help="Timed runs per backend (interleaved).")] = 10,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads for every backend (TVM_NUM_THREADS, "
                                                "onnxruntime intra-op, OpenVINO INFERENCE_NUM_THREADS, TensorFlow "
                                                "intra-op); default: each runtime's own.")] = None,
    build_dir: Annotated[Path, typer.Option(help="Where model.onnx and the artifacts are.")] = Path("build"),
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Where to write results (json, md, png).")]
    = Path("bench/results"),
    old_out_dir: Annotated[Path | None, typer.Option("--out-dir", hidden=True)] = None,
    name: Annotated[str, typer.Option(help="Base name of the result files.")] = "bench",
    harmonize_repeats: Annotated[int, typer.Option(help="End-to-end harmonizations of the two-bar sample (96 Gibbs "
                                                   "steps) per local backend; 0 skips them.")] = 3,
    compare: Annotated[Path | None, typer.Option("--compare", help="Baseline bench JSON: print each row's change "
                                                 "and exit 3 when one is slower by more than --threshold.")] = None,
    threshold: Annotated[float, typer.Option(help="Slowdown in percent that --compare calls a regression.")] = 10.0,
    readme_table: Annotated[Path | None, typer.Option("--readme-table", help="Don't run: print the README "
                                                      "Performance table generated from this bench JSON.")] = None,
    readme: Annotated[Path | None, typer.Option(help="With --readme-table: replace the generated table block in "
                                                "this README instead of printing it.")] = None,
    no_build: NoBuildOpt = False,
    rpc: RpcOpt = None,
    rpc_key: RpcKeyOpt = None,
    rpc_timeout: RpcTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Latency of every available backend on the same inputs (min / p50 / p90, stdev, IQR, first run, GFLOP/s,
    ratio to onnxruntime in the same run, max abs error against onnxruntime, threads as each runtime reports
    them), and end-to-end harmonize time per backend."""
    from harmonizer_deploy.benchmark import bench as b
    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.run.backends import check_backend_name
    from harmonizer_deploy.run.ensure import ensure_bench

    if readme_table is not None:
        table = b.readme_table(b.read_result(readme_table), str(readme_table))
        if readme is not None:
            block = b.update_readme(readme, table, block=readme_table.stem)
            where = f"the {block!r} table" if block else "the Performance table"
            out.print(f"updated {where} in {readme} from {readme_table}", highlight=False)
        else:
            out.print(table, highlight=False, soft_wrap=True)
        return
    if readme is not None:
        raise HarmonizerError("--readme only goes with --readme-table", "add --readme-table bench/results/RUN.json")
    baseline = b.read_result(compare) if compare is not None else None  # a bad baseline fails before any work
    if threshold < 0:
        raise HarmonizerError(f"--threshold must be >= 0, got {threshold}", "pass a percentage such as 10")
    remote = RemoteSpec.parse(rpc, rpc_key, rpc_timeout)
    out_dir = deprecated("--out-dir", "-o/--output", old_out_dir, out_dir)
    for name_ in backend or []:
        check_backend_name(name_, build_dir)
    if not no_build:
        ensure_bench(backend or None, build_dir)
    with progress_bar("benchmarking", not as_json) as update:
        result = b.bench(backend or None, tuple(batch or [1]), time_steps, warmup, repeats, 0, build_dir, out_dir,
                         name, update, harmonize_repeats, threads, remote)
    changes = b.compare(result, baseline, threshold) if baseline is not None else None
    if changes is not None:
        result["compare"] = {"baseline": str(compare), "threshold_pct": threshold, "rows": changes}
    if as_json:
        emit_json(result)
    else:
        out.print(b.markdown_table(result), highlight=False, markup=False)  # "[peers]" is text, not a style
        for skipped in result.get("skipped", []):
            fix = f"; {skipped['fix']}" if skipped.get("fix") else ""
            log.warning(f"not benchmarked: {skipped['backend']} ({skipped['reason']}{fix})")
        out.print(f"results: {out_dir}/{name}.json, .md, .png")
        if changes is not None:
            print_changes(changes, compare, threshold)
    if changes and any(c["regressed"] for c in changes):
        raise typer.Exit(EXIT_VERIFY_FAILED)


def print_changes(changes: list[dict], baseline: Path | None, threshold: float) -> None:
    """One line per row present in both runs: baseline → now, change, and REGRESSED past the threshold."""
    out.print(f"\nchange against {baseline} (regression: more than {threshold:g}% slower):", highlight=False)
    if not changes:
        out.print("[yellow]no row of this run is in the baseline[/]")
    for c in changes:
        what = f"{c['backend']} batch {c['batch']}" if c["kind"] == "latency" else f"harmonize {c['backend']}"
        flag = " [bold red]REGRESSED[/]" if c["regressed"] else ""
        out.print(f"{escape(what)}: {c['baseline']:.3f} → {c['current']:.3f} {c['unit']} "
                  f"({c['change_pct']:+.1f}%){flag}", highlight=False)


@check_app.command()
@cli_command
def backends(
    build_dir: Annotated[Path, typer.Option(help="Where model.onnx and the artifacts are.")] = Path("build"),
    as_json: JsonOpt = False,
) -> None:
    """The valid --backend names, whether each can run on this machine, and whether its files are built yet
    (harmonize, bench and verify build a missing one on first use)."""
    from harmonizer_deploy.run.backends import backend_status

    rows = backend_status(build_dir)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"backends ({build_dir})")
    for col in ("backend", "can run here", "built", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], "[green]yes[/]" if r["can_run"] else "[red]no[/]", "yes" if r["built"] else "no",
                      escape(r["detail"]))
    out.print(table)


@check_app.command()
@cli_command
def serve(
    build_dir: Annotated[Path, typer.Option("--build-dir", help="Folder holding webgpu/ and/or wasm/ artifacts.")]
    = Path("build"),
    old_build: Annotated[Path | None, typer.Option("--build", hidden=True)] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8000,
) -> None:
    """Serve the harmonizer page on 127.0.0.1: harmonize a melody in the browser (WebGPU, else wasm on the CPU)."""
    from harmonizer_deploy.web.server import serve as make_server

    build_dir = deprecated("--build", "--build-dir", old_build, build_dir)
    server = make_server(build_dir, port)
    out.print(f"harmonizer page: {server.url}/  (artifacts: {', '.join(sorted(server.artifacts))}; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()

"""`harmonizer-deploy debug …`: localize the first diverging node, reduce to a bug-report model, verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.check import finish_verify
from harmonizer_deploy.cli.common import HELP, JsonOpt, TolOpt, cli_command, emit_json, out, parse_tolerance
from harmonizer_deploy.cli.progress import progress_bar, spinner
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED

debug_app = typer.Typer(
    help="When verify fails: find the first diverging node, shrink the model, say which tolerance is needed.",
    no_args_is_help=True,
    context_settings=HELP,
)

ArtifactArg = Annotated[Path | None, typer.Argument(help="Artifact directory (default build/T).")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="Target the artifact was built for.")]
ChunkOpt = Annotated[int, typer.Option(help="Nodes per compiled sub-model: memory and compile time per step.")]
NumInputsOpt = Annotated[int, typer.Option(help="Seeded inputs; the scan uses the one that fails worst.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the generated inputs.")]
BatchOpt = Annotated[int, typer.Option(help="Batch size of each input.")]
TimeOpt = Annotated[int, typer.Option("--time", help="Time steps of each input.")]
LoadOpt = Annotated[Path | None, typer.Option(help="Use inputs from an npz written by verify --save-inputs.")]


def _tolerances(atol: list[str] | None, rtol: list[str] | None) -> tuple[Any, Any]:

    return parse_tolerance(atol, "atol"), parse_tolerance(rtol, "rtol")


@debug_app.command()
@cli_command
def localize(
    artifact_dir: ArtifactArg = None,
    target: TargetOpt = "cpu",
    chunk_size: ChunkOpt = 8,
    num_inputs: NumInputsOpt = 1,
    seed: SeedOpt = 0,
    batch: BatchOpt = 2,
    time_steps: TimeOpt = 32,
    load_inputs: LoadOpt = None,
    atol: TolOpt = None,
    rtol: TolOpt = None,
    scan_always: Annotated[bool, typer.Option(help="Scan every node even when the artifact passes (e.g. to "
                                                   "see each node's error).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the first ONNX node whose output diverges from onnxruntime when compiled for the target (exit 3)."""
    from harmonizer_deploy.verification.debug import localize as run

    a, r = _tolerances(atol, rtol)
    with progress_bar("compiling and comparing chunks", not as_json) as update:
        report = run(artifact_dir, target, chunk_size, num_inputs, seed, batch, time_steps, load_inputs, a, r,
                     scan_always, update)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_localize(report)
    if report.diverged:
        raise typer.Exit(EXIT_VERIFY_FAILED)


def _mark(passed: bool) -> str:
    return "[green]ok[/]" if passed else "[red]DIVERGES[/]"


def _print_localize(report: Any) -> None:
    f = report.full_model
    out.print(f"whole artifact vs onnxruntime ({f['name']}): max abs error {f['max_abs_err']:.2e}, needed atol "
              f"{f['required_atol']:.2e} / rtol {f['required_rtol']:.2e} (have {f['atol']:g} / {f['rtol']:g}) "
              f"{_mark(f['passed'])}")
    if report.submodels_compiled:
        out.print(f"scanned {len(report.checked)} of {report.num_nodes} nodes in chunks of {report.chunk_size}: "
                  f"{report.submodels_compiled} sub-models compiled ({report.compile_seconds:.1f} s), at most "
                  f"{report.peak_live_tensors} tensors ({report.peak_live_bytes / 1e6:.1f} MB) held; input "
                  f"{report.input_index} {report.input_shape}")
    if report.chain:
        table = Table(title="on the way to the first diverging node (its ancestors, topological order)")
        for col in ("#", "node", "op", "max abs", "needed atol", "needed rtol", ""):
            table.add_column(col)
        for c in report.chain[-12:]:
            table.add_row(str(c["index"]), escape(c["name"]), c["op_type"], f"{c['max_abs_err']:.2e}",
                          f"{c['required_atol']:.2e}", f"{c['required_rtol']:.2e}", _mark(c["passed"]))
        out.print(table)
    if report.culprit:
        c = report.culprit
        out.print(f"first diverging node: [bold]{escape(c['name'])}[/] ({c['op_type']}, node #{c['index']})")
        for i in c["inputs"]:
            source = f"from {escape(i['producer'])} ({i['producer_op']})" if i["producer"] else "graph input"
            out.print(f"  input {escape(i['name'])} ({source}): max abs error {i['max_abs_err']:.2e} "
                      f"{_mark(i['passed'])}")
        for o in c["outputs"]:
            out.print(f"  output {escape(o['name'])}: max abs error {o['max_abs_err']:.2e}, needed atol "
                      f"{o['required_atol']:.2e} or rtol {o['required_rtol']:.2e} (have {o['atol']:g} / "
                      f"{o['rtol']:g})")
        for o in c["alone"]:
            out.print(f"  alone, fed onnxruntime's inputs: max abs error {o['max_abs_err']:.2e} {_mark(o['passed'])}")
    out.print(escape(report.verdict))
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


@debug_app.command()
@cli_command
def reduce(
    artifact_dir: ArtifactArg = None,
    target: TargetOpt = "cpu",
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory for reduced.onnx, inputs.npz, "
                                                               "reduced.json and repro.py.")] = Path("build/reduced"),
    node: Annotated[str | None, typer.Option(help="Cut around this node instead of localizing first.")] = None,
    chunk_size: ChunkOpt = 8,
    num_inputs: NumInputsOpt = 1,
    seed: SeedOpt = 0,
    batch: BatchOpt = 2,
    time_steps: TimeOpt = 32,
    load_inputs: LoadOpt = None,
    atol: TolOpt = None,
    rtol: TolOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Shrink a failing model to the smallest subgraph that still fails, as a standalone .onnx + inputs npz."""
    from harmonizer_deploy.verification.debug import reduce as run

    a, r = _tolerances(atol, rtol)
    with spinner("localizing and reducing…", not as_json):
        report = run(artifact_dir, target, output, node, chunk_size, num_inputs, seed, batch, time_steps,
                     load_inputs, a, r)
    if as_json:
        emit_json(report.to_dict())
        return
    worst = max(report.outputs, key=lambda o: o["max_abs_err"])
    out.print(f"wrote {report.model_path} ({report.num_nodes} node{'s' if report.num_nodes != 1 else ''}: "
              f"{escape(', '.join(report.nodes))}) and {report.inputs_path}")
    out.print(f"it still fails on {target}: max abs error {worst['max_abs_err']:.2e} (tolerance atol "
              f"{worst['atol']:g}, rtol {worst['rtol']:g}); reproduce with `harmonizer-deploy debug verify "
              f"{report.model_path} --inputs {report.inputs_path} --target {target}` or `python repro.py` there")


@debug_app.command("verify")
@cli_command
def verify_model(
    model: Annotated[Path, typer.Argument(help="Any ONNX model, e.g. a reduced.onnx.")],
    inputs: Annotated[Path, typer.Option(help="npz keyed by input name (the inputs.npz next to it).")],
    target: TargetOpt = "cpu",
    atol: TolOpt = None,
    rtol: TolOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile an ONNX model for the target and compare every output with onnxruntime; exit 3 on mismatch."""
    from harmonizer_deploy.verification.debug import verify_onnx

    a, r = _tolerances(atol, rtol)
    with spinner(f"compiling {model} for {target} and comparing…", not as_json):
        report = verify_onnx(model, inputs, target, a, r)
    finish_verify(report, as_json)

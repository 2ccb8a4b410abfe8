"""Commands that take a TensorFlow model in: convert, ops scan, extract, import-weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from harmonizer_deploy.cli.common import HELP, CustomOpStrategy, JsonOpt, cli_command, emit_json, out
from harmonizer_deploy.cli.progress import spinner
from harmonizer_deploy.core.errors import HarmonizerError

model_app = typer.Typer(context_settings=HELP)


@model_app.command()
@cli_command
def convert(
    model: Annotated[str | None, typer.Argument(help="A .keras file, a SavedModel directory, or a bundled model "
                                                     "name (default: the bundled model).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ONNX model.")] = Path(
        "build/model.onnx"),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    custom_op_strategy: Annotated[CustomOpStrategy, typer.Option(
        "--custom-op-strategy", help="How registered custom layers/ops are converted: auto (each op's preferred "
        "strategy), rewrite, custom-op, decompose, or none (registry off).")] = CustomOpStrategy.auto,
    trust_model: Annotated[bool, typer.Option("--trust-model", help="Run a SavedModel even if its graph has ops "
                                              "with side effects (file I/O, PyFunc, ...): only for models you "
                                              "trust.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert a TensorFlow/Keras harmonizer to ONNX (tf2onnx), then check it against TensorFlow."""
    from harmonizer_deploy.conversion.convert import convert as run

    with spinner("converting with tf2onnx and checking against TensorFlow…", not as_json):
        result = run(model, output, opset, custom_op_strategy=custom_op_strategy.value, trust_model=trust_model)
    if as_json:
        emit_json(result.to_dict())
        return
    ops = ", ".join(f"{k}×{v}" for k, v in sorted(result.op_types.items()))
    out.print(f"wrote {result.onnx_path} (opset {result.opset}, {result.num_nodes} nodes: {ops})")
    out.print(f"onnxruntime vs TensorFlow: max abs error {result.max_abs_err:.3g}; sidecar {result.sidecar_path}")
    if result.custom_ops:
        out.print("custom ops: " + ", ".join(f"{k} → {v}" for k, v in sorted(result.custom_ops.items())))


ops_app = typer.Typer(help="Custom layers and ops: what breaks the TF → ONNX → TVM chain, and the fix.",
                      no_args_is_help=True, context_settings=HELP)
model_app.add_typer(ops_app, name="ops")


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
    from harmonizer_deploy.coverage.ops_scan import scan

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
    if report.coverage_nodes:
        _print_coverage_nodes(report.coverage_nodes)
    if report.with_registry:
        w = report.with_registry
        out.print(f"with the registry ({', '.join(f'{k} → {v}' for k, v in sorted(w['strategies'].items()))}): "
                  f"onnxruntime vs TF: {w['verified']}; TVM import: {escape(w['tvm_import'])}")


def _print_coverage_nodes(nodes: list[dict]) -> None:
    """The compile-time coverage check per node: what `compile` refuses (known mismatch) or warns about."""
    style = {"known mismatch": "red", "untested": "yellow", "tested": "green"}
    table = Table(title="coverage check per node (as compile applies it)")
    for col in ("node", "op", "class", "coverage", "case"):
        table.add_column(col, overflow="fold")
    for n in nodes:
        status = f"[{style.get(n['status'], 'white')}]{escape(n['status'])}[/]"
        case = f"{n['case']} ({n['cases']} mismatch)" if n["case"] else ""
        table.add_row(escape(n["node"]), escape(n["op"]), escape(n["klass"]), status, escape(case))
    out.print(table)
    refused = sum(1 for n in nodes if n["status"] == "known mismatch")
    if refused:
        out.print(f"[red]compile refuses {refused} node(s) in known-mismatch classes (--allow-known-mismatch "
                  "builds anyway)[/]")


@model_app.command()
@cli_command
def extract(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz, .tgz, .tar or .zip model archive.")],
    destination: Annotated[Path, typer.Argument(help="A new (or empty) directory to extract into.")],
    as_json: JsonOpt = False,
) -> None:
    """Unpack a model archive safely (no absolute paths, '..', escaping links or oversized members)."""
    from harmonizer_deploy.conversion.extract import extract as run

    names = run(archive, destination)
    if as_json:
        emit_json({"destination": str(destination), "members": names})
        return
    out.print(f"extracted {len(names)} members into {destination}")


@model_app.command("import-weights")
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
    from harmonizer_deploy.core.artifacts import atomic_file
    from harmonizer_deploy.music.checkpoints import load_released
    from harmonizer_deploy.music.config import load_config
    from harmonizer_deploy.music.model import build_model, set_weights

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

"""`harmonizer-deploy coverage`: the ONNX op coverage tracker's command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harmonizer_deploy.cli.common import HELP, cli_command, deprecated
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED
from harmonizer_deploy.coverage.report import (
    DEFAULT_MODEL,
    JOURNAL,
    REPORT_JSON,
    changes,
    generate,
    regressions,
    summary,
)

coverage_app = typer.Typer(context_settings=HELP)


@coverage_app.command("coverage")
@cli_command
def coverage_command(
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-k", help="Case name glob (test_ optional) or op name; repeat.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: CPU count).")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds per case and variant before the worker is killed.")] = 120.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where coverage.json goes (COVERAGE.md beside it).")]
    = REPORT_JSON,
    journal: Annotated[Path, typer.Option(help="Resume journal of finished (case, variant) results.")] = JOURNAL,
    force: Annotated[bool, typer.Option("--force", help="Ignore the journal and rerun everything.")] = False,
    old_fresh: Annotated[bool, typer.Option("--fresh", hidden=True)] = False,
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", help=f"ONNX model(s) for a per-model section (default: {DEFAULT_MODEL} if present)."),
    ] = None,
    with_models: Annotated[
        bool | None, typer.Option("--models/--no-models", help="--models alone: run only the zoo models table "
                                  "(convert → TVM import → compile cpu → verify cpu [→ wasm]) and update it in "
                                  "COVERAGE.md; --no-models: skip the per-model sections of the op run.")
    ] = None,
    wasm: Annotated[bool, typer.Option("--wasm", help="With --models: also compile and verify each zoo model for "
                                                      "wasm (needs emscripten and Chromium; slow).")] = False,
    zoo_dir: Annotated[Path, typer.Option(help="With --models: where the zoo models are built.")]
    = Path("build/zoo"),
    compare: Annotated[
        Path | None, typer.Option("--compare", help="Baseline coverage.json; exit non-zero on any regression.")
    ] = None,
    show_summary: Annotated[
        bool, typer.Option("--summary", help="Print totals of the committed report without re-running.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Run every ONNX node test through TVM (as-is, static, static + pack) and onnxruntime; write the report."""
    from harmonizer_deploy.core.artifacts import read_json

    if show_summary:
        report = read_json(output, "coverage report", "run `harmonizer-deploy coverage` first")
        data = summary(report)
        if as_json:
            typer.echo(json.dumps(data))
        else:
            typer.echo(" ".join(f"{k}={v['pass'] if isinstance(v, dict) else v}" for k, v in data.items()))
        return
    if with_models and not model:
        _zoo_table(output.with_name("COVERAGE.md"), zoo_dir, wasm, as_json)
        return
    baseline = read_json(compare, "baseline coverage report", "pass a coverage.json") if compare else None
    models = model if with_models is not False else []
    force = deprecated("--fresh", "--force", old_fresh, force)
    report = generate(filters or (), jobs or None, timeout, output, journal, force, models)
    found = regressions(baseline, report) if baseline else []
    changed = changes(baseline, report) if baseline else []
    if as_json:
        extra = {"regressions": found, "changed": changed} if baseline else {}
        typer.echo(json.dumps({**summary(report), **extra}))
    else:
        typer.echo(json.dumps(summary(report)))
        if baseline:
            typer.echo(f"{len(changed)} case categories differ from {compare}, {len(found)} of them regressions")
        for line in found:
            typer.echo(f"REGRESSION {line}")
    if found:
        raise typer.Exit(EXIT_VERIFY_FAILED)


def _zoo_table(markdown: Path, zoo_dir: Path, wasm: bool, as_json: bool) -> None:
    """Run the zoo through the chain and rewrite COVERAGE.md's models table from it."""
    from harmonizer_deploy.coverage.zoo import STAGES, write_zoo_section, zoo_coverage
    from harmonizer_deploy.verification.verify import verify

    rows = zoo_coverage(zoo_dir, verify, wasm=wasm)
    write_zoo_section(markdown, rows)
    if as_json:
        typer.echo(json.dumps({"markdown": str(markdown), "models": rows}))
        return
    for row in rows:
        typer.echo(f"{row['model']:<28} " + " ".join(f"{s}={row[s]}" for s in STAGES)
                   + (f"  {row['first_error']}" if row["first_error"] else ""))
    typer.echo(f"wrote the zoo models table to {markdown}")

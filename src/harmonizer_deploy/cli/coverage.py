"""`harmonizer-deploy coverage`: the ONNX op coverage tracker's command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harmonizer_deploy.cli.common import HELP, cli_command, deprecated
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED, HarmonizerError
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


@coverage_app.command("coverage-classes")
@cli_command
def coverage_classes_command(
    report: Annotated[Path, typer.Option("--report", help="The full coverage report.")] = REPORT_JSON,
    merge: Annotated[
        list[Path] | None,
        typer.Option("--merge", help="A partial run's coverage.partial.json to merge into the report first; repeat."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where the class table goes (default: the "
                                                "package's frontend/coverage_classes.json, which compile reads).")]
    = None,
) -> None:
    """Derive the compile-time known-mismatch table from coverage.json (after merging partial runs)."""
    from harmonizer_deploy.coverage.classes import write_table
    from harmonizer_deploy.frontend.coverage_check import TABLE_PATH

    _, table = write_table(report, merge or [], output or TABLE_PATH)
    classes = table["classes"]
    bad = [k for k, v in classes.items() if v.get("mismatch")]
    typer.echo(f"{output or TABLE_PATH}: {len(classes)} node classes, {len(bad)} with known mismatches")


@coverage_app.command("coverage-check")
@cli_command
def coverage_check_command(
    baseline: Annotated[Path, typer.Option("--baseline", help="The committed full report.")] = REPORT_JSON,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per case and variant.")] = 120.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the subset's report goes.")]
    = Path("build/coverage-ci/coverage.json"),
    ops: Annotated[list[str] | None, typer.Option("--op", "-k", help="Only the subset's cases of this op "
                                                  "(repeatable), e.g. after touching its converter.")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="Print the subset's case names and exit.")] = False,
) -> None:
    """CI guard: run the ~300-case subset (every op) and exit 3 if a case that passes in the baseline fails now."""
    from harmonizer_deploy.core.artifacts import read_json
    from harmonizer_deploy.coverage.ci import check_subset, ci_subset

    report = read_json(baseline, "baseline coverage report", "pass the committed coverage.json")
    names = ci_subset(report)
    if ops:
        wanted = {o.lower() for o in ops}
        names = [n for n in names if report["cases"][n]["op"].lower() in wanted]
        if not names:
            raise HarmonizerError(f"no CI subset case tests {', '.join(ops)}",
                                  "pass op names as coverage.json spells them")
    if list_only:
        for name in names:
            typer.echo(name)
        return
    result = check_subset(baseline, jobs or None, timeout, output, names=names)
    typer.echo(f"coverage subset: {result['cases']} cases, {result['ops']} ops, {result['wall_s']} s; "
               f"{len(result['changed'])} categories differ from {baseline}, {len(result['regressions'])} regressions")
    for line in result["regressions"]:
        typer.echo(f"REGRESSION {line}")
    if result["regressions"]:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@coverage_app.command("coverage-reference")
@cli_command
def coverage_reference_command(
    report: Annotated[Path, typer.Option("--report", help="The coverage report to add the column to.")] = REPORT_JSON,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds per case.")] = 120.0,
) -> None:
    """Baseline onnx.reference for every case onnxruntime cannot run; rewrites coverage.json and COVERAGE.md."""
    from harmonizer_deploy.core.artifacts import read_json, write_json
    from harmonizer_deploy.coverage.report import add_reference_baseline, render_markdown
    from harmonizer_deploy.coverage.tracker import write_text

    data = read_json(report, "coverage report", "run `harmonizer-deploy coverage` first")
    data = add_reference_baseline(data, jobs or None, timeout)
    write_json(report, data)
    write_text(report.with_name("COVERAGE.md"), render_markdown(data))
    ref = [e["onnx_reference"]["status"] for e in data["cases"].values() if "onnx_reference" in e]
    typer.echo(f"onnx.reference on {len(ref)} cases onnxruntime does not pass: {ref.count('pass')} pass")

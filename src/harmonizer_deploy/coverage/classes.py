"""Derive the compile-time class table (frontend/coverage_classes.json) from a coverage report.

Why: compile must know which node classes TVM + pack gets silently wrong, but must not ship or parse the
1 MB coverage.json. Each node-suite case (not `_expanded`: those test primitive ops already covered) is
classified exactly as compile classifies a user's node (`frontend.coverage_check.node_class`), on the
static model the "TVM + our pack" column ran, and its TVM + pack category is tallied under that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.artifacts import write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.frontend.coverage_check import TABLE_FORMAT, graph_facts, node_class, op_version


def build_table(report: dict[str, Any], source: str, cases: Sequence[Any] | None = None) -> dict[str, Any]:
    """{class key: {cases, pass, mismatch: [{case, detail}], other: {category: n}, versions}} for `report`."""
    from harmonizer_deploy.coverage.tracker import collect_cases, make_static

    results = report.get("cases", {})
    if not results:
        raise HarmonizerError("the coverage report has no cases", "pass a coverage.json written by `coverage`")
    suite = cases if cases is not None else collect_cases()
    classes: dict[str, dict[str, Any]] = {}
    for case in suite:
        entry = results.get(case.name)
        if case.expanded or entry is None or "tvm_pack" not in entry:
            continue
        static, _inputs, _baked = make_static(case.model, case.inputs)
        facts = graph_facts(static)
        status, detail = entry["tvm_pack"]["status"], entry["tvm_pack"].get("detail", "")
        for node in static.graph.node:
            if node.op_type != case.op:
                continue
            key = node_class(node, facts)
            c = classes.setdefault(key, {"cases": 0, "pass": 0, "mismatch": [], "other": {}, "versions": []})
            c["cases"] += 1
            if status == "pass":
                c["pass"] += 1
            elif status == "mismatch":
                c["mismatch"].append({"case": case.name, "detail": detail})
            else:
                c["other"][status] = c["other"].get(status, 0) + 1
            version = op_version(node, facts)
            if version is not None and version not in c["versions"]:
                c["versions"].append(version)
    for c in classes.values():  # compact: drop empty fields
        if not c["mismatch"]:
            del c["mismatch"]
        if not c["other"]:
            del c["other"]
        c["versions"].sort()
    meta = report.get("meta", {})
    return {"meta": {"format": TABLE_FORMAT, "source": source, "versions": meta.get("versions", {})},
            "classes": dict(sorted(classes.items()))}


def compile_refusals(report: dict[str, Any], table: dict[str, Any], cases: Sequence[Any] | None = None
                     ) -> dict[str, Any]:
    """For every case TVM + pack gets wrong (category mismatch): the known-mismatch class compile refuses it by.

    A node case is refused by its own class; an `_expanded` case by any of its primitive nodes' classes.
    Not refused but holding a class no case tests: compile warns ("warned"). The rest are the silent
    mismatches left. Returns {"refused": {case: class}, "warned": {case: class}, "silent": [...]}.
    """
    from harmonizer_deploy.coverage.tracker import collect_cases, make_static

    results = report.get("cases", {})
    wrong = {n for n, e in results.items() if e.get("tvm_pack", {}).get("status") == "mismatch"}
    bad = {k for k, v in table["classes"].items() if v.get("mismatch")}
    suite = cases if cases is not None else collect_cases()
    refused: dict[str, str] = {}
    warned: dict[str, str] = {}
    for case in suite:
        if case.name not in wrong:
            continue
        static, _inputs, _baked = make_static(case.model, case.inputs)
        facts = graph_facts(static)
        keys = [node_class(n, facts) for n in static.graph.node]
        hit = next((k for k in keys if k in bad), None)
        untested = next((k for k in keys if k not in table["classes"] and "::" not in k), None)
        if hit is not None:
            refused[case.name] = hit
        elif untested is not None:
            warned[case.name] = untested
    return {"refused": dict(sorted(refused.items())), "warned": dict(sorted(warned.items())),
            "silent": sorted(wrong - set(refused) - set(warned))}


def write_table(report_path: Path, merge: Sequence[Path], output: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge partial runs into coverage.json, write the class table to `output`, and record in coverage.json
    (and COVERAGE.md) which mismatching cases compile refuses by which class. Returns (report, table)."""
    from harmonizer_deploy.core.artifacts import read_json
    from harmonizer_deploy.coverage.report import merge_partial, render_markdown, zoo_section
    from harmonizer_deploy.coverage.tracker import collect_cases, write_text

    report = read_json(report_path, "coverage report", "run `harmonizer-deploy coverage` first")
    if merge:
        parts = [(p.name, read_json(p, "partial coverage report", "run `harmonizer-deploy coverage -k OP`"))
                 for p in merge]
        report = merge_partial(report, parts)
    suite = collect_cases()
    table = build_table(report, report_path.name, suite)
    report["compile_check"] = compile_refusals(report, table, suite)
    write_json(report_path, report)
    markdown = report_path.with_name("COVERAGE.md")
    write_text(markdown, render_markdown(report) + zoo_section(markdown))
    write_json(output, table)
    return report, table

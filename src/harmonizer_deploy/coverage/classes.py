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


def write_table(report_path: Path, merge: Sequence[Path], output: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge partial runs into coverage.json (and COVERAGE.md), then write the class table to `output`.

    Returns (report, table). Without `merge` the report is only read.
    """
    from harmonizer_deploy.core.artifacts import read_json
    from harmonizer_deploy.coverage.report import merge_partial, render_markdown
    from harmonizer_deploy.coverage.tracker import write_text

    report = read_json(report_path, "coverage report", "run `harmonizer-deploy coverage` first")
    if merge:
        parts = [(p.name, read_json(p, "partial coverage report", "run `harmonizer-deploy coverage -k OP`"))
                 for p in merge]
        report = merge_partial(report, parts)
        write_json(report_path, report)
        write_text(report_path.with_name("COVERAGE.md"), render_markdown(report))
    table = build_table(report, report_path.name)
    write_json(output, table)
    return report, table

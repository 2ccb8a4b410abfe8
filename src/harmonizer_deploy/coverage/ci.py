"""The CI coverage check: a ~300-case subset that covers every op, compared with the committed coverage.json.

Why: the full run takes minutes on 2 cores and is a command (`coverage`); CI needs a quick guard that no case
that passes in the committed report stops passing (a pack converter broken, a TVM upgrade). The subset is
chosen deterministically from the committed report: one node case and one `_expanded` case per op (a passing
one where there is), then the cases only the pack makes pass, round-robin over ops, up to the size.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.artifacts import read_json, write_json
from harmonizer_deploy.core.errors import HarmonizerError

SUBSET_SIZE = 300
OUTPUT = Path("build/coverage-ci/coverage.json")


def _score(entry: dict[str, Any]) -> int:
    """Higher for cases that can show a regression in more columns (more of them pass)."""
    return sum(entry[col]["status"] == "pass" for col in ("tvm_pack", "tvm_static", "tvm", "onnxruntime")
               if col in entry)


def ci_subset(report: dict[str, Any], size: int = SUBSET_SIZE) -> list[str]:
    """Case names of the CI subset of `report` (sorted): every op, then pack-dependent cases up to `size`."""
    cases = report.get("cases", {})
    if not cases:
        raise HarmonizerError("the baseline coverage report has no cases", "pass the committed coverage.json")
    by_op: dict[tuple[str, bool], list[str]] = defaultdict(list)
    for name in sorted(cases):
        by_op[(cases[name]["op"], bool(cases[name]["expanded"]))].append(name)
    chosen: set[str] = set()
    for names in by_op.values():  # one per (op, node/expanded): the most-passing, first by name
        chosen.add(min(names, key=lambda n: (-_score(cases[n]), n)))
    pack_only = defaultdict(list)
    for name in sorted(cases):
        e = cases[name]
        if name not in chosen and e["tvm_pack"]["status"] == "pass" and e["tvm_static"]["status"] != "pass":
            pack_only[e["op"]].append(name)
    queues = [list(v) for _, v in sorted(pack_only.items())]
    while len(chosen) < size and any(queues):
        for q in queues:
            if q and len(chosen) < size:
                chosen.add(q.pop(0))
    return sorted(chosen)


def check_subset(
    baseline_path: Path,
    jobs: int | None = 2,
    timeout_s: float = 120.0,
    output: Path = OUTPUT,
    names: Sequence[str] | None = None,
    runners: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the subset (or `names` of it) and compare with the baseline; returns {regressions, changed, ...}.

    `runners` overrides variant runners (tests plant a broken pack this way). The subset's own report goes to
    `output` (never over the committed coverage.json).
    """
    from harmonizer_deploy.coverage.report import build_report, changes, regressions
    from harmonizer_deploy.coverage.tracker import collect_cases, run_coverage

    baseline = read_json(baseline_path, "baseline coverage report", "pass the committed coverage.json")
    subset = ci_subset(baseline)
    wanted = set(subset if names is None else names)
    unknown = wanted - set(subset)
    if unknown:
        raise HarmonizerError(f"not in the CI subset: {', '.join(sorted(unknown)[:5])}", "pick names it lists")
    if output.resolve() == baseline_path.resolve():
        raise HarmonizerError("the subset report would overwrite the baseline", "pass another --output")
    start = time.monotonic()
    cases = [c for c in collect_cases() if c.name in wanted]
    missing = wanted - {c.name for c in cases}
    if missing:
        raise HarmonizerError(f"{len(missing)} subset cases are not in this onnx version's node tests "
                              f"(e.g. {sorted(missing)[0]})", "regenerate coverage.json with this onnx version")
    result = run_coverage(cases=cases, jobs=jobs, timeout_s=timeout_s, fresh=True, runners=runners)
    report = build_report(result)
    write_json(output, report)
    return {"cases": len(cases), "ops": len({c.op for c in cases}), "wall_s": round(time.monotonic() - start, 1),
            "regressions": regressions(baseline, report), "changed": changes(baseline, report),
            "output": str(output)}

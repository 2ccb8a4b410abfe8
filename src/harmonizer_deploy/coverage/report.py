"""COVERAGE.md / coverage.json for the op coverage tracker, the per-model section, and the CLI command.

Why a separate module: rendering and the Typer layer stay cheap to import; the runner (coverage.py) pulls
in onnx/numpy and spawns workers only when a run is requested.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.artifacts import write_json
from harmonizer_deploy.core.errors import HarmonizerError

REPORT_JSON = Path("coverage.json")
REPORT_MD = Path("COVERAGE.md")
JOURNAL = Path("build/coverage/journal.jsonl")
DEFAULT_MODEL = Path("build/model.onnx")
COLUMNS = ("tvm", "tvm_static", "tvm_pack", "onnxruntime")
TITLES = {"tvm": "TVM as-is", "tvm_static": "TVM static", "tvm_pack": "TVM + our pack", "onnxruntime": "onnxruntime"}

# Wrong results TVM returns without raising; each has a test in tests/test_tvm_silent_wrong.py.
SILENT_WRONG = [
    (
        "LayerNormalization",
        "Mean and InvStdDev outputs (outputs 1 and 2) come back as placeholders (not the statistics); "
        "output 0 is right. The pack computes all three.",
        "tests/test_tvm_silent_wrong.py::test_layernorm_mean_invstddev_are_placeholders",
    ),
    (
        "Attention (opset 23)",
        "the ai.onnx Attention node is routed to the com.microsoft Attention converter (TVM ignores node "
        "domains), which reads its inputs as (input, weight, bias, ...) and fails or computes something else.",
        "tests/test_tvm_silent_wrong.py::test_opset23_attention_goes_to_com_microsoft_converter",
    ),
    (
        "ReduceMax / ReduceMin",
        "a reduction over values that are all -inf (max) or all +inf (min) returns the lowest / highest finite "
        "float (-3.4028235e38 / 3.4028235e38 for float32) instead of -inf / +inf, so a following IsInf or "
        "Equal(-inf) is false. This is why the `_expanded` Attention cases with fully masked rows get NaN.",
        "tests/test_tvm_silent_wrong.py::test_reduce_max_of_all_neg_inf_is_finite",
    ),
    (
        "Cast to float8",
        "float32 → float8e4m3fn / float8e5m2 casts do not saturate (saturate=1 is the ONNX default): "
        "out-of-range values come back as unrelated values (e4m3fn: 1000 → -0.015625, 1e6 → -15) instead of "
        "the largest finite float8. The pack clamps (and keeps NaN, and overflows without saturate) for "
        "e4m3fn and e5m2; TVM's *fnuz casts are wrong for in-range values too.",
        "tests/test_tvm_silent_wrong.py::test_float8_cast_does_not_saturate",
    ),
]


# ---------------------------------------------------------------------------------------- building


def build_report(result: Any, models: dict[str, Any] | None = None) -> dict[str, Any]:
    from harmonizer_deploy.coverage.tracker import tally

    cases = result.cases
    node = {k: v for k, v in cases.items() if not v["expanded"]}
    expanded = {k: v for k, v in cases.items() if v["expanded"]}
    return {
        "meta": result.meta,
        "totals": {"all": tally(cases), "node": tally(node), "expanded": tally(expanded)},
        "cases": cases,
        "models": models or {},
    }


def merge_partial(report: dict[str, Any], partials: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """`report` with the cases of partial runs (`coverage -k OP`) replacing its own; totals recomputed.

    Why: after a pack fix, re-running only the ops it touched must update the committed report without a
    full run. meta["merged"] lists each partial run (where from, how many cases, its versions).
    """
    from harmonizer_deploy.coverage.tracker import tally

    cases = dict(report["cases"])
    merged = list(report["meta"].get("merged", []))
    for source, part in partials:
        unknown = sorted(set(part.get("cases", {})) - set(cases))
        if unknown:
            raise HarmonizerError(f"{source} has cases the report lacks ({', '.join(unknown[:3])})",
                                  "merge partial runs of the same onnx version only")
        cases.update(part["cases"])
        pmeta = part.get("meta", {})
        merged.append({"source": source, "cases": len(part["cases"]), "wall_s": pmeta.get("wall_s"),
                       "versions": pmeta.get("versions", {})})
    node = {k: v for k, v in cases.items() if not v["expanded"]}
    expanded = {k: v for k, v in cases.items() if v["expanded"]}
    return {**report, "meta": {**report["meta"], "merged": merged},
            "totals": {"all": tally(cases), "node": tally(node), "expanded": tally(expanded)}, "cases": cases}


def add_reference_baseline(report: dict[str, Any], jobs: int | None = None, timeout_s: float = 120.0,
                           journal: Path | None = None) -> dict[str, Any]:
    """Run onnx.reference on every case onnxruntime does not pass and record it as column "onnx_reference".

    Why: ~300 cases are IR v14 or use opsets onnxruntime refuses, so they had no baseline at all.
    """
    import time

    from harmonizer_deploy.coverage.tracker import collect_cases, run_coverage

    names = {n for n, e in report["cases"].items() if e["onnxruntime"]["status"] != "pass"}
    cases = [c for c in collect_cases() if c.name in names]
    start = time.monotonic()
    result = run_coverage(cases=cases, jobs=jobs, timeout_s=timeout_s, journal=journal,
                          variants=("onnx_reference",)) if cases else None
    for name in names:
        report["cases"][name].pop("onnx_reference", None)
    if result is not None:
        for name, entry in result.cases.items():
            report["cases"][name]["onnx_reference"] = entry["onnx_reference"]
    report["meta"]["onnx_reference"] = {"cases": len(cases), "wall_s": round(time.monotonic() - start, 1)}
    return report


def _reference_line(cases: dict[str, dict[str, Any]]) -> str:
    ref = {k: v for k, v in cases.items() if "onnx_reference" in v}
    if not ref:
        return ""
    ok = [k for k, v in ref.items() if v["onnx_reference"]["status"] == "pass"]
    pack = sum(1 for k in ok if cases[k]["tvm_pack"]["status"] == "pass")
    base = sum(1 for v in cases.values() if v["onnxruntime"]["status"] == "pass") + len(ok)
    pack_all = sum(1 for k, v in cases.items() if v["tvm_pack"]["status"] == "pass" and (
        v["onnxruntime"]["status"] == "pass" or k in ok))
    return (f" **Baseline onnx.reference** where onnxruntime cannot run a case ({len(ref)} cases): it passes "
            f"{len(ok)}, and TVM + pack passes {pack} of those. With either baseline ({base} cases have one that "
            f"passes), TVM + pack passes {pack_all} ({_pct(pack_all, base)}).")


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Totals for `coverage --summary --json`."""
    all_ = report["totals"]["all"]
    out: dict[str, Any] = {"cases": len(report["cases"])}
    for col in ("onnxruntime", "tvm", "tvm_static", "tvm_pack"):
        out[col] = {"pass": all_[col]["pass"]}
    return out


def _status_changes(baseline: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str, str, dict]]:
    """(case, column, old status, new result) for every case in both reports whose status differs."""
    found = []
    for name, old in baseline.get("cases", {}).items():
        new = current["cases"].get(name)
        if new is None:
            continue
        for col in COLUMNS:
            before, after = old.get(col, {}).get("status"), new.get(col, {})
            if before is not None and before != after.get("status"):
                found.append((name, col, before, after))
    return found


def regressions(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Cases (and columns) that passed in `baseline` and do not pass now."""
    return [f"{name} [{col}]: pass -> {after.get('status')}: {after.get('detail', '')}"
            for name, col, before, after in _status_changes(baseline, current) if before == "pass"]


def changes(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every (case, column) whose category differs from the baseline, regressions or not."""
    return [f"{name} [{col}]: {before} -> {after.get('status')}"
            for name, col, before, after in _status_changes(baseline, current)]


def pack_breaks(report: dict[str, Any]) -> list[str]:
    """Cases that pass TVM static without the pack and fail with it (must be empty)."""
    return [
        name
        for name, c in report["cases"].items()
        if c["tvm_static"]["status"] == "pass" and c["tvm_pack"]["status"] != "pass"
    ]


# ---------------------------------------------------------------------------------------- markdown


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f}%" if d else "-"


def _cell(entries: list[dict[str, Any]], col: str) -> str:
    n = sum(1 for e in entries if e[col]["status"] == "pass")
    return f"{n}/{len(entries)}"


def _first_error(entries: list[dict[str, Any]], col: str) -> str:
    for e in entries:
        if e[col]["status"] != "pass":
            return f"{e[col]['status']}: {e[col]['detail']}".replace("|", "\\|").replace("\n", " ")[:160]
    return ""


def _op_table(cases: dict[str, dict[str, Any]]) -> list[str]:
    by_op: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in cases.values():
        by_op[entry["op"]].append(entry)
    lines = [
        "| op | cases | TVM as-is | TVM static | TVM + our pack | onnxruntime | first error (TVM + pack) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for op in sorted(by_op, key=str.lower):
        es = by_op[op]
        lines.append(
            f"| {op} | {len(es)} | "
            + " | ".join(_cell(es, c) for c in COLUMNS)
            + f" | {_first_error(es, 'tvm_pack')} |"
        )
    return lines


def _totals_table(report: dict[str, Any]) -> list[str]:
    from harmonizer_deploy.coverage.tracker import CATEGORIES, tally

    lines = []
    ref_title = "onnx.reference (cases onnxruntime fails)"
    for part, title in (("all", "All cases"), ("node", "Node cases"), ("expanded", "`*_expanded` cases")):
        t = report["totals"][part]
        n = sum(t["onnxruntime"].values())
        ref_cases = {k: v for k, v in report["cases"].items() if "onnx_reference" in v
                     and (part == "all" or v["expanded"] == (part == "expanded"))}
        ref = tally(ref_cases, ["onnx_reference"])["onnx_reference"] if ref_cases else None
        extra = [ref_title] if ref else []
        lines += [f"**{title}** ({n})", "", "| category | " + " | ".join([*(TITLES[c] for c in COLUMNS), *extra])
                  + " |"]
        lines.append("|---|" + "---:|" * (len(COLUMNS) + len(extra)))
        for cat in CATEGORIES:
            cells = [str(t[c][cat]) for c in COLUMNS] + ([str(ref[cat])] if ref else [])
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        rates = [_pct(t[c]["pass"], n) for c in COLUMNS] + ([_pct(ref["pass"], len(ref_cases))] if ref else [])
        lines.append("| **pass rate** | " + " | ".join(rates) + " |")
        lines.append("")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    meta, cases = report["meta"], report["cases"]
    all_ = report["totals"]["all"]
    ort_pass = {k for k, v in cases.items() if v["onnxruntime"]["status"] == "pass"}
    pack_on_ort = sum(1 for k in ort_pass if cases[k]["tvm_pack"]["status"] == "pass")
    static_on_ort = sum(1 for k in ort_pass if cases[k]["tvm_static"]["status"] == "pass")
    v = meta.get("versions", {})
    lines = [
        "# ONNX op coverage of TVM's Relax ONNX frontend",
        "",
        "Generated by `harmonizer-deploy coverage` (do not edit by hand). "
        f"TVM {v.get('apache-tvm')}, onnx {v.get('onnx')} node test cases (regenerated from the test-case "
        f"code in the wheel), onnxruntime {v.get('onnxruntime')}, target llvm, Relax VM.",
        "",
        "Columns: **TVM as-is** imports the test model unchanged; **TVM static** bakes runtime inputs "
        "(every tensor input after the first, and a shape-like first input) into initializers, the way exported "
        "models have them; **TVM + our pack** is TVM static with `harmonizer_deploy.frontend.pack` installed "
        "through `harmonizer_deploy.frontend.hook` (no TVM files edited), after its static-shape folding pre-pass "
        "(`converter_pack_fold.py`: integer shape arithmetic that starts from `Shape`/`Size` of a statically "
        "shaped tensor becomes initializers; real data is never computed there). Categories: pass / "
        "unsupported op / import error / compile error / runtime error / mismatch / timeout.",
        "",
        f"**Headline:** {meta['cases']} cases. onnxruntime passes {all_['onnxruntime']['pass']}, "
        f"TVM as-is {all_['tvm']['pass']} ({_pct(all_['tvm']['pass'], meta['cases'])}), "
        f"TVM static {all_['tvm_static']['pass']} ({_pct(all_['tvm_static']['pass'], meta['cases'])}), "
        f"TVM + pack {all_['tvm_pack']['pass']} ({_pct(all_['tvm_pack']['pass'], meta['cases'])}). "
        f"Of the {len(ort_pass)} cases onnxruntime passes, TVM static passes {static_on_ort} "
        f"({_pct(static_on_ort, len(ort_pass))}) and TVM static + pack {pack_on_ort} "
        f"({_pct(pack_on_ort, len(ort_pass))})."
        + (f" Silent mismatches under TVM + pack (wrong numbers, not refused by `compile`): "
           f"{len(report['compile_check']['silent'])}; refused by compile: "
           f"{len(report['compile_check']['refused'])}; warned (untested class): "
           f"{len(report['compile_check'].get('warned', {}))}." if report.get("compile_check") else "")
        + _reference_line(cases),
        "",
        f"Run: {meta.get('jobs')} jobs, timeout {meta.get('timeout_s')} s per case and variant, "
        f"{meta.get('wall_s')} s wall clock for {meta.get('tasks_run')} (case, variant) runs "
        "(variants that are the same model by construction reuse one result, marked `same_as` in coverage.json)."
        + (" Merged since, from partial runs (`coverage -k OP`, then `coverage-classes --merge`): "
           + ", ".join(f"{m['cases']} cases ({m['source']})" for m in meta["merged"]) + "."
           if meta.get("merged") else ""),
        "",
        "Why onnxruntime, the baseline, fails where it does (first line of the error, most frequent first):",
        "",
        *_reasons(cases, "onnxruntime"),
        "",
        "## Totals",
        "",
        *_totals_table(report),
    ]
    breaks = pack_breaks(report)
    lines += [
        "## Cases the pack breaks",
        "",
        "None: every case that passes TVM static also passes with the pack."
        if not breaks
        else "\n".join(f"- {b}" for b in breaks),
        "",
        "## Silent wrong results in TVM (no error raised)",
        "",
        "| op | what goes wrong | test |",
        "|---|---|---|",
        *[f"| {op} | {what} | `{test}` |" for op, what, test in SILENT_WRONG],
        "",
    ]
    lines += _mismatch_section(cases)
    lines += _refusal_section(cases, report.get("compile_check"))
    lines += _models_section(report.get("models", {}))
    node = {k: c for k, c in cases.items() if not c["expanded"]}
    exp = {k: c for k, c in cases.items() if c["expanded"]}
    lines += ["## Per op (node cases)", "", *_op_table(node), ""]
    lines += ["## Per op (`*_expanded` cases: the op's function body, expanded into primitive ops)", ""]
    lines += [*_op_table(exp), ""]
    return "\n".join(lines)


def _mismatch_section(cases: dict[str, dict[str, Any]]) -> list[str]:
    """Every measured silent wrong result: TVM static returned outputs (no error) that do not match."""
    by_op: dict[str, list[str]] = defaultdict(list)
    for name, c in sorted(cases.items()):
        if c["tvm_static"]["status"] == "mismatch":
            by_op[c["op"]].append(name)
    lines = [
        "### Measured: every case where TVM static returns a wrong result without an error (category mismatch)",
        "",
        "| op | cases | of which onnxruntime passes | still wrong with the pack | first case: what differs |",
        "|---|---:|---:|---:|---|",
    ]
    for op in sorted(by_op, key=str.lower):
        names = by_op[op]
        ort_ok = sum(1 for n in names if cases[n]["onnxruntime"]["status"] == "pass")
        still = sum(1 for n in names if cases[n]["tvm_pack"]["status"] == "mismatch")
        first = f"`{names[0]}`: {cases[names[0]]['tvm_static']['detail']}".replace("|", "\\|")[:160]
        lines.append(f"| {op} | {len(names)} | {ort_ok} | {still} | {first} |")
    lines.append("")
    return lines


def _refusal_section(cases: dict[str, dict[str, Any]], check: dict[str, Any] | None) -> list[str]:
    """Every case TVM + pack still gets wrong, and the known-mismatch class `compile` refuses it by."""
    lines = ["### Still wrong with the pack: refused by compile", ""]
    if not check:
        return [*lines, "Not computed: run `harmonizer-deploy coverage-classes`.", ""]
    refused, silent, warned = check["refused"], check["silent"], check.get("warned", {})
    lines += [f"`compile` refuses a model with a node in a known-mismatch class (frontend/coverage_classes.json, "
              f"derived from this report by `harmonizer-deploy coverage-classes`) unless `--allow-known-mismatch`. "
              f"**Refused by compile: {len(refused)} cases. Silent mismatches (wrong and not refused): "
              f"{len(silent)}**" + (f": {', '.join(f'`{s}`' for s in silent)}." if silent else ".")
              + f" Not refused but warned by compile (a node class no case tests): {len(warned)}.", "",
              "| case | op | compile |", "|---|---|---|"]
    for name, klass in refused.items():
        lines.append(f"| `{name}` | {cases[name]['op']} | refused by compile: `{klass}` |")
    for name, klass in warned.items():
        lines.append(f"| `{name}` | {cases[name]['op']} | warning (untested class): `{klass}` |")
    lines.append("")
    return lines


def _reasons(cases: dict[str, dict[str, Any]], col: str, top: int = 6) -> list[str]:
    import re

    counts: dict[str, int] = defaultdict(int)
    for c in cases.values():
        if c[col]["status"] != "pass":
            detail = re.sub(r"/onnxruntime_src/\S+|\S+::\S+\([^)]*\)", "", c[col]["detail"])
            detail = " ".join(detail.split())[:140]
            counts[f"{c[col]['status']}: {detail}"] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [f"- {n} × {why}".replace("|", "\\|") for why, n in ranked]


def _models_section(models: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, m in models.items():
        lines += [f"## Model: {name}", "", f"Source: `{m['path']}`. Whole model: {m['whole']}.", ""]
        lines += ["| op | nodes | import | compile | verify (TVM + pack vs onnxruntime) | first error |"]
        lines += ["|---|---:|---|---|---|---|"]
        for op, row in m["ops"].items():
            lines.append(
                f"| {op} | {row['nodes']} | {row['import']} | {row['compile']} | {row['verify']} | "
                f"{row['first_error']} |"
            )
        lines.append("")
    return lines


# -------------------------------------------------------------------------------------- the command


def generate(
    filters: Sequence[str],
    jobs: int | None,
    timeout: float,
    output: Path,
    journal: Path,
    fresh: bool,
    models: Sequence[Path] | None,
) -> dict[str, Any]:
    """Run (resuming from the journal) and write coverage.json + COVERAGE.md atomically."""
    import sys

    from harmonizer_deploy.coverage.models import model_coverage
    from harmonizer_deploy.coverage.tracker import run_coverage, write_text

    def progress(i: int, n: int, task: Any, cat: str) -> None:
        if sys.stderr.isatty() or i % 100 == 0 or i == n:
            sys.stderr.write(f"\r[{i}/{n}] {task.variant:<12} {task.case.name[:60]:<60} {cat:<16}")
            sys.stderr.flush()

    result = run_coverage(filters, jobs=jobs, timeout_s=timeout, journal=journal, fresh=fresh, progress=progress)
    sys.stderr.write("\n")
    model_paths = list(models) if models is not None else ([DEFAULT_MODEL] if DEFAULT_MODEL.is_file() else [])
    model_sections = {}
    for path in model_paths:
        if not path.is_file():
            raise HarmonizerError(f"model not found: {path}", "convert it first: harmonizer-deploy convert")
        model_sections[path.stem] = model_coverage(path, jobs=jobs, timeout_s=timeout)
    report = build_report(result, model_sections)
    report = add_reference_baseline(report, jobs, timeout, journal)
    if filters:  # a partial run must not overwrite the committed full report
        output = output.with_name(output.stem + ".partial.json")
    write_json(output, report)
    markdown = output.with_name("COVERAGE.md" if not filters else "COVERAGE.partial.md")
    write_text(markdown, render_markdown(report) + zoo_section(markdown))
    return report


def zoo_section(markdown: Path) -> str:
    """The zoo models table already in COVERAGE.md (`coverage --models` writes it), kept across op reruns."""
    from harmonizer_deploy.coverage.zoo import ZOO_BEGIN, ZOO_END

    text = markdown.read_text() if markdown.is_file() else ""
    if ZOO_BEGIN not in text or ZOO_END not in text:
        return ""
    return "\n" + ZOO_BEGIN + text.split(ZOO_BEGIN, 1)[1].split(ZOO_END, 1)[0] + ZOO_END + "\n"

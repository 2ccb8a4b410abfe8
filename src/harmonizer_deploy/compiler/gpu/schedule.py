"""GPU kernels need every loop bound to threads. dlight's default rules do that, one function at a time.

TVM's own `ApplyDefaultSchedule` stops the whole compile when one rule *raises* on one function (on this
model dlight's Matmul rule asserts on a fused conv + batch-norm + ReLU), and silently leaves a function
unscheduled when no rule matches — the build then dies much later with "Did you forget to bind?" and no
function name. Here each function tries the rules in order; a rule that raises is recorded and the next one
is tried (Fallback last), and a function no rule can schedule fails the compile with its name.
"""

from __future__ import annotations

from typing import Any

from harmonizer_deploy.compiler.scheduling import SCHEDULED_ATTR, ScheduleReport, commit, is_scheduled
from harmonizer_deploy.core.errors import HarmonizerError

DEFAULT_RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")


def own_rules() -> dict[str, Any]:
    """This package's rules, usable in `schedule_rules` next to dlight's (same `apply` interface)."""
    from harmonizer_deploy.compiler.gpu.conv import RULE_NAME, DirectConv2d

    return {RULE_NAME: DirectConv2d}


def make_rules(names: tuple[str, ...] | list[str]) -> list[tuple[str, Any]]:
    """`["DirectConv2d", "Matmul", ...]` → rule instances (ours, else dlight's GPU rules), in order; an unknown
    name is one clear error."""
    from tvm.s_tir.dlight import gpu

    ours = own_rules()
    rules = []
    for name in names:
        cls = ours.get(name) or getattr(gpu, name, None)
        if cls is None:
            raise HarmonizerError(f"unknown dlight GPU schedule rule {name!r}",
                                  f"use {', '.join(ours)} or rules from tvm.s_tir.dlight.gpu, e.g. "
                                  f"{', '.join(DEFAULT_RULES)}")
        rules.append((name, cls()))
    return rules


def lowering_problems(name: str, func: Any, target: Any) -> list[str]:
    """Lower one scheduled function through TVM's TIR pipeline (no device codegen, so no nvcc) and return
    what the device build would reject or get wrong: on-chip buffers that stay dynamic-size after buffer
    compaction (CUDA codegen: "Can only handle constant size stack allocation"; dlight's GeneralReduction
    makes them for a dynamic batch/time), a lowering error (VerifyMemory's "Did you forget to bind?"), or no
    thread binding at all."""
    import tvm
    from tvm import tirx

    one = tvm.IRModule({name: func.with_attr("global_symbol", name).with_attr("target", target)})
    pipeline = tirx.get_default_tir_pipeline(target)
    if isinstance(pipeline, tuple):  # 0.27: (lowering, finalize host passes, finalize device passes)
        pipeline = pipeline[0]
    try:
        lowered = pipeline(one)
    except Exception as exc:  # VerifyMemory and friends: this schedule cannot be built
        return [_first_line(exc)]
    found: list[str] = []
    bound = False
    for _, lowered_func in lowered.functions_items():
        stack = [getattr(lowered_func, "body", None)]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            if isinstance(node, list | tuple) or type(node).__name__ == "Array":
                stack.extend(node)
                continue
            if type(node).__name__ == "AttrStmt" and node.attr_key == "thread_extent":
                bound = True
            if type(node).__name__ == "AllocBuffer":
                b = node.buffer
                if b.scope() != "global" and not all(isinstance(d, tirx.IntImm) for d in b.shape):
                    found.append(f"dynamic-size {b.scope()} buffer {b.name}{list(b.shape)}")
            for attr in ("body", "block", "init", "then_case", "else_case", "seq"):
                child = getattr(node, attr, None)
                if child is not None and not callable(child):
                    stack.append(child)
    if not bound:  # TVM 0.27 builds such a kernel without complaint, as host code reading GPU memory
        found.append("no loop bound to GPU threads")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:200] if lines else ''}"


def schedule_function(name: str, func: Any, target: Any, rules: list[tuple[str, Any]],
                      errors: dict[str, str]) -> tuple[Any, str]:
    """The scheduled function and the rule that did it; rules that raise are noted in `errors`."""
    for rule_name, rule in rules:
        try:
            space = rule.apply(func, target, False)
        except Exception as exc:  # a rule's own assertion on this function: try the next rule
            errors[f"{name}/{rule_name}"] = _first_line(exc)
            continue
        if space is None:
            continue
        sch = space[0] if isinstance(space, list | tuple) else space
        scheduled = sch.mod["main"]
        problems = lowering_problems(name, scheduled, target)
        if problems:  # would fail later in device codegen, for the whole model: try the next rule
            errors[f"{name}/{rule_name}"] = "; ".join(problems)
            continue
        return scheduled.with_attr(SCHEDULED_ATTR, True), rule_name
    tried = ", ".join(r for r, _ in rules)
    why = "; ".join(f"{k.split('/', 1)[1]}: {v}" for k, v in errors.items() if k.startswith(name + "/"))
    raise HarmonizerError(
        f"no GPU schedule for function {name!r} (tried {tried}{'; ' + why if why else ''}); unscheduled "
        "it would fail to build with \"Did you forget to bind?\"",
        "add a rule that handles it to [options] schedule_rules in the target TOML, or report the function",
    )


def per_function_schedule(rule_names: tuple[str, ...] | list[str] = DEFAULT_RULES,
                          report: ScheduleReport | None = None) -> Any:
    """A module pass: schedule each unscheduled PrimFunc with the first dlight rule that works for it; the rule
    per kernel, the rules that failed, and a failure that stops the build go into `report`."""
    report = report if report is not None else ScheduleReport()
    import tvm
    from tvm import tirx

    rules = make_rules(rule_names)

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerPerFunctionSchedule")
    def _pass(mod: Any, _ctx: Any) -> Any:
        report.functions.clear()
        report.rule_errors.clear()
        report.failure = None
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            target = func.attrs.get("target") or tvm.target.Target.current(allow_none=False)
            try:
                updated[gvar], report.functions[gvar.name_hint] = schedule_function(
                    gvar.name_hint, func, target, rules, report.rule_errors)
            except HarmonizerError as exc:
                report.failure = exc
                raise
        return commit(mod, updated)

    return _pass

"""ONNX op coverage tracker: which ONNX node tests TVM's Relax ONNX frontend imports, compiles and gets right.

Why: users need to know before they start whether TVM (the compiler under MLC) will take their model.
Every ONNX node test case (regenerated from the test-case code the `onnx` wheel ships) runs through
onnxruntime (baseline), TVM as-is, TVM "static" (runtime inputs baked in as initializers, the way
exported models have them) and TVM static + our converter pack. Each (case, variant) runs in a worker
process under a timeout, so a crash or hang costs one case, not the run. Results are appended to a
JSONL journal, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harmonizer_deploy.compiler.executable import build_executable
from harmonizer_deploy.core.artifacts import atomic_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.onnxruntime import ort_session

PASS = "pass"
UNSUPPORTED = "unsupported op"
IMPORT_ERROR = "import error"
COMPILE_ERROR = "compile error"
RUNTIME_ERROR = "runtime error"
MISMATCH = "mismatch"
TIMEOUT = "timeout"
CATEGORIES = (PASS, UNSUPPORTED, IMPORT_ERROR, COMPILE_ERROR, RUNTIME_ERROR, MISMATCH, TIMEOUT)

# Column order in the report; "tvm_pack" is TVM static + converter_pack.
VARIANTS = ("onnxruntime", "tvm", "tvm_static", "tvm_pack")
STAGE_CATEGORY = {"import": IMPORT_ERROR, "compile": COMPILE_ERROR, "run": RUNTIME_ERROR, "compare": MISMATCH}
DEFAULT_TIMEOUT_S = 120.0
JOURNAL_VERSION = 5  # bump when the harness changes what a category means


# --------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One node test: a model, its inputs and the expected outputs."""

    name: str
    op: str
    model: onnx.ModelProto
    inputs: list[Any]
    outputs: list[Any]
    rtol: float = 1e-3
    atol: float = 1e-7

    @property
    def expanded(self) -> bool:
        return "_expanded" in self.name


def _schema_names() -> list[str]:
    return sorted({s.name for s in onnx.defs.get_all_schemas_with_history()}, key=len, reverse=True)


def _squash(text: str) -> str:
    return text.lower().replace("_", "")


def case_op(name: str, model: onnx.ModelProto, schemas: Sequence[str]) -> str:
    """The op a case tests: the longest op name its test name starts with, preferring ops in its graph."""
    stem = _squash(re.sub(r"_expanded(_ver\d+)?$", "", name.removeprefix("test_")))
    in_graph = sorted({n.op_type for n in model.graph.node}, key=len, reverse=True)
    for candidates in (in_graph, schemas):
        for op in candidates:
            if stem.startswith(op.lower()):
                return op
    return model.graph.node[0].op_type if model.graph.node else "?"


def _arrays(values: list[Any]) -> list[Any]:
    """Test data holds types numpy lacks (bfloat16, float8, int4) as TensorProto; make them (ml_dtypes) arrays."""
    from onnx import numpy_helper

    out: list[Any] = []
    for v in values:
        if isinstance(v, onnx.TensorProto):
            out.append(numpy_helper.to_array(v))
        elif isinstance(v, list):
            out.append(_arrays(v))
        else:
            out.append(v)
    return out


def collect_cases(patterns: Sequence[str] = ()) -> list[Case]:
    """Regenerate the ONNX node test cases from the code in the installed `onnx` wheel."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        raw = collect_testcases(None)
    schemas = _schema_names()
    cases = []
    for tc in raw:
        if not tc.data_sets:
            continue
        inputs, outputs = (_arrays(list(values)) for values in tc.data_sets[0])
        cases.append(
            Case(
                tc.name,
                case_op(tc.name, tc.model, schemas),
                tc.model,
                inputs,
                outputs,
                float(tc.rtol),
                float(tc.atol),
            )
        )
    if patterns:
        cases = [c for c in cases if matches(c, patterns)]
    return sorted(cases, key=lambda c: c.name)


def matches(case: Case, patterns: Sequence[str]) -> bool:
    """--filter: glob on the case name (test_ prefix optional) or exact op name, case-insensitive."""
    for pattern in patterns:
        p = pattern.lower()
        if p == case.op.lower():
            return True
        for candidate in (p, f"test_{p}"):
            if fnmatch.fnmatch(case.name.lower(), candidate if any(ch in p for ch in "*?[") else f"{candidate}*"):
                return True
    return False


# ------------------------------------------------------------------------------------- static models


def _is_tensor(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.HasField("tensor_type")


def _shape_like(vi: onnx.ValueInfoProto, value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim <= 1 and (value.dtype.kind in "iub")


def make_static(model: onnx.ModelProto, inputs: list[Any]) -> tuple[onnx.ModelProto, list[Any], list[str]]:
    """Bake runtime inputs into initializers the way exported models have them.

    Every tensor input after the first becomes an initializer (weights, shapes, axes, pads, scales...);
    the first stays a runtime input unless it is itself shape-like (a rank<=1 integer/bool tensor).
    Returns the new model, the remaining runtime inputs and the names baked.
    """
    from onnx import numpy_helper

    static = onnx.ModelProto()
    static.CopyFrom(model)
    keep_vi, keep_vals, baked = [], [], []
    for i, (vi, raw) in enumerate(zip(model.graph.input, inputs, strict=False)):
        value = np.asarray(raw) if isinstance(raw, np.generic) else raw
        bake = _is_tensor(vi) and isinstance(value, np.ndarray) and (i > 0 or _shape_like(vi, value))
        if bake:
            static.graph.initializer.append(numpy_helper.from_array(value, vi.name))
            baked.append(vi.name)
        else:
            keep_vi.append(vi)
            keep_vals.append(value)
    del static.graph.input[:]
    static.graph.input.extend(keep_vi)
    if static.ir_version < 4:  # initializers need not be graph inputs only from IR 4 on
        static.ir_version = 4
    return static, keep_vals, baked


# ------------------------------------------------------------------------------------------ compare


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    return [value]


def compare_outputs(got: Sequence[Any], expected: Sequence[Any], rtol: float, atol: float) -> str | None:
    """None when `got` matches `expected` the way the ONNX backend tests judge it; else why not."""
    got_flat, exp_flat = _flatten(list(got)), _flatten(list(expected))
    if len(got_flat) != len(exp_flat):
        return f"{len(got_flat)} output tensors, expected {len(exp_flat)}"
    for i, (g, e) in enumerate(zip(got_flat, exp_flat, strict=True)):
        if e is None or g is None:
            if e is not g:
                return f"output {i}: got {type(g).__name__}, expected {type(e).__name__}"
            continue
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape:
            return f"output {i}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "OSU":
            if not np.array_equal(g.astype(str), e.astype(str)):
                return f"output {i}: strings differ"
            continue
        if g.dtype != e.dtype:
            return f"output {i}: dtype {g.dtype}, expected {e.dtype}"
        try:
            gf, ef = g.astype(np.float64), e.astype(np.float64)
        except (TypeError, ValueError):
            gf, ef = g.view(np.uint8).astype(np.float64), e.view(np.uint8).astype(np.float64)
        if not np.allclose(gf, ef, rtol=rtol, atol=atol, equal_nan=True):
            nan_diff = int(np.count_nonzero(np.isnan(gf) != np.isnan(ef)))
            if nan_diff:
                return f"output {i}: NaN at {nan_diff} position(s) where the other side has a number"
            with np.errstate(all="ignore"):
                diff = np.nanmax(np.abs(gf - ef)) if gf.size else 0.0
            return f"output {i}: max abs diff {diff:.3g} (rtol={rtol:g}, atol={atol:g})"
    return None


# ----------------------------------------------------------------------------- work inside a worker


class StageError(Exception):
    """A failure attributed to one stage of a variant (import / compile / run / compare)."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


Report = Callable[[str], None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # onnxruntime prefixes messages with the C++ source location and signature; keep the message.
    text = re.sub(r"/onnxruntime_src/\S+ .*?\)\s+(?=[A-Z])", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM errors often put the useful line last (after a traceback); keep it short either way.
    pick = next((ln for ln in lines if "Error" in ln or "not supported" in ln or "not implemented" in ln), None)
    line = pick or (lines[0] if lines else "")
    return f"{type(exc).__name__}: {line}"[:300]


def _stage(report: Report, stage: str, fn: Callable[[], Any]) -> Any:
    report(stage)
    try:
        return fn()
    except StageError:
        raise
    except Exception as exc:
        raise StageError(STAGE_CATEGORY[stage], _first_line(exc)) from exc


def run_onnxruntime(case: Case, report: Report) -> None:
    import onnxruntime as ort

    def load() -> Any:
        try:
            return ort_session(case.model, threads=1, quiet=True)
        except Exception as exc:
            if "NOT_IMPLEMENTED" in str(exc) or "Could not find an implementation" in str(exc):
                raise StageError(UNSUPPORTED, _first_line(exc)) from exc
            raise

    sess = _stage(report, "import", load)
    # ONNX test data holds rank-0 inputs as numpy scalars; onnxruntime only takes arrays.
    feeds = {
        vi.name: np.asarray(v) if isinstance(v, np.generic) else v
        for vi, v in zip(case.model.graph.input, case.inputs, strict=False)
    }
    names = [o.name for o in case.model.graph.output]
    if any(_ort_raw(v) for v in [*case.inputs, *case.outputs]):
        got = _stage(report, "run", lambda: _ort_run_raw(ort, sess, case))
    else:
        got = _stage(report, "run", lambda: sess.run(names, feeds))
    _check(report, case, got)


# numpy (ml_dtypes) types onnxruntime's Python API does not convert; passed to it as raw bits instead.
_RAW_TYPES = {
    "bfloat16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
}


def _ort_raw(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.name in _RAW_TYPES


def _bits(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value).view(np.uint8 if value.dtype.itemsize == 1 else np.uint16)


def _ort_run_raw(ort: Any, sess: Any, case: Case) -> list[np.ndarray]:
    """Run with IO binding, bfloat16/float8 tensors passed as their bits with the ONNX element type.

    Outputs are bound to buffers shaped like the expected outputs (a shape difference fails the run).
    """
    io = sess.io_binding()
    keep = []  # buffers must outlive the run
    for vi, v in zip(case.model.graph.input, case.inputs, strict=False):
        value = np.asarray(v)
        if _ort_raw(value):
            ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(_bits(value), vi.type.tensor_type.elem_type)
        else:
            ov = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
        keep.append(ov)
        io.bind_ortvalue_input(vi.name, ov)
    buffers = []
    for vo, expected in zip(case.model.graph.output, case.outputs, strict=False):
        e = np.asarray(expected)
        buf = np.zeros(e.shape, np.uint8 if e.dtype.itemsize == 1 else np.uint16) if _ort_raw(e) else np.zeros_like(e)
        if _ort_raw(e):
            ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, vo.type.tensor_type.elem_type)
        else:
            ov = ort.OrtValue.ortvalue_from_numpy(buf)
        keep.append(ov)
        io.bind_ortvalue_output(vo.name, ov)
        buffers.append((buf, e.dtype))
    sess.run_with_iobinding(io)
    return [buf.view(dtype) if _ort_raw(np.zeros(0, dtype)) else buf for buf, dtype in buffers]


def run_onnx_reference(case: Case, report: Report) -> None:
    """The ONNX reference implementation (onnx.reference): the baseline where onnxruntime cannot run a case
    (IR version or opset newer than it supports, ops it lacks)."""
    from onnx.reference import ReferenceEvaluator

    def load() -> Any:
        try:
            return ReferenceEvaluator(case.model)
        except NotImplementedError as exc:
            raise StageError(UNSUPPORTED, _first_line(exc)) from exc

    ref = _stage(report, "import", load)
    feeds = {vi.name: v for vi, v in zip(case.model.graph.input, case.inputs, strict=False)}
    got = _stage(report, "run", lambda: ref.run(None, feeds))
    _check(report, case, got)


def _check(report: Report, case: Case, got: Sequence[Any]) -> None:
    report("compare")
    why = compare_outputs(got, case.outputs, case.rtol, case.atol)
    if why:
        raise StageError(MISMATCH, why)


def _to_tvm(value: Any) -> Any:
    import tvm

    if isinstance(value, list | tuple):
        return tuple(_to_tvm(v) for v in value)
    if value is None:
        return None
    return tvm.runtime.tensor(np.asarray(value))


def _from_tvm(value: Any) -> Any:
    if hasattr(value, "numpy"):
        return value.numpy()
    if type(value).__name__ == "Shape":  # a shape-valued output (ONNX Shape) comes back as a Shape of ints
        return np.asarray(list(value), dtype=np.int64)
    if isinstance(value, list | tuple) or type(value).__name__ in ("Array", "List", "Tuple"):
        return [_from_tvm(v) for v in value]
    if isinstance(value, int | float | bool | np.generic):
        return np.asarray(value)
    return value


def run_tvm_model(
    model: onnx.ModelProto, inputs: Sequence[Any], report: Report, converters: dict | None = None
) -> list[Any]:
    """Import (with optional extra converters), compile for llvm, run on the Relax VM; returns flat outputs."""
    import tvm
    from tvm import relax

    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    def load() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return from_onnx_with_converters(model, converters, keep_params_in_input=False)
            except tvm.error.OpNotImplemented as exc:
                if "not supported for frontend ONNX" in str(exc):
                    raise StageError(UNSUPPORTED, _first_line(exc)) from exc
                raise

    mod = _stage(report, "import", load)
    ex = _stage(report, "compile", lambda: build_executable(mod, tvm.target.Target({"kind": "llvm"})))

    def run() -> list[Any]:
        vm = relax.VirtualMachine(ex, tvm.cpu())
        args = [_to_tvm(v) for v in inputs]
        out = vm["main"](*args)
        res = _from_tvm(out)
        return res if isinstance(res, list) else [res]

    return _stage(report, "run", run)


def run_tvm(case: Case, report: Report) -> None:
    _check(report, case, run_tvm_model(case.model, case.inputs, report))


def run_tvm_static(case: Case, report: Report) -> None:
    model, inputs, _ = make_static(case.model, case.inputs)
    _check(report, case, run_tvm_model(model, inputs, report))


def _pack_prepass(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold static shapes and static-length sequences, inline the Ifs whose condition is then constant, unroll the
    Loops/Scans whose iterations are then known, fold what the bodies brought."""
    from harmonizer_deploy.frontend.branch import inline_constant_ifs
    from harmonizer_deploy.frontend.fold import fold_static_shapes
    from harmonizer_deploy.frontend.loop import unroll_loops
    from harmonizer_deploy.frontend.sequence import expand_static_sequences

    model, unrolled = unroll_loops(inline_constant_ifs(fold_static_shapes(expand_static_sequences(model)[0])))
    return fold_static_shapes(expand_static_sequences(model)[0]) if unrolled.unrolled else model


def run_tvm_pack(case: Case, report: Report) -> None:
    from harmonizer_deploy.frontend.pack import CONVERTERS
    from harmonizer_deploy.frontend.sequence import sequence_inputs_as_tensors

    model, inputs, _ = make_static(case.model, case.inputs)
    model, inputs = sequence_inputs_as_tensors(model, inputs)  # the case's sequence lengths, like fixed dims
    model = _stage(report, "import", lambda: _pack_prepass(model))
    _check(report, case, run_tvm_model(model, inputs, report, CONVERTERS))


RUNNERS: dict[str, str] = {
    "onnxruntime": f"{__name__}:run_onnxruntime",
    "tvm": f"{__name__}:run_tvm",
    "tvm_static": f"{__name__}:run_tvm_static",
    "tvm_pack": f"{__name__}:run_tvm_pack",
    "onnx_reference": f"{__name__}:run_onnx_reference",
}


def _resolve(spec: str) -> Callable[[Case, Report], None]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _worker_entry(read_fd: int, write_fd: int) -> None:
    """Entry point of a worker subprocess (see _Slot.start)."""
    _worker_main(Connection(read_fd, writable=False), Connection(write_fd, readable=False))


def _worker_main(conn: Connection, out: Connection) -> None:
    """Loop: receive (variant spec, case), report stages, send back (category, detail)."""
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")

    def report(stage: str) -> None:
        out.send(("stage", stage))

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        spec, case = msg
        try:
            _resolve(spec)(case, report)
            result = (PASS, "")
        except StageError as exc:
            result = (exc.category, exc.detail)
        except Exception as exc:
            result = (RUNTIME_ERROR, _first_line(exc) + " | " + traceback.format_exc(limit=1).splitlines()[-1])
        out.send(("result", result))


# ------------------------------------------------------------------------------------- the scheduler


@dataclass
class Task:
    case: Case
    variant: str
    spec: str


@dataclass
class _Slot:
    """One worker process, talking pickles over two pipes (no re-import of the caller's __main__)."""

    proc: subprocess.Popen | None = None
    conn: Connection | None = None
    out: Connection | None = None
    task: Task | None = None
    started: float = 0.0
    stage: str = "import"

    def start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__} as m; m._worker_entry({to_child_r}, {from_child_w})"],
            pass_fds=(to_child_r, from_child_w),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.out = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exitcode(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        for c in (self.conn, self.out):
            if c is not None:
                c.close()
        self.proc, self.conn, self.out = None, None, None

    def stop(self) -> None:
        if self.alive() and self.out is not None:
            try:
                self.out.send(None)
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


def execute(
    tasks: Sequence[Task],
    jobs: int,
    timeout_s: float,
    on_result: Callable[[Task, str, str, float], None],
) -> None:
    """Run tasks on `jobs` worker processes; a crash or hang is recorded for that task and the worker replaced."""
    pending = list(reversed(tasks))
    slots = [_Slot() for _ in range(max(1, min(jobs, len(tasks))))]
    try:
        while pending or any(s.task for s in slots):
            for slot in slots:
                if slot.task is None and pending:
                    if not slot.alive():
                        slot.kill()
                        slot.start()
                    slot.task = pending.pop()
                    slot.started, slot.stage = time.monotonic(), "import"
                    slot.out.send((slot.task.spec, slot.task.case))
            busy = [s for s in slots if s.task is not None]
            now = time.monotonic()
            wait_s = max(0.0, min(s.started + timeout_s - now for s in busy))
            ready = wait([s.conn for s in busy], timeout=wait_s)
            for slot in busy:
                task = slot.task
                assert task is not None
                if slot.conn in ready:
                    try:
                        while slot.conn.poll():
                            kind, payload = slot.conn.recv()
                            if kind == "stage":
                                slot.stage = payload
                            else:
                                on_result(task, payload[0], payload[1], time.monotonic() - slot.started)
                                slot.task = None
                                break
                    except (EOFError, OSError):
                        code = slot.exitcode()
                        why = f"worker died during {slot.stage} (exit code {code})"
                        category = STAGE_CATEGORY.get(slot.stage, RUNTIME_ERROR)
                        on_result(task, category, why, time.monotonic() - slot.started)
                        slot.task = None
                        slot.kill()
                elif time.monotonic() - slot.started >= timeout_s:
                    on_result(task, TIMEOUT, f"no result after {timeout_s:g}s during {slot.stage}", timeout_s)
                    slot.task = None
                    slot.kill()
    finally:
        for slot in slots:
            slot.stop()


# ------------------------------------------------------------------------------------------ journal


def _journal_key(case: str, variant: str) -> str:
    return f"{case}\t{variant}"


def read_journal(path: Path, fingerprint: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Results already recorded for this environment (a changed TVM / onnx / pack invalidates them)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run
        if rec.get("fingerprint") == fingerprint.get(rec.get("variant", "")):
            done[_journal_key(rec["case"], rec["variant"])] = rec
    return done


def fingerprints() -> dict[str, str]:
    """Per-variant identity of what produced a result, so resuming never mixes environments."""
    import hashlib
    from importlib.metadata import version

    base = f"v{JOURNAL_VERSION} onnx={onnx.__version__}"
    tvm_v = version("apache-tvm")
    frontend = Path(__file__).parents[1] / "frontend"
    pack_src = b"".join(p.read_bytes() for p in sorted(frontend.glob("*.py")))
    pack = hashlib.sha256(pack_src).hexdigest()[:12]
    return {
        "onnx_reference": base,
        "onnxruntime": f"{base} ort={version('onnxruntime')}",
        "tvm": f"{base} tvm={tvm_v}",
        "tvm_static": f"{base} tvm={tvm_v}",
        "tvm_pack": f"{base} tvm={tvm_v} pack={pack}",
    }


# ------------------------------------------------------------------------------------------ planning


def pack_keys() -> set[tuple[str, str]]:
    from harmonizer_deploy.frontend.pack import CONVERTERS

    return set(CONVERTERS)


def _graph_keys(graph: onnx.GraphProto) -> set[tuple[str, str]]:
    from harmonizer_deploy.frontend.hook import normalize_domain

    keys = set()
    for node in graph.node:
        keys.add((normalize_domain(node.domain), node.op_type))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                keys |= _graph_keys(attr.g)
            for sub in attr.graphs:
                keys |= _graph_keys(sub)
    return keys


def plan(case: Case, variants: Sequence[str], pack: set[tuple[str, str]]) -> dict[str, str]:
    """Which variants must really run, and which are by construction the same as another.

    "tvm_static" with nothing to bake is the as-is model; "tvm_pack" on a model with no op the pack
    converts imports exactly as "tvm_static" does. Returns {variant: variant whose result it reuses}.
    """
    alias: dict[str, str] = {}
    if "tvm_static" in variants and "tvm" in variants and not make_static(case.model, case.inputs)[2]:
        alias["tvm_static"] = "tvm"
    from harmonizer_deploy.frontend.hook import untyped_input

    # the pack's pre-passes start from these (fold, If inlining, unroll, static sequences) and from sequence-typed
    # inputs (which the pack's import also types differently: frontend/hook.py)
    folds = {("", "Shape"), ("", "Size"), ("", "Loop"), ("", "Scan"), ("", "If"), ("", "SequenceConstruct"),
             ("", "SequenceEmpty")}
    sequences = any(vi.type.HasField("sequence_type") or untyped_input(vi) for vi in case.model.graph.input)
    if ("tvm_pack" in variants and "tvm_static" in variants and not sequences
            and not (_graph_keys(case.model.graph) & (pack | folds))):
        alias["tvm_pack"] = alias.get("tvm_static", "tvm_static")
    return alias


# ---------------------------------------------------------------------------------------------- API


@dataclass
class CoverageResult:
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def run_coverage(
    patterns: Sequence[str] = (),
    jobs: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    journal: Path | None = None,
    fresh: bool = False,
    variants: Sequence[str] = VARIANTS,
    runners: dict[str, str] | None = None,
    cases: Sequence[Case] | None = None,
    progress: Callable[[int, int, Task, str], None] | None = None,
) -> CoverageResult:
    """Run the node tests through every variant; returns per-case categories.

    `runners` maps variant name -> "module:function" (defaults to RUNNERS) so other backends, or tests,
    can plug in. `journal` makes the run resumable: finished (case, variant) results are kept there.
    """
    runners = {**RUNNERS, **(runners or {})}
    unknown = [v for v in variants if v not in runners]
    if unknown:
        raise HarmonizerError(f"unknown coverage variant(s): {', '.join(unknown)}", f"use {', '.join(runners)}")
    jobs = jobs or max(1, os.cpu_count() or 1)
    all_cases = list(cases) if cases is not None else collect_cases(patterns)
    if not all_cases:
        raise HarmonizerError(f"no ONNX node test matches {list(patterns)}", "check --filter (glob or op name)")
    fps = fingerprints()
    for v in variants:
        fps.setdefault(v, f"v{JOURNAL_VERSION} {runners[v]}")
    done = {} if (fresh or journal is None) else read_journal(journal, fps)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        if fresh and journal.exists():
            journal.unlink()
    pack = pack_keys() if "tvm_pack" in variants else set()

    aliases: dict[str, dict[str, str]] = {}
    tasks: list[Task] = []
    for case in all_cases:
        aliases[case.name] = plan(case, variants, pack)
        for v in variants:
            if v in aliases[case.name] or _journal_key(case.name, v) in done:
                continue
            tasks.append(Task(case, v, runners[v]))
    # Slow variants first keeps the tail short; TVM compiles dominate.
    tasks.sort(key=lambda t: (t.variant == "onnxruntime", t.case.name))

    handle = journal.open("a") if journal is not None else None
    finished = 0
    start = time.monotonic()

    def on_result(task: Task, category: str, detail: str, seconds: float) -> None:
        nonlocal finished
        rec = {
            "case": task.case.name,
            "variant": task.variant,
            "status": category,
            "detail": detail,
            "seconds": round(seconds, 2),
            "fingerprint": fps[task.variant],
        }
        done[_journal_key(task.case.name, task.variant)] = rec
        if handle is not None:
            handle.write(json.dumps(rec) + "\n")
            handle.flush()
        finished += 1
        if progress:
            progress(finished, len(tasks), task, category)

    try:
        execute(tasks, jobs, timeout_s, on_result)
    finally:
        if handle is not None:
            handle.close()

    result = CoverageResult()
    for case in all_cases:
        entry: dict[str, Any] = {"op": case.op, "expanded": case.expanded}
        for v in variants:
            src = aliases[case.name].get(v, v)
            rec = done[_journal_key(case.name, src)]
            entry[v] = {"status": rec["status"], "detail": rec["detail"]}
            if src != v:
                entry[v]["same_as"] = src
        result.cases[case.name] = entry
    result.meta = {
        "cases": len(all_cases),
        "tasks_run": len(tasks),
        "jobs": jobs,
        "timeout_s": timeout_s,
        "wall_s": round(time.monotonic() - start, 1),
        "versions": _versions(),
    }
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("apache-tvm", "onnx", "onnxruntime", "numpy")} | {
        "python": sys.version.split()[0]
    }


def tally(cases: dict[str, dict[str, Any]], variants: Iterable[str] = VARIANTS) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for v in variants:
        counts = dict.fromkeys(CATEGORIES, 0)
        for entry in cases.values():
            if v in entry:
                counts[entry[v]["status"]] += 1
        out[v] = counts
    return out


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


__all__ = [
    "CATEGORIES",
    "VARIANTS",
    "Case",
    "CoverageResult",
    "collect_cases",
    "compare_outputs",
    "make_static",
    "run_coverage",
    "tally",
    "write_json",
]

"""Guards for the TVM we pin: fail loudly when a version or a private API we rely on moves."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest


def test_tvm_and_ffi_are_the_pinned_versions():
    assert version("apache-tvm") == "0.27.0.post1"
    # 0.1.15.x segfaults in tvm.ir.save_json on any TIR object (MetaSchedule's JSON database dies with it)
    assert version("apache-tvm-ffi") == "0.1.14.post1"


def test_save_json_on_tir_does_not_crash():
    """Run in a subprocess: with the bad FFI the interpreter segfaults instead of raising."""
    code = (
        "import tvm\nfrom tvm import te\n"
        "a = te.placeholder((4,), name='a'); b = te.compute((4,), lambda i: a[i] + 1.0, name='b')\n"
        "f = te.create_prim_func([a, b])\ntext = tvm.ir.save_json(f)\n"
        "assert tvm.ir.load_json(text).same_as(f) or 'PrimFunc' in text\nprint('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_tvm_apis_we_rely_on_exist():
    import tvm
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.target import codegen

    assert callable(from_onnx) and callable(detach_params)
    assert isinstance(codegen.llvm_get_system_cpu(), str) and codegen.llvm_get_system_cpu()
    assert callable(relax.get_default_pipeline) and callable(tvm.compile)
    assert "relax_pipeline" in tvm.compile.__code__.co_varnames, "tvm.compile lost its relax_pipeline argument"
    assert callable(tvm.runtime.tensor) and callable(tvm.runtime.load_module)
    assert hasattr(relax, "VirtualMachine")
    assert tvm.get_global_func("target.build.llvm", allow_missing=True) is not None
    target = tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
    assert target.kind.name == "llvm"


def test_tuning_relies_on_cpu_pipeline_pass_lists():
    """The CPU pipeline is TVM's CPU pass lists with ConvertLayout/LiftTransformParams in front and
    MetaScheduleApplyDatabase + our schedules after fusion."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.transform import MetaScheduleApplyDatabase
    from tvm.s_tir import meta_schedule as ms

    for name in ("library_dispatch_passes", "legalize_passes", "dataflow_lower_passes", "finalize_passes"):
        assert callable(getattr(cpu, name)), f"tvm.relax.backend.cpu_generic.pipeline.{name} moved"
    assert callable(MetaScheduleApplyDatabase)
    for name in ("extract_tasks", "extracted_tasks_to_tune_contexts"):
        assert callable(getattr(ms.relax_integration, name)), f"meta_schedule.relax_integration.{name} moved"
    assert callable(ms.tune_tasks) and hasattr(ms.database, "JSONDatabase")
    assert hasattr(ms.database.Database, "current")


def test_tvm_0_27_module_layout():
    """The brief's notes for 0.27: dlight and MetaSchedule live under tvm.s_tir, emcc helpers in tvm.support."""
    pytest.importorskip("tvm.s_tir.dlight")
    import tvm.s_tir.meta_schedule
    import tvm.support.emcc  # noqa: F401


def test_cpu_schedule_relies_on_these_tvm_apis():
    """cpu_schedule.py and the cpu pipeline: if one of these moves, the hand schedules silently stop applying."""
    import tvm
    from tvm import relax, s_tir, tirx

    for name in ("ConvertLayout", "LiftTransformParams", "Normalize"):
        assert callable(getattr(relax.transform, name)), f"relax.transform.{name} moved"
    for name in ("get_sblock", "get_child_blocks", "get_producers", "get_output_blocks", "get_loops", "compute_inline",
                 "compute_at", "reverse_compute_at", "cache_write", "set_scope", "split", "fuse", "reorder",
                 "parallel", "unroll", "vectorize", "decompose_reduction"):
        assert callable(getattr(s_tir.Schedule, name, None)), f"tvm.s_tir.Schedule.{name} moved"
    assert hasattr(tirx, "PrimFunc") and hasattr(tirx, "IntImm")
    assert tvm.get_global_func("runtime.NumThreads", allow_missing=True) is not None


def test_winograd_relies_on_these_tvm_apis():
    """winograd.py builds its kernels in TE and rewrites Relax calls with a PyExprMutator; the schedule reads
    block write regions and proves shapes equal with the symbolic analyzer."""
    from tvm import relax, sym, te, tirx

    for name in ("compute", "placeholder", "reduce_axis", "sum", "create_prim_func"):
        assert callable(getattr(te, name, None)), f"tvm.te.{name} moved"
    for name in ("Select", "if_then_else", "all", "const"):
        assert callable(getattr(tirx, name, None)), f"tvm.tirx.{name} moved"
    assert callable(getattr(relax.expr_functor, "mutator", None)) and hasattr(relax, "PyExprMutator")
    for name in ("emit_te", "update_func", "get"):
        assert callable(getattr(relax.BlockBuilder, name, None)), f"relax.BlockBuilder.{name} moved"
    analyzer = sym.Analyzer()
    n = tirx.Var("n", "int64")
    assert analyzer.can_prove_equal(analyzer.simplify(n // 2 * 2 + n % 2), n)
    data = te.placeholder((n, 4), name="x")
    out = te.compute((n, 4), lambda i, j: data[i, j] * 2, name="y")
    from tvm import s_tir

    sch = s_tir.Schedule(te.create_prim_func([data, out]))
    region = sch.get(sch.get_sblock("y")).writes[0]
    assert len(region.source.shape) == 2, "TensorRegion.source (the written buffer) moved"

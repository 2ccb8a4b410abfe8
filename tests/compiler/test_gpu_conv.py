"""The register-tiled direct convolution rule (compiler/gpu/conv.py) on tiny Relax modules shaped like the
harmonizer's layers: symbolic batch and time, 46 pitches, NCHW, fused bias/residual/ReLU epilogues."""

from __future__ import annotations

import pytest

from harmonizer_deploy.core.errors import HarmonizerError


def _fused(build, target):
    """Legalize + fuse a Relax module built by `build(bb, x)` the way the gpu pipeline does."""
    from tvm import relax, tirx

    batch, time = tirx.Var("batch", "int64"), tirx.Var("time", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, 8, time, 46), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    mod = bb.get()
    with target:
        for p in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                  relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()):
            mod = p(mod)
    return mod


def _const(shape):
    import numpy as np
    from tvm import relax

    return relax.const(np.random.default_rng(0).standard_normal(shape).astype("float32"))


def _layers(bb, x):
    """3x3 conv (8 -> 64) + bias + ReLU, a residual 3x3 conv (64 -> 64), a 1x1 conv, a 2x2 'same' conv with
    asymmetric padding (64 -> 4) without epilogue, then a softmax over pitches (no convolution)."""
    from tvm import relax

    nn = relax.op.nn
    h = bb.emit(nn.relu(relax.op.add(nn.conv2d(x, _const((64, 8, 3, 3)), padding=1), _const((1, 64, 1, 1)))))
    r = bb.emit(nn.conv2d(h, _const((64, 64, 3, 3)), padding=1))
    h = bb.emit(nn.relu(relax.op.add(relax.op.add(r, _const((1, 64, 1, 1))), h)))
    h = bb.emit(nn.conv2d(h, _const((64, 64, 1, 1))))
    h = bb.emit(nn.conv2d(h, _const((4, 64, 2, 2)), padding=(0, 0, 1, 1)))
    return nn.softmax(h, axis=3)


def _webgpu():
    from harmonizer_deploy.compiler.targets import load_target

    return load_target("webgpu").tvm_target()


def test_every_conv_gets_the_direct_conv_rule_and_the_rest_fallback():
    from harmonizer_deploy.compiler.gpu.schedule import per_function_schedule
    from harmonizer_deploy.compiler.scheduling import ScheduleReport

    target = _webgpu()
    mod = _fused(_layers, target)
    with target:
        scheduled = per_function_schedule(["DirectConv2d", "Fallback"], report=(report := ScheduleReport()))(mod)
    convs = {name: rule for name, rule in report.functions.items() if "conv2d" in name}
    others = {name: rule for name, rule in report.functions.items() if "conv2d" not in name}
    assert len(convs) == 4 and set(convs.values()) == {"DirectConv2d"}, report.functions
    assert others and set(others.values()) == {"Fallback"}, report.functions
    assert report.rule_errors == {}
    text = scheduled[next(iter(convs))].script()
    # one workgroup per output row, registers for the accumulators, loaded weights and padded inputs
    assert 'thread="blockIdx.x"' in text and 'thread="threadIdx.x"' in text
    # rows get their own grid axis: no thread re-derives its row by dividing by the symbolic row count
    assert 'T.thread_binding(time, thread="blockIdx.x")' in text and "// time" not in text and "% time" not in text
    assert text.count('scope="local"') >= 3 and "T.unroll" in text


def test_workgroups_fit_webgpu_limits_and_threads_have_register_tiles():
    """<= 256 invocations per workgroup (WebGPU's default limit), each computing several outputs."""
    import re

    from harmonizer_deploy.compiler.gpu.conv import DirectConv2d
    from harmonizer_deploy.compiler.gpu.schedule import lowering_problems

    target = _webgpu()
    mod = _fused(_layers, target)
    for gvar, func in mod.functions_items():
        if "conv2d" not in gvar.name_hint:
            continue
        sch = DirectConv2d().apply(func, target, False)
        assert sch is not None, gvar.name_hint
        scheduled = sch.mod["main"]
        assert lowering_problems(gvar.name_hint, scheduled, target) == []
        text = scheduled.script()
        threads = [int(n) for n in re.findall(r'T\.thread_binding\(T\.int64\((\d+)\), thread="threadIdx\.x"\)', text)]
        assert threads and max(threads) <= 256, (gvar.name_hint, threads)
        out_channels = int(re.findall(r"T\.Buffer\(\(batch, T\.int64\((\d+)\), time", func.script())[-1])
        assert threads[0] * 2 <= out_channels * 46, "each thread computes more than one output"


def test_not_a_convolution_is_left_to_the_next_rule():
    from tvm import relax

    from harmonizer_deploy.compiler.gpu.conv import DirectConv2d

    target = _webgpu()
    mod = _fused(lambda bb, x: relax.op.nn.softmax(x, axis=3), target)
    for _, func in mod.functions_items():
        if type(func).__name__ == "PrimFunc":
            assert DirectConv2d().apply(func, target, False) is None


def test_the_rule_is_named_and_unknown_names_list_it():
    from harmonizer_deploy.compiler.gpu.schedule import make_rules

    assert [name for name, _ in make_rules(["DirectConv2d", "Fallback"])] == ["DirectConv2d", "Fallback"]
    with pytest.raises(HarmonizerError) as info:
        make_rules(["Conv"])
    assert "'Conv'" in info.value.one_line() and "DirectConv2d" in info.value.one_line()


def test_a_width_the_tile_does_not_divide_guards_only_the_store():
    """47 columns in tiles of 2: the multiply-adds run unguarded on zero padding, the epilogue's store is
    bounded to the real columns."""
    import re

    from tvm import relax, tirx

    from harmonizer_deploy.compiler.gpu.conv import DirectConv2d
    from harmonizer_deploy.compiler.gpu.schedule import lowering_problems

    target = _webgpu()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, tirx.Var("time", "int64"), 47), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(relax.op.nn.conv2d(x, _const((16, 8, 3, 3)), padding=1)))
        bb.emit_func_output(out)
    mod = bb.get()
    with target:
        for p in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                  relax.transform.FuseOps(), relax.transform.FuseTIR()):
            mod = p(mod)
    (func,) = [f for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    scheduled = DirectConv2d().apply(func, target, False).mod["main"]
    assert lowering_problems("conv", scheduled, target) == []
    text = scheduled.script()
    assert 'T.thread_binding(T.int64(48), thread="threadIdx.x")' in text  # 2 channel groups x 24 column pairs
    guards = re.findall(r"T\.where\((.*)\)", text)
    assert any("< T.int64(47)" in g for g in guards), guards
    update = text[text.index('T.sblock("conv2d_nchw_update")'):]
    assert "T.where" not in update[:update.index("T.reads")]


@pytest.mark.parametrize(("dilation", "loads_per"), [(1, "for rc, ry in T.grid"), (8, "for rc, ry, rx in T.grid")])
def test_dilated_convs_load_per_tap(dilation, loads_per):
    """Dilated along the columns, the inputs are loaded per kernel tap instead of a row segment spanning the
    dilation (66 values for 6 used at dilation 32)."""
    from tvm import relax

    from harmonizer_deploy.compiler.gpu.conv import DirectConv2d
    from harmonizer_deploy.compiler.gpu.schedule import lowering_problems

    target = _webgpu()

    def dilated(bb, x):
        return relax.op.nn.conv2d(x, _const((16, 8, 3, 3)), padding=(dilation, dilation),
                                  dilation=(dilation, dilation))

    mod = _fused(dilated, target)
    (func,) = [f for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    sch = DirectConv2d().apply(func, target, False)
    assert sch is not None
    assert lowering_problems("dilated", sch.mod["main"], target) == []
    assert loads_per in sch.mod["main"].script()


def test_depthwise_convs_are_left_to_the_next_rule():
    """group_conv2d_nchw (the Doodle's depthwise layers) is not this rule's: its kernels made SwiftShader lose
    the WebGPU device at pipeline creation; per_function_schedule gives them Fallback."""
    from tvm import relax

    from harmonizer_deploy.compiler.gpu.conv import DirectConv2d
    from harmonizer_deploy.compiler.gpu.schedule import per_function_schedule
    from harmonizer_deploy.compiler.scheduling import ScheduleReport

    target = _webgpu()
    mod = _fused(lambda bb, x: relax.op.nn.conv2d(x, _const((8, 1, 3, 3)), padding=1, groups=8), target)
    (func,) = [f for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    assert DirectConv2d().apply(func, target, False) is None
    with target:
        per_function_schedule(["DirectConv2d", "Fallback"], report=(report := ScheduleReport()))(mod)
    assert set(report.functions.values()) == {"Fallback"}, report.functions

"""Every weight the Relax import hands on is a plain identifier: TVM's WebGPU code generator writes kernel
parameter names into WGSL unchanged (`a/b:0` is a syntax error there), also for weights that the pre-import
preparation makes itself (the Bach Doodle's folded batch-norm scales: `…/batchnorm/mul_1:0_weight`)."""

from __future__ import annotations

import numpy as np


def test_weights_made_during_preparation_are_identifiers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harmonizer_deploy.compiler.relax_import import import_onnx

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "s")
    # TensorFlow-style value names: the conv's scale folds into a new weight named after the Mul's output
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["conv0/Conv2D:0"], pads=[1, 1, 1, 1]),
         helper.make_node("Mul", ["conv0/Conv2D:0", "s"], ["conv0_bn/batchnorm/mul_1:0"]),
         helper.make_node("Relu", ["conv0_bn/batchnorm/mul_1:0"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weight, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    _, names, arrays, _ = import_onnx(model)
    assert arrays and len(names) == len(arrays)
    assert all(name.isidentifier() for name in names), names

"""Standard-op replacements for the custom layers (the `rewrite` strategy), same weights, same results.

They avoid what breaks the chain: no TF op without a tf2onnx handler, and no Tensordot or einsum (Keras'
3-D @ 2-D matmul and tf2onnx's einsum both become Shape→Gather→Concat→Reshape chains, which TVM rejects with
dynamic batch/time); a weight lifted to [1, C, D] makes a batched MatMul that ONNX broadcasts directly.
"""

from __future__ import annotations

import keras

from harmonizer_deploy.music.custom_layers import (
    PACKAGE,
    MelodyHarmonyAttention,
    melody_harmony_attention,
    pitch_range_bias,
)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MelodyHarmonyAttentionRewritten(MelodyHarmonyAttention):
    """Same weights and maths; the projections see the weights as [1, C, D] (a batched MatMul, no Tensordot)."""

    def call(self, h):
        ops = keras.ops
        return melody_harmony_attention(h, ops.expand_dims(self.wq, 0), ops.expand_dims(self.wk, 0),
                                        ops.expand_dims(self.wv, 0), self.key_dim)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PitchMaskedSoftmaxRewritten(keras.layers.Layer):
    def call(self, logits):
        return keras.ops.softmax(keras.ops.add(logits, keras.ops.convert_to_tensor(pitch_range_bias())), axis=2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CausalLogSumExpPoolRewritten(keras.layers.Layer):
    """log(cumsum(exp(h − m))) + m with m the max over time: CumSum, Exp, Log and ReduceMax only."""

    def call(self, h):
        ops = keras.ops
        m = ops.max(h, axis=1, keepdims=True)
        return h + ops.log(ops.cumsum(ops.exp(h - m), axis=1)) + m

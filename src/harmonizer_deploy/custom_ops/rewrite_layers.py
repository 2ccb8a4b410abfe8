"""Standard-op replacements for the custom layers (the `rewrite` strategy), same weights, same results.

They avoid what breaks the chain: no TF op without a tf2onnx handler, and no Tensordot or einsum (Keras'
3-D @ 2-D matmul and tf2onnx's einsum both become Shape→Gather→Concat→Reshape chains, which TVM rejects with
dynamic batch/time); a weight lifted to [1, C, D] makes a batched MatMul that ONNX broadcasts directly.
"""

from __future__ import annotations

import keras
import numpy as np

from .layers import PACKAGE, pitch_range_bias


@keras.saving.register_keras_serializable(package=PACKAGE)
class MelodyHarmonyAttentionRewritten(keras.layers.Layer):
    def __init__(self, key_dim: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key_dim = key_dim

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.wq = self.add_weight(shape=(channels, self.key_dim), name="query")
        self.wk = self.add_weight(shape=(channels, self.key_dim), name="key")
        self.wv = self.add_weight(shape=(channels, channels), name="value")

    def call(self, h):
        ops = keras.ops
        harmony = ops.mean(h, axis=2)
        melody = ops.max(h, axis=2)
        q = ops.matmul(harmony, ops.expand_dims(self.wq, 0))
        k = ops.matmul(melody, ops.expand_dims(self.wk, 0))
        v = ops.matmul(melody, ops.expand_dims(self.wv, 0))
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) * np.float32(1.0 / np.sqrt(self.key_dim))
        context = ops.matmul(ops.softmax(scores, axis=-1), v)
        return h + ops.expand_dims(context, 2)

    def get_config(self) -> dict:
        return {**super().get_config(), "key_dim": self.key_dim}


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

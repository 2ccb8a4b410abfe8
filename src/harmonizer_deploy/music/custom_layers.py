"""The harmonizer variants' custom Keras layers: what the registry knows how to carry through conversion.

Each is registered serializable so `.keras` files that use them load. Their `call`s are the reference
semantics every strategy (rewrite, custom-domain op, decomposition) must reproduce.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, VOICE_RANGES, VOICES

PACKAGE = "harmonizer_deploy"
MASKED_LOGIT = -1e9


def pitch_range_bias() -> np.ndarray:
    """[pitch, voice] additive bias: 0 inside each voice's SATB range, -1e9 outside (probability exactly 0)."""
    bias = np.full((NUM_PITCHES, len(VOICES)), MASKED_LOGIT, dtype=np.float32)
    for v, voice in enumerate(VOICES):
        low, high = VOICE_RANGES[voice]
        bias[low - MIN_PITCH : high - MIN_PITCH + 1, v] = 0.0
    return bias


def melody_harmony_attention(h, wq, wk, wv, key_dim: int):
    """The attention itself, shared by the custom layer and its standard-op rewrite (which passes the weights
    lifted to [1, C, D] so the projections are batched MatMuls)."""
    ops = keras.ops
    harmony = ops.mean(h, axis=2)
    melody = ops.max(h, axis=2)
    q = ops.matmul(harmony, wq)
    k = ops.matmul(melody, wk)
    v = ops.matmul(melody, wv)
    scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) * np.float32(1.0 / np.sqrt(key_dim))
    context = ops.matmul(ops.softmax(scores, axis=-1), v)
    return h + ops.expand_dims(context, 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MelodyHarmonyAttention(keras.layers.Layer):
    """Attention over time aligning harmony and melody positions.

    Queries come from each step's pitch-averaged features (the harmony sounding there), keys and values from
    the pitch-max features (the salient melodic line) of every step; the attended context is added back at
    every pitch. h: [batch, time, pitch, channels] → same shape.
    """

    def __init__(self, key_dim: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key_dim = key_dim

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.wq = self.add_weight(shape=(channels, self.key_dim), name="query", initializer="glorot_uniform")
        self.wk = self.add_weight(shape=(channels, self.key_dim), name="key", initializer="glorot_uniform")
        self.wv = self.add_weight(shape=(channels, channels), name="value", initializer="glorot_uniform")

    def call(self, h):
        return melody_harmony_attention(h, self.wq, self.wk, self.wv, self.key_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "key_dim": self.key_dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PitchMaskedSoftmax(keras.layers.Layer):
    """Softmax over the pitch axis per voice, with pitches outside the voice's SATB range given probability 0.

    logits: [batch, time, pitch, voice] → probabilities of the same shape.
    """

    def call(self, logits):
        return keras.ops.softmax(logits + pitch_range_bias(), axis=2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CausalLogSumExpPool(keras.layers.Layer):
    """Running soft maximum over past time steps (a note heard earlier keeps its evidence), added to h.

    Uses TF's CumulativeLogsumexp, an op tf2onnx has no handler for.
    """

    def call(self, h):
        return h + tf.math.cumulative_logsumexp(h, axis=1)

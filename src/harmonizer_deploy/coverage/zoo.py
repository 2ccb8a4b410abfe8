"""A zoo of small Keras models users bring, and their trip through the chain (the COVERAGE.md models table).

Each builder returns a Keras model; `save_zoo_model(name, dir)` saves it with seeded weights as `<name>.keras`
(built when needed, nothing committed). The models are tiny so the whole zoo goes convert → compile cpu →
verify in the default test run (tests/e2e/test_zoo.py) and in `harmonizer-deploy coverage --models`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

ZOO: dict[str, Callable[[], Any]] = {}
# Dynamic dims a model needs fixed before TVM can import it (`compile --fix-dim`): an unrolled recurrence needs
# its time length, and shape chains feeding a Reshape (GRU/attention/tf.roll) fold only with a fixed batch.
COMPILE_DIMS: dict[str, dict[str, int]] = {
    "gru": {"batch": 2},
    "lstm": {"batch": 2, "time": 8},
    "bidirectional_gru": {"batch": 2, "time": 8},
    "attention_block": {"batch": 2},
    "custom_roll_cumsum": {"batch": 2, "time": 8},
}
# Every zoo model goes through TVM. Keras 3's Bidirectional GRU reaches ONNX as two Loops (the registry's KerasGRU
# strategy replaces top-level GRU layers only, and tf2onnx's GRU rewriter matches neither half); with
# `--fix-dim time=N` their trip count is a constant and frontend/loop.py unrolls them. Without that dim, compile
# must fail in one line naming the node (op type) and the `--fix-dim` that fixes it: model → (dim, op).
NEEDS_FIX_DIM: dict[str, tuple[str, str]] = {"bidirectional_gru": ("time", "Loop")}


def _zoo(fn: Callable[[], Any]) -> Callable[[], Any]:
    ZOO[fn.__name__] = fn
    return fn


def _keras():
    import keras

    return keras


@_zoo
def gru():
    """A melody GRU on [batch, 32, 46] (fixed length, as a user exports it)."""
    keras = _keras()
    x = keras.Input((32, 46), name="melody")
    h = keras.layers.GRU(12, return_sequences=True)(x)
    return keras.Model(x, keras.layers.Dense(4, name="chords")(h))


@_zoo
def lstm():
    keras = _keras()
    x = keras.Input((None, 6), name="notes")
    h = keras.layers.LSTM(8)(x)
    return keras.Model(x, keras.layers.Dense(3, name="style")(h))


@_zoo
def bidirectional_gru():
    keras = _keras()
    x = keras.Input((None, 6), name="notes")
    h = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=True))(x)
    return keras.Model(x, keras.layers.Dense(2, name="tags")(h))


@_zoo
def attention_block():
    """A transformer block: MultiHeadAttention + residual + LayerNormalization + feed-forward."""
    keras = _keras()
    x = keras.Input((16, 12), name="frames")
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=6)(x, x)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([x, a]))
    f = keras.layers.Dense(12)(keras.layers.Dense(16, activation="relu")(h))
    return keras.Model(x, keras.layers.LayerNormalization(name="encoded")(keras.layers.Add()([h, f])))


@_zoo
def causal_conv1d():
    keras = _keras()
    x = keras.Input((None, 4), name="audio")
    h = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    return keras.Model(x, keras.layers.Conv1D(2, 1, name="frames")(h))


@_zoo
def embedding():
    """An integer token input indexing an embedding table."""
    keras = _keras()
    x = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(50, 8)(x)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(3, name="logits")(h))


@_zoo
def two_inputs_two_outputs():
    """A float feature vector and an int32 id sequence in; logits and a score out."""
    keras = _keras()
    features = keras.Input((8,), name="features")
    ids = keras.Input((None,), dtype="int32", name="ids")
    e = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    h = keras.layers.Concatenate()([keras.layers.Dense(6, activation="relu")(features), e])
    return keras.Model([features, ids], [keras.layers.Dense(3, name="logits")(h),
                                         keras.layers.Dense(1, activation="sigmoid", name="score")(h)])


@_zoo
def fixed_reshape():
    """Declares [batch, 32, 46, 8] and reshapes with the fixed length: it only accepts time = 32."""
    keras = _keras()
    x = keras.Input((32, 46, 8), name="pianoroll_mask")
    h = keras.layers.Reshape((32, 46 * 8))(x)
    h = keras.layers.Reshape((32, 46, 4))(keras.layers.Dense(46 * 4)(h))
    return keras.Model(x, keras.layers.Softmax(axis=2, name="probs")(h))


@_zoo
def dilated_separable_conv2d():
    keras = _keras()
    x = keras.Input((None, 12, 3), name="image")
    h = keras.layers.SeparableConv2D(8, 3, dilation_rate=(2, 4), padding="same", activation="relu")(x)
    h = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same")(h)
    return keras.Model(x, keras.layers.Conv2D(2, 1, name="map")(h))


@functools.cache
def roll_cumsum_layer() -> type:
    """A custom layer written with tf.roll and tf.math.cumsum (registered so its .keras file loads)."""
    keras = _keras()

    @keras.saving.register_keras_serializable(package="harmonizer_zoo")
    class RollCumsum(keras.layers.Layer):
        def call(self, x):
            import tensorflow as tf

            return tf.roll(x, shift=1, axis=1) + tf.math.cumsum(x, axis=1)

    return RollCumsum


@_zoo
def custom_roll_cumsum():
    keras = _keras()
    x = keras.Input((None, 5), name="series")
    h = roll_cumsum_layer()(name="roll_cumsum")(keras.layers.Dense(5)(x))
    return keras.Model(x, keras.layers.Dense(2, name="out")(h))


def save_zoo_model(name: str, directory: Path, seed: int = 0) -> Path:
    """Build zoo model `name` with seeded weights and save it as `<directory>/<name>.keras`."""
    keras = _keras()
    roll_cumsum_layer()  # registered before any .keras file using it is loaded
    keras.utils.set_random_seed(seed)
    path = Path(directory) / f"{name}.keras"
    ZOO[name]().save(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# The models table: each zoo model × stage, pass/fail and the first error line.

STAGES = ("convert", "TVM import", "compile cpu", "verify cpu", "wasm")
NOT_RUN = "not run"
ZOO_BEGIN = "<!-- zoo-models:begin (harmonizer-deploy coverage --models) -->"
ZOO_END = "<!-- zoo-models:end -->"


def _first_line(exc: BaseException) -> str:
    text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


def zoo_coverage(work_dir: Path, verify: Callable[..., Any], names: list[str] | None = None, wasm: bool = False
                 ) -> list[dict[str, Any]]:
    """Run each zoo model through convert → TVM import → compile cpu → verify cpu (→ wasm when asked): one row
    per model, `pass`/`fail`/`not run` per stage, and the first error line; a failed stage stops its model.

    `verify` is `harmonizer_deploy.verify` (passed in: verification is a sibling layer of coverage)."""
    import onnx

    from harmonizer_deploy.compiler.build import compile as compile_model
    from harmonizer_deploy.compiler.relax_import import import_onnx
    from harmonizer_deploy.conversion.convert import convert

    rows = []
    for name in names or sorted(ZOO):
        work = Path(work_dir) / name
        work.mkdir(parents=True, exist_ok=True)
        dims = COMPILE_DIMS.get(name)
        onnx_path = work / "model.onnx"
        steps = [
            ("convert", lambda n=name, w=work, p=onnx_path: convert(save_zoo_model(n, w), p)),
            ("TVM import", lambda p=onnx_path, d=dims: import_onnx(onnx.load(str(p)), d)),
            ("compile cpu", lambda p=onnx_path, w=work, d=dims: compile_model(p, "cpu", w / "cpu", fix_dims=d)),
            ("verify cpu", lambda w=work: _passed(verify(w / "cpu", "cpu", num_inputs=2, batch=2, time_steps=8))),
        ]
        if wasm:
            steps += [("wasm", lambda p=onnx_path, w=work, d=dims: wasm_stage(p, w, d, verify))]
        row: dict[str, Any] = {"model": name, "fix_dims": dims or {}, **{s: NOT_RUN for s in STAGES},
                               "first_error": ""}
        for stage, step in steps:
            try:
                step()
            except Exception as exc:  # a stage's failure is the table's content, not an error of this command
                row[stage] = "fail"
                row["first_error"] = f"{stage}: {_first_line(exc)}"
                break
            row[stage] = "pass"
        rows.append(row)
    return rows


def wasm_stage(onnx_path: Path, work: Path, fix_dims: dict[str, int] | None, verify: Callable[..., Any]) -> None:
    """The table's wasm column: compile for wasm, then verify in headless Chromium against onnxruntime (every
    input fed by name, every output compared); raises on a failure."""
    from harmonizer_deploy.compiler.build import compile as compile_model

    compile_model(onnx_path, "wasm", work / "wasm", fix_dims=fix_dims)
    _passed(verify(work / "wasm", "wasm", num_inputs=1, batch=2, time_steps=8))


def _passed(report: Any) -> None:
    if not report.passed:
        worst = max(report.outputs, key=lambda o: o.get("max_abs_err", 0.0))
        raise AssertionError(f"output {worst['name']} off by {worst.get('max_abs_err', float('nan')):.3g} "
                             f"(atol {worst.get('atol')})")


def render_zoo_table(rows: list[dict[str, Any]]) -> str:
    """The COVERAGE.md section: one row per zoo model, one column per stage."""
    lines = [
        ZOO_BEGIN,
        "## Zoo models: convert → TVM import → compile cpu → verify cpu → wasm",
        "",
        "Small Keras models users bring (`harmonizer_deploy/coverage/zoo.py`, seeded weights, built at run time),",
        "each verified against onnxruntime on inputs generated from its own signature. `--fix-dim` lists the",
        "dynamic dims fixed at compile (TVM needs them static there). Regenerate: `harmonizer-deploy coverage "
        "--models`.",
        "",
        "| model | " + " | ".join(STAGES) + " | --fix-dim | first error |",
        "|---|" + "---|" * (len(STAGES) + 2),
    ]
    for row in rows:
        dims = " ".join(f"{k}={v}" for k, v in row["fix_dims"].items()) or "–"
        error = row["first_error"].replace("|", "\\|") or "–"
        lines.append(f"| {row['model']} | " + " | ".join(row[s] for s in STAGES) + f" | {dims} | {error} |")
    lines += ["", ZOO_END]
    return "\n".join(lines) + "\n"


def write_zoo_section(markdown: Path, rows: list[dict[str, Any]]) -> None:
    """Put the zoo table into COVERAGE.md, replacing an earlier one (the rest of the file is left as it is)."""
    from harmonizer_deploy.core.artifacts import atomic_file

    section = render_zoo_table(rows)
    text = markdown.read_text() if markdown.is_file() else ""
    if ZOO_BEGIN in text and ZOO_END in text:
        head, rest = text.split(ZOO_BEGIN, 1)
        text = head + section + rest.split(ZOO_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with atomic_file(markdown) as tmp:
        tmp.write_text(text)

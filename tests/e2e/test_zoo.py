"""Every zoo model (tests/zoo.py) goes convert → compile cpu → verify, on inputs generated from its signature."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import harmonizer_deploy as hd
from browser_env import browser_missing
from harmonizer_deploy.cli import app
from zoo import COMPILE_DIMS, NEEDS_FIX_DIM, ZOO, save_zoo_model

cli = CliRunner()


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


def _chain(name: str, directory):
    """convert → compile cpu (once per model per session) → the artifact dir."""
    work = directory / name
    if not (work / "cpu" / "manifest.json").is_file():
        work.mkdir(exist_ok=True)
        keras_path = save_zoo_model(name, work)
        hd.convert(keras_path, work / "model.onnx")
        hd.compile(work / "model.onnx", "cpu", work / "cpu", fix_dims=COMPILE_DIMS.get(name))
    return work


@pytest.mark.parametrize("name", sorted(NEEDS_FIX_DIM))
def test_zoo_model_without_its_fixed_dim_names_the_node_and_the_fix(name, zoo_dir, tmp_path):
    """A Loop whose trip count is the dynamic time length cannot be unrolled: one line, the Loop node, the
    `--fix-dim` that fixes it, exit 2 (the zoo run itself compiles it with that dim fixed, and it verifies)."""
    dim, op = NEEDS_FIX_DIM[name]
    work = _chain(name, zoo_dir)
    flags = [a for d, v in COMPILE_DIMS[name].items() if d != dim for a in ("--fix-dim", f"{d}={v}")]
    res = cli.invoke(app, ["compile", str(work / "model.onnx"), "--target", "cpu", "-o", str(tmp_path / "out"),
                           *flags])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: TVM cannot import node ") and f"({op})" in line, line
    assert "cannot be unrolled" in line and f"--fix-dim {dim}=N" in line and "registry strategy" in line
    assert "\n" not in line and "Traceback" not in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_converts_compiles_and_verifies(name, zoo_dir):
    work = _chain(name, zoo_dir)
    sidecar = json.loads((work / "model.json").read_text())
    declared = sidecar["signature"]
    assert declared["inputs"] and declared["outputs"]
    report = hd.verify(work / "cpu", "cpu", num_inputs=2, batch=2, time_steps=8)
    assert report.passed, report.outputs
    assert [o["name"] for o in report.outputs] == [o["name"] for o in sidecar["outputs"]]


def test_fixed_declared_shape_is_kept_and_checked_at_that_shape(zoo_dir):
    work = _chain("fixed_reshape", zoo_dir)
    sidecar = json.loads((work / "model.json").read_text())
    assert sidecar["signature"]["inputs"][0]["shape"] == [None, 32, 46, 8]
    assert sidecar["inputs"][0]["shape"] == ["batch", 32, 46, 8]
    report = hd.verify(work / "cpu", "cpu", num_inputs=1, batch=2, time_steps=8)  # time is fixed: 32 wins
    assert report.passed and report.input_shapes == [[2, 32, 46, 8]]


def test_gru_on_a_fixed_length_melody(zoo_dir):
    work = _chain("gru", zoo_dir)
    sidecar = json.loads((work / "model.json").read_text())
    assert sidecar["signature"]["inputs"] == [{"name": "melody", "dtype": "float32", "shape": [None, 32, 46]}]
    assert hd.verify(work / "cpu", "cpu", num_inputs=1).input_shapes == [[2, 32, 46]]  # batch fixed at compile


def test_compile_names_the_node_tvm_cannot_take_and_the_fix(zoo_dir, tmp_path):
    """Without --fix-dim, the GRU's batch-dependent Reshape stops TVM's import: one line, node and fix, exit 2."""
    work = _chain("gru", zoo_dir)
    res = cli.invoke(app, ["compile", str(work / "model.onnx"), "--target", "cpu", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: TVM cannot import node ") and "(Reshape)" in line and "--fix-dim batch=N" in line
    assert "\n" not in line and "Traceback" not in line and not (tmp_path / "out").exists()


def test_embedding_indices_come_from_the_table_size(zoo_dir):
    import onnx

    from harmonizer_deploy.conversion.inputs import index_ranges

    work = _chain("embedding", zoo_dir)
    assert index_ranges(onnx.load(str(work / "model.onnx"))) == {"tokens": (0, 49)}
    assert json.loads((work / "model.json").read_text())["index_ranges"] == {"tokens": [0, 49]}


def test_two_inputs_one_int32_verify_generated_and_loaded(zoo_dir, tmp_path):
    work = _chain("two_inputs_two_outputs", zoo_dir)
    sidecar = json.loads((work / "model.json").read_text())
    assert [(i["name"], i["dtype"]) for i in sidecar["inputs"]] == [("features", "float32"), ("ids", "int32")]
    saved = tmp_path / "saved.npz"
    res = cli.invoke(app, ["verify", str(work / "cpu"), "--num-inputs", "2", "--save-inputs", str(saved),
                           "--val-range", "features=-2,2", "--json"])
    assert res.exit_code == 0, res.output
    assert {o["name"] for o in json.loads(res.output)["outputs"]} == {"logits", "score"}
    res = cli.invoke(app, ["verify", str(work / "cpu"), "--load-inputs", str(saved), "--json"])
    assert res.exit_code == 0, res.output
    # a hand-made file keyed by input name (one input set)
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "mine.npz", features=rng.normal(size=(4, 8)).astype(np.float32),
             ids=rng.integers(0, 20, (4, 5)).astype(np.int64))
    report = hd.verify(work / "cpu", "cpu", load_inputs_from=tmp_path / "mine.npz")
    assert report.passed and report.input_shapes == [[4, 8], [4, 5]]
    np.savez(tmp_path / "bad.npz", features=np.zeros((4, 7), np.float32), ids=np.zeros((4, 5), np.int32))
    res = cli.invoke(app, ["verify", str(work / "cpu"), "--load-inputs", str(tmp_path / "bad.npz")])
    assert res.exit_code == 2 and "features" in res.output and "Traceback" not in res.output
    res = cli.invoke(app, ["verify", str(work / "cpu"), "--val-range", "nosuch=0,1"])
    assert res.exit_code == 2 and "nosuch" in res.output


def test_music_and_debug_commands_refuse_another_model_in_one_line(zoo_dir, tmp_path):
    """harmonize/evaluate need the harmonizer's signature; bench and debug localize feed its one input: one line,
    exit 2."""
    from pathlib import Path

    work = _chain("two_inputs_two_outputs", zoo_dir)
    melody = Path(hd.__file__).parent / "music" / "samples" / "two-bars.mid"
    res = cli.invoke(app, ["harmonize", str(melody), "-o", str(tmp_path / "out.mid"), "--backend", "tensorflow",
                           "--model", str(work / "two_inputs_two_outputs.keras")])
    assert res.exit_code == 2 and "needs the harmonizer" in res.output and "features" in res.output
    assert not (tmp_path / "out.mid").exists()
    res = cli.invoke(app, ["harmonize", str(melody), "-o", str(tmp_path / "out.mid"), "--backend", "tvm-cpu",
                           "--build-dir", str(work)])
    assert res.exit_code == 2 and "needs the harmonizer" in res.output
    res = cli.invoke(app, ["bench", "--build-dir", str(work), "--backend", "onnxruntime", "--backend", "tvm-cpu",
                           "--out-dir", str(tmp_path / "bench")])
    assert res.exit_code == 2 and "bench times the harmonizer's input" in res.output
    assert not (tmp_path / "bench").exists()
    res = cli.invoke(app, ["debug", "localize", str(work / "cpu")])
    assert res.exit_code == 2 and "debug verify" in res.output and "Traceback" not in res.output


@pytest.mark.slow
@pytest.mark.skipif(browser_missing(page=False) is not None, reason=str(browser_missing(page=False)))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_compiles_for_wasm_and_verifies_in_chromium(name, zoo_dir):
    """The wasm column of the COVERAGE.md models table: the same stages `coverage --models --wasm` runs, every input
    fed by name and every output compared with onnxruntime in headless Chromium."""
    from harmonizer_deploy.coverage.zoo import wasm_stage

    work = _chain(name, zoo_dir)
    wasm_stage(work / "model.onnx", work, COMPILE_DIMS.get(name), hd.verify)  # raises on a miss
    assert (work / "wasm" / "manifest.json").is_file()

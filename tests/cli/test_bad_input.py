"""Issue 15 §4: bad input that used to reach "internal error" (exit 70) or a wrong answer. Each case is one
`error: <problem> — <fix>` line and exit 2, checked through the CLI. None needs a compiled model."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from hostile import assert_one_line_error, fake_artifact, melody_midi, tiny_onnx

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# --- MIDI melodies (harmonize reads the melody before it opens any backend) ---------------------------------

def test_midi_with_an_invalid_key_signature(tmp_path):
    import mido

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("key_signature", key="C"))
    track.append(mido.Message("note_on", note=60, velocity=80))
    track.append(mido.Message("note_off", note=60, time=480))
    mid.save(str(tmp_path / "key.mid"))
    data = bytearray((tmp_path / "key.mid").read_bytes())
    at = data.index(b"\xff\x59\x02")  # key signature meta event: sharps/flats byte, then the mode
    data[at + 3] = 100  # 100 sharps: mido raises KeySignatureError
    (tmp_path / "bad.mid").write_bytes(bytes(data))
    result = run("harmonize", tmp_path / "bad.mid", "-o", tmp_path / "out.mid")
    assert_one_line_error(result, "not a readable MIDI file", "100 sharps")
    assert not (tmp_path / "out.mid").exists()


def test_melody_below_midi_12(tmp_path):
    result = run("harmonize", melody_midi(tmp_path / "low.mid", (5, 7, 9)), "-o", tmp_path / "out.mid")
    assert_one_line_error(result, "pitch 5", "MIDI 12")


def test_melody_far_below_the_soprano_range_in_the_library():
    """The library path (notes from any source) refuses what no octave shift can place, instead of min([])."""
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.music.harmonize import soprano_shift

    with pytest.raises(HarmonizerError, match="four octaves"):
        soprano_shift(np.array([3.0, 5.0], dtype=np.float32))


def test_midi_with_zero_ticks_per_beat_says_so(tmp_path):
    result = run("harmonize", melody_midi(tmp_path / "tpb0.mid", ticks_per_beat=0), "-o", tmp_path / "out.mid")
    text = assert_one_line_error(result, "0 ticks per beat")
    assert "polyphonic" not in text


def test_drum_channel_only_midi_is_refused(tmp_path):
    result = run("harmonize", melody_midi(tmp_path / "drums.mid", (36, 38, 42), channel=9), "-o",
                 tmp_path / "out.mid")
    assert_one_line_error(result, "percussion", "channel 10")
    assert not (tmp_path / "out.mid").exists()


def test_drum_notes_next_to_a_melody_are_left_out(tmp_path):
    """A melody with a drum track is still a melody: percussion notes neither join it nor make it polyphonic."""
    import mido

    from harmonizer_deploy.music.midi import read_melody

    mid = mido.MidiFile()
    for channel, pitches in ((0, (60, 62, 64)), (9, (36, 36, 36))):
        track = mido.MidiTrack()
        mid.tracks.append(track)
        for pitch in pitches:
            track.append(mido.Message("note_on", note=pitch, velocity=80, channel=channel))
            track.append(mido.Message("note_off", note=pitch, time=480, channel=channel))
    mid.save(str(tmp_path / "band.mid"))
    notes, _ = read_melody(tmp_path / "band.mid")
    assert [n.pitch for n in notes] == [60, 62, 64]


def test_truncated_midi_names_the_problem_without_empty_parentheses(tmp_path):
    data = melody_midi(tmp_path / "ok.mid").read_bytes()
    (tmp_path / "cut.mid").write_bytes(data[:20])
    assert_one_line_error(run("harmonize", tmp_path / "cut.mid", "-o", tmp_path / "out.mid"), "MIDI")


def test_zero_tempo_is_ignored_not_a_division_by_zero(tmp_path):
    import mido

    from harmonizer_deploy.music.midi import read_melody

    mid = mido.MidiFile(str(melody_midi(tmp_path / "t.mid")))
    mid.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=1))
    mid.save(str(tmp_path / "t.mid"))
    data = bytearray((tmp_path / "t.mid").read_bytes())
    at = data.index(b"\xff\x51\x03")
    data[at + 3 : at + 6] = b"\x00\x00\x00"  # tempo 0 µs per quarter: mido.tempo2bpm would divide by zero
    (tmp_path / "t.mid").write_bytes(bytes(data))
    notes, bpm = read_melody(tmp_path / "t.mid")
    assert len(notes) == 4 and bpm == 90.0


def test_reason_never_empty():
    from harmonizer_deploy.core.errors import reason

    assert reason(EOFError()) == "EOFError"
    assert reason(ValueError("\n  first line\nsecond")) == "first line"


# --- --load-inputs (npz) --------------------------------------------------------------------------------------

@pytest.fixture
def artifact(tmp_path):
    return fake_artifact(tmp_path / "art", tiny_onnx(tmp_path / "model.onnx"))


def _good_npz(path):
    np.savez(path, input_000=np.zeros((1, 4, 46, 8), np.float32))
    return path


def _huge_shape_npz(path):
    """A member whose header declares 2^40 float32 values but stores none: numpy would allocate 4 TiB first."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    body = b"\x93NUMPY\x01\x00"
    text = repr(header).encode()
    text += b" " * (64 - (len(body) + 2 + len(text) + 1) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("input_000.npy", body + len(text).to_bytes(2, "little") + text)
    return path


def _huge_header_npz(path):
    """A version-2 header of 1 MB (numpy's limit is 10 kB unless told otherwise)."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (1,)}).encode() + b" " * (1 << 20) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("input_000.npy", b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little") + text + b"\0" * 4)
    return path


def _bad_crc_npz(path):
    _good_npz(path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the stored array data: the CRC no longer matches
    path.write_bytes(bytes(data))
    return path


def _truncated_npz(path):
    data = _good_npz(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _npy(path):
    with open(path, "wb") as handle:  # a .npy under an .npz name
        np.save(handle, np.zeros((1, 4, 46, 8), np.float32))
    return path


@pytest.mark.parametrize(("make", "fragment"), [
    (_npy, ".npy file"), (_bad_crc_npz, "not a readable .npz"), (_truncated_npz, "not a readable .npz"),
    (_huge_shape_npz, "declares shape"), (_huge_header_npz, "not a readable .npz"),
])
def test_load_inputs_hostile_npz(artifact, tmp_path, make, fragment):
    bad = make(tmp_path / "inputs.npz")
    before = bad.read_bytes()
    result = run("verify", artifact, "--load-inputs", bad)
    assert_one_line_error(result, fragment)
    assert bad.read_bytes() == before


def test_load_inputs_good_npz_still_loads(tmp_path):
    from harmonizer_deploy.conversion.inputs import load_inputs

    (x,) = load_inputs(_good_npz(tmp_path / "good.npz"))
    assert x.shape == (1, 4, 46, 8) and x.dtype == np.float32


# --- verify: the reference model and the input sizes ---------------------------------------------------------

def test_verify_onnx_with_external_data_outside_its_folder(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 128)
    (tmp_path / "m").mkdir()
    model = tiny_onnx(tmp_path / "m" / "model.onnx", external="../secret.bin")
    artifact = fake_artifact(tmp_path / "art", model)
    result = run("verify", artifact, "--num-inputs", "1", "--batch", "1", "--time", "4")
    assert_one_line_error(result, "cannot load", "External data path escapes")  # refused, naming why


@pytest.mark.parametrize("batch", ["0", str(2**40)])
def test_verify_refuses_absurd_batch_before_any_work(artifact, batch):
    result = run("verify", artifact, "--batch", batch, "--num-inputs", "1", "--time", "4")
    assert_one_line_error(result, "--batch" if batch == "0" else "values")


# --- compile: the fixed dims are checked against the model before compiling -----------------------------------

def test_fix_dim_with_an_unknown_name_lists_the_valid_ones(tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx", dims=("N", "T"))
    result = run("compile", model, "-o", tmp_path / "out", "--fix-dim", "nosuch=3")
    assert_one_line_error(result, "'nosuch'", "valid dim names: N, T")
    assert not (tmp_path / "out").exists()


def test_batch_and_time_on_a_model_without_those_dims(tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx", dims=("N", "T"))
    result = run("compile", model, "-o", tmp_path / "out", "--batch", "1", "--time", "4")
    assert_one_line_error(result, "--batch/--time", "valid dim names: N, T")


@pytest.mark.parametrize("batch", ["0", str(2**40)])
def test_compile_refuses_absurd_batch_before_compiling(tmp_path, batch):
    model = tiny_onnx(tmp_path / "model.onnx")
    result = run("compile", model, "-o", tmp_path / "out", "--batch", batch, "--time", "32")
    assert_one_line_error(result, "--batch" if batch == "0" else "values")
    assert not (tmp_path / "out").exists()


# --- serve, extract -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_port_out_of_range(tmp_path, port):
    assert_one_line_error(run("serve", "--build-dir", tmp_path, "--port", port), f"--port {port}", "65535")


def test_extract_into_an_existing_file(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("model/readme.txt", "hi")
    (tmp_path / "dest").write_text("keep me")
    assert_one_line_error(run("extract", tmp_path / "a.zip", tmp_path / "dest"), "not a directory")
    assert (tmp_path / "dest").read_text() == "keep me"


# --- JSON output is strict JSON -------------------------------------------------------------------------------

def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_verify_json_with_nan_is_valid_json(artifact, monkeypatch):
    from harmonizer_deploy.verification import verify as verify_module

    def nan_report(*args, **kwargs):
        return verify_module.VerifyReport(
            target="cpu", backend="tvm-cpu", artifact_dir=str(artifact), passed=False, num_inputs=1, seed=0,
            input_shapes=[[1, 4, 46, 8]], input_ranges=[[0.0, math.inf]],
            outputs=[{"name": "probs", "max_abs_err": math.nan, "max_rel_err": math.inf, "kl_divergence": -math.inf,
                      "passed": False}])

    monkeypatch.setattr(verify_module, "verify", nan_report)
    result = run("verify", artifact, "--json")
    assert result.exit_code == 3, result.output
    report = _strict(result.output)
    out = report["outputs"][0]
    assert out["max_abs_err"] is None and out["max_abs_err_non_finite"] == "NaN"
    assert out["max_rel_err"] is None and out["max_rel_err_non_finite"] == "Infinity"
    assert out["kl_divergence_non_finite"] == "-Infinity"
    assert report["input_ranges"] == [[0.0, None]] and report["input_ranges_non_finite"] == {"0": {"1": "Infinity"}}


# --- found by the fuzz suite (tests/fuzz) ---------------------------------------------------------------------

def test_onnx_with_a_name_that_is_not_utf8(tmp_path):
    """Protobuf hands such a name out as bytes, which the ONNX checker accepts and later code trips over."""
    model = tiny_onnx(tmp_path / "model.onnx")
    model.write_bytes(model.read_bytes().replace(b"batch", b"\x80atch"))
    result = run("compile", model, "-o", tmp_path / "out", "--fix-dim", "batch=1")
    assert_one_line_error(result, "not valid UTF-8")


def test_extract_zip_with_an_unknown_format_version(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("model/readme.txt", "hi")
    data = bytearray((tmp_path / "a.zip").read_bytes())
    at = data.index(b"PK\x01\x02")  # the central directory entry
    data[at + 6] = 78  # "version needed to extract" 7.8: zipfile raises NotImplementedError
    (tmp_path / "a.zip").write_bytes(bytes(data))
    assert_one_line_error(run("extract", tmp_path / "a.zip", tmp_path / "dest"), "cannot extract")
    assert not (tmp_path / "dest").exists()


def test_extract_tar_with_a_hard_link_to_a_missing_member(tmp_path):
    import io
    import tarfile

    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        info = tarfile.TarInfo("a")
        info.type, info.linkname = tarfile.LNKTYPE, "sub"
        tf.addfile(info, io.BytesIO(b""))
    assert_one_line_error(run("extract", tmp_path / "a.tar", tmp_path / "dest"), "hard link")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("links", [[("a", "a")], [("a", "b"), ("b", "a")]])
def test_extract_tar_with_a_hard_link_cycle(tmp_path, links):
    """tarfile follows hard links to links recursively: a cycle was a RecursionError (exit 70)."""
    import io
    import tarfile

    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tf.addfile(info, io.BytesIO(b""))
    assert_one_line_error(run("extract", tmp_path / "a.tar", tmp_path / "dest"), "hard link")
    assert not (tmp_path / "dest").exists()


def test_extract_tar_with_a_good_hard_link_still_works(tmp_path):
    import io
    import tarfile

    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        info = tarfile.TarInfo("model/weights.bin")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("model/copy.bin")
        link.type, link.linkname = tarfile.LNKTYPE, "model/weights.bin"
        tf.addfile(link)
    result = run("extract", tmp_path / "a.tar", tmp_path / "dest")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dest" / "model" / "copy.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("members", [[("sub/.", ".")], [("sub/", "sub")], [("model", "."), ("model/x.txt", None)]])
def test_extract_tar_with_a_link_in_place_of_a_directory(tmp_path, members):
    """`sub/.` → `.` cannot be made a symlink (sub is a directory); tarfile then extracted the link's target,
    the link itself, until a RecursionError (exit 70). Found by make fuzz."""
    import io
    import tarfile

    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        for name, target in members:
            info = tarfile.TarInfo(name)
            if target is None:
                tf.addfile(info, io.BytesIO(b""))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
    assert_one_line_error(run("extract", tmp_path / "a.tar", tmp_path / "dest"), "in place of a directory")
    assert not (tmp_path / "dest").exists()

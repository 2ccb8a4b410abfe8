"""Fuzzed model archives through `extract`, and mutated ONNX protobufs through the cheap entry points of
compile and verify (the checker, the fixed-dim check, the onnxruntime reference session).

Archives: extract succeeds or raises HarmonizerError; either way nothing appears outside the destination, the
archive is unchanged, and on success every extracted path resolves inside the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from harmonizer_deploy.core.errors import HarmonizerError
from hostile import tiny_onnx

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name")

PARTS = ["a", "b", "sub", "..", ".", "", "link", "x.txt", "/", "\\", "C:", "a" * 300]
LINK_TARGETS = ["..", "../..", ".", "sub", "a/..", "/etc", "/tmp", "../outside", "link", "x.txt"]

member = st.tuples(
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map("/".join),
    st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]),
    st.sampled_from(LINK_TARGETS),
    st.binary(max_size=16),
)


def _zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, kind, target, data in members:
            if not name:
                continue
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            if kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, target)
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
                zf.writestr(info, b"")
            else:
                zf.writestr(info, data)
    return buffer.getvalue()


def _tar(members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, kind, target, data in members:
            if not name:
                continue
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, target
                tf.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under `root` except those under `skip` (the destination)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path != skip and skip not in path.parents:
                found.add(str(path))
    return found


def extract_hostile(tmp: Path, data: bytes, suffix: str) -> None:
    from harmonizer_deploy.conversion.extract import extract

    outside = tmp / "outside"
    outside.mkdir()
    archive = outside / f"model{suffix}"
    archive.write_bytes(data)
    dest = outside / "deep" / "dest"
    dest.parent.mkdir()
    before = _snapshot(tmp, dest)
    try:
        names = extract(archive, dest)
    except HarmonizerError as exc:
        assert "\n" not in exc.one_line() and not exc.one_line().endswith("()")
        names = None
    assert archive.read_bytes() == data
    assert _snapshot(tmp, dest) == before, "extract wrote outside its destination"
    if names is not None:
        root = Path(os.path.realpath(dest))
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                resolved = Path(os.path.realpath(Path(dirpath) / name))  # a link loop inside is harmless
                assert resolved == root or root in resolved.parents, f"{name} resolves outside the destination"


@fuzz(40)
@given(members=st.lists(member, max_size=5), damage=st.integers(-1, 400))
def test_zip_layouts(tmp_path_factory, members, damage):
    data = bytearray(_zip(members))
    if 0 <= damage < len(data):
        data[damage] ^= 0x5A
    extract_hostile(tmp_path_factory.mktemp("zip"), bytes(data), ".zip")


@fuzz(40)
@given(members=st.lists(member, max_size=5), damage=st.integers(-1, 2000))
def test_tar_layouts(tmp_path_factory, members, damage):
    data = bytearray(_tar(members))
    if 0 <= damage < len(data):
        data[damage] ^= 0x5A
    extract_hostile(tmp_path_factory.mktemp("tar"), bytes(data), ".tar")


# --- ONNX protobuf mutations -----------------------------------------------------------------------------------

def _seed_onnx() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return tiny_onnx(Path(tmp) / "m.onnx").read_bytes()


SEED_ONNX = _seed_onnx()


@st.composite
def mutated_onnx(draw) -> bytes:
    data = bytearray(SEED_ONNX)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["set", "set", "delete", "truncate", "insert"]))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@fuzz(60)
@given(data=mutated_onnx(), dims=st.dictionaries(st.sampled_from(["batch", "time", "N", "x"]), st.integers(1, 2**40),
                                                 max_size=2))
def test_mutated_onnx_through_compile_and_verify_checks(tmp_path_factory, data, dims):
    """compile's checks before TVM (load + checker, the fixed dims) and verify's onnxruntime reference session."""
    from harmonizer_deploy.compiler.build import check_fixed_dims
    from harmonizer_deploy.conversion.convert import check_onnx_file
    from harmonizer_deploy.core.onnxruntime import ort_session

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(data)
    try:
        model = check_onnx_file(path)
        check_fixed_dims(model, dims)
        ort_session(path)
    except HarmonizerError as exc:
        assert "\n" not in exc.one_line() and not exc.one_line().endswith("()")
    assert path.read_bytes() == data

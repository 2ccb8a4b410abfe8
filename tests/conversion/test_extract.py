"""`extract` treats a model archive as untrusted: crafted archives are refused before anything is written."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from harmonizer_deploy.conversion.extract import extract
from harmonizer_deploy.core.errors import HarmonizerError


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
    return path


def test_extracts_a_normal_archive(tmp_path):
    archive = _tar(tmp_path / "m.tar.gz", [("model/saved_model.pb", "file", b"pb"),
                                           ("model/variables/v.index", "file", b"ix"),
                                           ("model/latest", "symlink", "saved_model.pb")])
    names = extract(archive, tmp_path / "out")
    assert "model/saved_model.pb" in names
    assert (tmp_path / "out" / "model" / "variables" / "v.index").read_bytes() == b"ix"
    assert (tmp_path / "out" / "model" / "latest").read_bytes() == b"pb"


@pytest.mark.parametrize(("members", "why"), [
    ([("../evil.txt", "file", b"x")], "contains '..'"),
    ([("ok/../../evil.txt", "file", b"x")], "contains '..'"),
    ([("/etc/evil", "file", b"x")], "absolute path"),
    ([("model/link", "symlink", "../../../etc/passwd")], "pointing outside"),
    ([("model/link", "symlink", "/etc/passwd")], "pointing outside"),
    ([("model/hard", "hardlink", "../outside")], "contains '..'"),
])
def test_refuses_crafted_tar(tmp_path, members, why):
    archive = _tar(tmp_path / "evil.tar.gz", [("model/a.txt", "file", b"a"), *members])
    with pytest.raises(HarmonizerError, match=why):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_crafted_zip_with_escaping_symlink(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/a.txt", "a")
        link = zipfile.ZipInfo("model/escape")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "../../outside")
        zf.writestr("../zip-slip.txt", "x")
    with pytest.raises(HarmonizerError, match=r"pointing outside|contains '\.\.'"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_oversized_member(tmp_path, monkeypatch):
    import harmonizer_deploy.conversion.extract as ex

    monkeypatch.setattr(ex, "MAX_MEMBER_BYTES", 10)
    archive = _tar(tmp_path / "big.tar.gz", [("big.bin", "file", b"0" * 11)])
    with pytest.raises(HarmonizerError, match="limit 10"):
        extract(archive, tmp_path / "out")


def test_not_an_archive_and_nonempty_destination(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(HarmonizerError, match="not a tar or zip"):
        extract(junk, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    good = _tar(tmp_path / "g.tar.gz", [("a", "file", b"a")])
    with pytest.raises(HarmonizerError, match="not empty"):
        extract(good, tmp_path / "full")


# --- issue 15 §2: every escape form, zip and tar; nothing is written anywhere -----------------------------------

def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload in members:
            if kind == "symlink":
                info = zipfile.ZipInfo(name)
                info.external_attr = 0o120777 << 16
                zf.writestr(info, payload)
            else:
                zf.writestr(name, payload)
    return path


CHAIN = [("sub/link", "symlink", ".."), ("sub/link/link2", "symlink", ".."),
         ("sub/link/link2/evil.txt", "file", b"evil")]
THROUGH_A_LINK = "goes through a link|symbolic link|link in place of a directory"
ESCAPES = [
    pytest.param(CHAIN, THROUGH_A_LINK, id="chained-symlinks"),
    pytest.param(CHAIN[:1] + CHAIN[2:], THROUGH_A_LINK, id="file-through-symlink"),
    pytest.param([("/abs/evil.txt", "file", b"evil")], "absolute path", id="absolute-name"),
    pytest.param([("../evil.txt", "file", b"evil")], "contains '..'", id="dotdot-name"),
    pytest.param([("a/../../evil.txt", "file", b"evil")], "contains '..'", id="inner-dotdot-name"),
    pytest.param([("link", "symlink", "/tmp")], "pointing outside|symbolic link", id="symlink-to-absolute"),
    pytest.param([("link", "symlink", "../..")], "pointing outside|symbolic link", id="symlink-up"),
]


def _nothing_escaped(tmp_path, out):
    assert not out.exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path.parent.parent / "evil.txt").exists()


@pytest.mark.parametrize(("members", "why"), ESCAPES)
def test_zip_escape_forms_are_refused(tmp_path, members, why):
    archive = _zip(tmp_path / "evil.zip", [("model/a.txt", "file", b"a"), *members])
    with pytest.raises(HarmonizerError, match=why):
        extract(archive, tmp_path / "dest" / "out")
    _nothing_escaped(tmp_path, tmp_path / "dest" / "out")


@pytest.mark.parametrize(("members", "why"), ESCAPES)
def test_tar_escape_forms_are_refused(tmp_path, members, why):
    archive = _tar(tmp_path / "evil.tar.gz", [("model/a.txt", "file", b"a"), *members])
    with pytest.raises(HarmonizerError, match=why):
        extract(archive, tmp_path / "dest" / "out")
    _nothing_escaped(tmp_path, tmp_path / "dest" / "out")


def test_zip_never_creates_symlinks_even_inside(tmp_path):
    archive = _zip(tmp_path / "m.zip", [("model/saved_model.pb", "file", b"pb"),
                                        ("model/latest", "symlink", "saved_model.pb")])
    with pytest.raises(HarmonizerError, match="symbolic link"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    plain = _zip(tmp_path / "ok.zip", [("model/saved_model.pb", "file", b"pb"), ("model/variables/", "dir", b"")])
    assert extract(plain, tmp_path / "out2") == ["model/saved_model.pb", "model/variables/"]
    assert (tmp_path / "out2" / "model" / "saved_model.pb").read_bytes() == b"pb"


def test_an_archive_cannot_forge_the_ownership_marker(tmp_path):
    from harmonizer_deploy.core.artifacts import OWNER_MARKER

    archive = _zip(tmp_path / "m.zip", [(OWNER_MARKER, "file", b'{"tool": "harmonizer-deploy", "entries": []}')])
    with pytest.raises(HarmonizerError, match="marker"):
        extract(archive, tmp_path / "out")


def test_extract_into_a_file_or_the_archive_folder_is_one_clear_error(tmp_path):
    good = _tar(tmp_path / "g.tar.gz", [("a", "file", b"a")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(HarmonizerError, match="not a directory"):
        extract(good, tmp_path / "file")
    with pytest.raises(HarmonizerError, match=r"not empty|holds the archive"):
        extract(good, tmp_path)
    assert (tmp_path / "file").read_text() == "x"

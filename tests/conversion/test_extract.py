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

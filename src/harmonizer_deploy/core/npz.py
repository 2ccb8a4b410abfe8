"""Reading a user's `.npz` as hostile input: one clear error for anything that is not a plain npz of arrays.

`np.load` alone lets a lot through as internal errors or worse: a `.npy` (one array, no names), a bad CRC or a
truncated zip (`BadZipFile`, `EOFError`, `zlib.error`), and a header declaring a shape far larger than the data
actually stored (numpy allocates the declared size before reading). Every member's header is read and checked
against its stored size first, so nothing is allocated that the file does not hold.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError, reason

NPY_MAGIC = b"\x93NUMPY"
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 16 << 30  # uncompressed; a zip bomb is refused before anything is inflated


def _member_nbytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes of array data the member's .npy header declares (its shape × itemsize), checked to be present."""
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header_bytes = handle.tell()
    if dtype.hasobject:
        raise ValueError("it holds Python objects (pickled data is never loaded)")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    stored = info.file_size - header_bytes
    if declared > stored:
        raise ValueError(f"member {info.filename!r} declares shape {list(shape)} ({declared} bytes) but stores "
                         f"{max(stored, 0)} bytes")
    return declared


def read_npz(path: str | Path, fix: str) -> dict[str, np.ndarray]:
    """All arrays of an npz by name, in file order; a HarmonizerError (ending in `fix`) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"file not found: {path}", fix)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise HarmonizerError(f"cannot read {path} ({reason(exc)})", fix) from exc
    if head == NPY_MAGIC:
        raise HarmonizerError(f"{path} is a .npy file (one unnamed array), not an .npz",
                              f"save it with numpy.savez; {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > MAX_MEMBERS:
                raise ValueError(f"it has {len(infos)} members (at most {MAX_MEMBERS})")
            if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
                raise ValueError(f"it inflates to more than {MAX_TOTAL_BYTES >> 30} GiB")
            for info in infos:
                _member_nbytes(archive, info)
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except HarmonizerError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise many kinds on a damaged file; all mean "bad input"
        raise HarmonizerError(f"{path} is not a readable .npz file ({reason(exc)})", fix) from exc

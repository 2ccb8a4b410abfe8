"""Size limits checked before any work: a typo like `--batch 1099511627776` must be one clear line, not a
compile that succeeds and a verify that dies allocating terabytes (or overflows TVM's 32-bit indices)."""

from __future__ import annotations

from collections.abc import Iterable

from harmonizer_deploy.core.errors import HarmonizerError

# TVM indexes buffers with int32 unless told otherwise, and 2^31 float32 values are 8 GiB: more than any
# model input this tool is meant for.
MAX_ELEMENTS = 2**31 - 1


def check_elements(shape: Iterable[int], what: str, fix: str) -> int:
    """The element count of `shape`, refused when a dim is < 1 or the count exceeds MAX_ELEMENTS."""
    dims = [int(d) for d in shape]
    if any(d < 1 for d in dims):
        raise HarmonizerError(f"{what}: shape {dims} has a dim below 1", fix)
    count = 1
    for d in dims:
        count *= d
    if count > MAX_ELEMENTS:
        raise HarmonizerError(f"{what}: shape {dims} is {count:,} values (at most {MAX_ELEMENTS:,})", fix)
    return count

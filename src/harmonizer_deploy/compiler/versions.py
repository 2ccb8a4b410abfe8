"""Versions of the compiler stack, recorded in every manifest and cache key."""

from __future__ import annotations


def tvm_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import tvm

    out = {"tvm": tvm.__version__}
    for pkg in ("apache-tvm", "apache-tvm-ffi", "mlc-ai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out

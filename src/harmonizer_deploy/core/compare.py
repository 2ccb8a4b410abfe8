"""The one comparison module: tolerances per output, error statistics, and the tolerance that would have passed.

convert (TensorFlow vs onnxruntime), verify and debug (artifact vs onnxruntime), the deploy bundle and the bench
(error of each timed row) all measure error here, so "max abs error" means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError

PERCENTILES = (50, 90, 99)
TINY = 1e-12
CHECK_ERROR_STATS = ("max", "mean", "median")


@dataclass(frozen=True)
class Tolerances:
    """atol/rtol per tensor name, with a default: `--atol 1e-5` sets the default, `--atol probs=1e-5` one
    output, so a model with several outputs can hold each to its own precision."""

    atol: float
    rtol: float
    per_atol: dict[str, float] = field(default_factory=dict)
    per_rtol: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> tuple[float, float]:
        return self.per_atol.get(name, self.atol), self.per_rtol.get(name, self.rtol)

    @classmethod
    def build(cls, spec: Any, atol: float | dict[str, float] | None, rtol: float | dict[str, float] | None,
              known: list[str] | None = None) -> Tolerances:
        """From the target's defaults plus overrides: a number, or {name: value} ("*" = default)."""
        values = {}
        for what, given, default in (("atol", atol, spec.atol), ("rtol", rtol, spec.rtol)):
            per = dict(given) if isinstance(given, dict) else {}
            base = float(per.pop("*", default)) if isinstance(given, dict) else (
                default if given is None else float(given))
            unknown = sorted(set(per) - set(known)) if known is not None else []
            if unknown:
                raise HarmonizerError(f"--{what} names {', '.join(unknown)}, not a tensor of this model",
                                      f"use one of: {', '.join(known[:8])}")
            bad = [v for v in [base, *per.values()] if not np.isfinite(v) or v < 0]
            if bad:
                raise HarmonizerError(f"--{what} must be a finite number ≥ 0, got {bad[0]}", "pass e.g. 1e-5")
            values[what] = (base, per)
        return cls(values["atol"][0], values["rtol"][0], values["atol"][1], values["rtol"][1])


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| in float64; NaN or Inf where either side has one (never hidden), 0 for empty."""
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))


def error_stats(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
                check: str = "max") -> dict[str, Any]:
    """Error statistics of one output, including the tolerances that would have been needed to pass.

    `check` is the statistic held to the tolerance: "max" (default) requires every element within
    atol + rtol·|expected|; "mean"/"median" compare that statistic of the abs error with
    atol + rtol·(same statistic of |expected|), for outputs where a few outliers are acceptable."""
    if check not in CHECK_ERROR_STATS:
        raise HarmonizerError(f"unknown --check-error-stat {check!r}", f"use one of {', '.join(CHECK_ERROR_STATS)}")
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    finite = np.isfinite(actual)
    abs_err = np.abs(actual - expected)
    abs_err = np.where(finite, abs_err, np.inf)
    rel_err = abs_err / np.maximum(np.abs(expected), TINY)
    flat_abs = abs_err.ravel()
    passed_elements = abs_err <= atol + rtol * np.abs(expected)
    stats = {
        "shape": list(actual.shape),
        "max_abs_err": float(flat_abs.max()),
        "max_rel_err": float(rel_err.max()),
        "mean_abs_err": float(flat_abs.mean()),
        "median_abs_err": float(np.median(flat_abs)),
        **{f"p{p}_abs_err": float(np.percentile(flat_abs, p)) for p in PERCENTILES},
        "nan_count": int(np.isnan(actual).sum()),
        "inf_count": int(np.isinf(actual).sum()),
        # the tolerance that would have been needed: the smallest atol alone (rtol=0), rtol alone (atol=0)
        "required_atol": float(flat_abs.max()),
        "required_rtol": float(rel_err.max()),
        "mismatched_elements": int((~passed_elements).sum()),
        "total_elements": int(abs_err.size),
        "atol": atol,
        "rtol": rtol,
        "check_error_stat": check,
    }
    magnitude = np.abs(expected).ravel()
    if check == "max":
        within = stats["mismatched_elements"] == 0
    elif check == "mean":
        within = stats["mean_abs_err"] <= atol + rtol * float(magnitude.mean())
    else:
        within = stats["median_abs_err"] <= atol + rtol * float(np.median(magnitude))
    stats["passed"] = bool(within and stats["nan_count"] == 0 and stats["inf_count"] == 0)
    return stats


def validate_stats(actual: np.ndarray) -> dict[str, Any]:
    """`--validate`: NaN/Inf and value range of an output alone, no reference needed."""
    finite = actual[np.isfinite(actual)]
    stats = {"shape": list(actual.shape), "nan_count": int(np.isnan(actual).sum()),
             "inf_count": int(np.isinf(actual).sum()), "total_elements": int(actual.size),
             "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None}
    stats["passed"] = stats["nan_count"] == 0 and stats["inf_count"] == 0
    return stats


def musical_agreement(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """For per-voice pitch distributions [B,T,P,V]: argmax agreement and mean KL(expected || actual)."""
    agreement = float(np.mean(np.argmax(actual, axis=2) == np.argmax(expected, axis=2)))
    p = np.clip(expected.astype(np.float64), 1e-12, 1.0)
    q = np.clip(actual.astype(np.float64), 1e-12, 1.0)
    kl = max(0.0, float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=2))))  # ≥ 0 up to rounding
    return {"argmax_agreement": agreement, "kl_divergence": kl}

"""Data validation of each arriving batch: schema checks, then a drift test.

Schema checks (any failure quarantines the batch): shape, dtype, value range [0, 1],
NaN/Inf, label dtype and range. Statistical checks (they flag drift, they do not
quarantine: drift is what retraining is for) compare the batch with the reference data:

* a two-sample Kolmogorov–Smirnov test per summary feature ``f`` of an image ``x``
  (mean intensity, ink fraction ``mean(x > 0.5)``, total variation
  ``mean |x[i+1,j] − x[i,j]| + mean |x[i,j+1] − x[i,j]|``, correlation with the reference
  mean image, mass in the top half);
* a χ² goodness-of-fit test of the label counts against the reference class frequencies.

The family of p-values is corrected for multiple testing with Holm's step-down method
(``p_(k) ← max_{i≤k} min(1, (m − i + 1) p_(i))``); drift is declared when any corrected
p-value is below ``alpha``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    checks: list[Check]
    p_values: dict[str, float]  # Holm-corrected
    drift: bool

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    @property
    def min_p_value(self) -> float:
        return min(self.p_values.values(), default=1.0)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "p_values": self.p_values,
            "drift": self.drift,
        }


def image_features(x: np.ndarray, template: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image summary features of ``x`` (N, H, W, C) used by the drift test."""
    flat = x.reshape(len(x), -1)
    tv = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean(
        axis=(1, 2, 3)
    )
    centred = flat - flat.mean(axis=1, keepdims=True)
    t = template.reshape(-1) - template.mean()
    denom = np.linalg.norm(centred, axis=1) * np.linalg.norm(t) + 1e-12
    h = x.shape[1] // 2
    total = flat.sum(axis=1) + 1e-12
    return {
        "mean_intensity": flat.mean(axis=1),
        "ink": (flat > 0.5).mean(axis=1),
        "total_variation": tv,
        "template_corr": centred @ t / denom,
        "top_half_mass": x[:, :h].reshape(len(x), -1).sum(axis=1) / total,
    }


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control)."""
    names = sorted(p_values, key=p_values.get)
    m, running, adjusted = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        adjusted[name] = running
    return adjusted


def schema_checks(
    x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...], num_classes: int
) -> list[Check]:
    x, y = np.asarray(x), np.asarray(y)
    checks = [
        Check("nonempty", len(x) > 0, f"{len(x)} samples"),
        Check(
            "shape",
            x.ndim == 4 and tuple(x.shape[1:]) == tuple(input_shape) and len(x) == len(y),
            f"x {x.shape}, y {y.shape}, expected (N, {', '.join(map(str, input_shape))})",
        ),
        Check("dtype", x.dtype == np.float32, f"x dtype {x.dtype}, expected float32"),
    ]
    finite = np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else np.ones(x.shape, bool)
    n_bad = int((~finite).reshape(len(x), -1).any(axis=1).sum()) if x.size else 0
    checks.append(Check("finite", n_bad == 0, f"{n_bad} images with NaN/Inf"))
    lo, hi = (float(np.nanmin(x)), float(np.nanmax(x))) if finite.any() else (np.nan, np.nan)
    checks.append(Check("range", 0.0 <= lo and hi <= 1.0, f"values in [{lo:.3g}, {hi:.3g}]"))
    labels_int = np.issubdtype(y.dtype, np.integer)
    checks.append(Check("label_dtype", labels_int, f"y dtype {y.dtype}"))
    out = int(((y < 0) | (y >= num_classes)).sum()) if labels_int else len(y)
    checks.append(Check("label_range", out == 0, f"{out} labels outside [0, {num_classes})"))
    return checks


def validate(
    x: np.ndarray,
    y: np.ndarray,
    reference_x: np.ndarray,
    reference_y: np.ndarray,
    *,
    num_classes: int = 10,
    alpha: float = 0.01,
) -> ValidationReport:
    """Validate a batch against the reference data; see the module docstring."""
    checks = schema_checks(x, y, reference_x.shape[1:], num_classes)
    if not all(c.passed for c in checks):
        return ValidationReport(checks, {}, drift=False)
    template = reference_x.mean(axis=0)
    ref_f, new_f = image_features(reference_x, template), image_features(x, template)
    raw = {f"ks_{k}": float(stats.ks_2samp(ref_f[k], new_f[k]).pvalue) for k in ref_f}
    ref_freq = np.bincount(reference_y, minlength=num_classes) + 1.0  # Laplace smoothing
    counts = np.bincount(y, minlength=num_classes)
    expected = ref_freq / ref_freq.sum() * counts.sum()
    raw["chi2_labels"] = float(stats.chisquare(counts, expected).pvalue)
    adjusted = holm(raw)
    drift = min(adjusted.values()) < alpha
    label_p = adjusted["chi2_labels"]
    checks.append(
        Check("label_distribution", True, f"χ² vs reference, Holm p={label_p:.3g} (informative)")
    )
    return ValidationReport(checks, adjusted, drift=bool(drift))

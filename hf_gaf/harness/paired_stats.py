r"""Statistics for comparing presets over seeds, where a seed fixes the data order and the initial weights of
every preset (``metrics.json`` records ``initial_weights_sha256``), so runs pair by seed.

For one preset's finite values :math:`x_1..x_n`: mean, sample standard deviation :math:`s` and the 95 %
confidence interval :math:`\bar x \pm t_{0.975, n-1}\, s/\sqrt n` (Student's t). Against the baseline: the
per-seed differences :math:`d_i = x_i - b_i` over seeds where both are finite, their mean, 95 % CI (the
same formula on :math:`d`) and the paired t-test's two-sided p-value (``scipy.stats.ttest_rel``). The
verdict reads the CI of the mean difference: ``better`` when it lies above 0 (below, for a metric where
lower is better), ``worse`` when on the other side, ``no difference shown`` when it contains 0. One seed
gives no CI and no test: ``one seed: no CI``.

Example:
    >>> r = paired_difference([0.90, 0.92, 0.91], [0.88, 0.89, 0.90])
    >>> round(r["mean"], 4), [round(v, 4) for v in r["ci95"]], r["verdict"]
    (0.02, [-0.0048, 0.0448], 'no difference shown')
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

ONE_SEED = "one seed: no CI"
AT_CHANCE = "no verdict: a run stayed at chance level"
NOT_LEARNED = {"mean": None, "ci95": None, "n": 0, "p_value": None, "verdict": AT_CHANCE}  # instead of a Δ


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def mean_ci(values: list[float], confidence: float = 0.95) -> dict:
    """``{mean, std, ci95, n, n_nonfinite}`` of the finite ``values`` (``ci95`` None below two values)."""
    finite = [float(v) for v in values if _finite(v)]
    out = {"n": len(finite), "n_nonfinite": len(values) - len(finite), "mean": float("nan"), "std": float("nan"),
           "ci95": None}
    if not finite:
        return out
    out["mean"] = statistics.fmean(finite)
    if len(finite) == 1:
        out["std"] = 0.0
        return out
    out["std"] = statistics.stdev(finite)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(finite) - 1)) * out["std"] / math.sqrt(len(finite))
    out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def paired_difference(values: list[float], baseline: list[float], greater_is_better: bool = True) -> dict:
    """The paired comparison of ``values`` against ``baseline`` (same seed order; module docstring):
    ``{mean, std, ci95, n, n_unpaired, p_value, verdict}``."""
    if len(values) != len(baseline):
        raise ValueError(
            f"paired comparison needs one value per seed on both sides, got {len(values)} and {len(baseline)}"
        )
    diffs = [a - b for a, b in zip(values, baseline) if _finite(a) and _finite(b)]
    out = mean_ci(diffs)
    out["n_unpaired"] = len(values) - len(diffs)
    del out["n_nonfinite"]
    out["p_value"] = None
    if out["n"] < 2:
        out["verdict"] = ONE_SEED if out["n"] == 1 else "no paired seeds"
        return out
    if out["std"] > 0:
        pairs = [(a, b) for a, b in zip(values, baseline) if _finite(a) and _finite(b)]
        out["p_value"] = float(stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue)
    low, high = out["ci95"]
    if low <= 0 <= high:
        out["verdict"] = "no difference shown"
    else:
        out["verdict"] = "better" if (low > 0) == greater_is_better else "worse"
    return out


def paired_cells(paired: dict | None, none: str = "—") -> tuple[str, str, str]:
    """Table cells ``(Δ [95 % CI], p, verdict)`` of a :func:`paired_difference` result (``none`` in each
    when there is no comparison, e.g. the baseline's own row)."""
    if paired is None:
        return "—", "—", none
    if paired["mean"] is None:  # NOT_LEARNED: no Δ between runs that did not learn
        return "—", "—", paired["verdict"]
    delta = f"{paired['mean']:+.4f}" + (
        f" [{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}]" if paired["ci95"] else ""
    )
    p = f"{paired['p_value']:.3g}" if paired["p_value"] is not None else "—"
    return delta, p, paired["verdict"]

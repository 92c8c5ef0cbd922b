"""The estimators behind every interval and p-value in the report, on scipy.stats.

The same ones host/statistics.h computes for `flushbench compare`: percentile-bootstrap intervals of
a median, a ratio of medians and a difference of medians (samples resampled independently), the
two-sided Mann-Whitney U test, and outlier flags (Tukey fences or MAD z > 3.5, never dropped). The
bootstrap seed is fixed, so the same results file gives the same report."""

import math

import numpy as np
from scipy import stats

SEED = 0x666C757368626E63  # "flushbnc", the C++ side's kBootstrapSeed
RESAMPLES = 2000
LEVEL = 0.95
BATCH_VALUES = 2_000_000  # resampled values held in memory at once


def _interval(statistic, samples):
    """Percentile interval (lo, hi) of statistic(*samples, axis=-1); NaN when any replicate is."""
    n = max(len(s) for s in samples)
    res = stats.bootstrap([np.asarray(s, dtype=float) for s in samples], statistic, n_resamples=RESAMPLES,
                          batch=max(1, BATCH_VALUES // n), vectorized=True, confidence_level=LEVEL,
                          method="percentile", random_state=np.random.default_rng(SEED))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (math.nan, math.nan)


def _median_ratio(x, y, axis=-1):
    den = np.median(y, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.median(x, axis=axis) / den, np.nan)


def _median_difference(x, y, axis=-1):
    return np.median(x, axis=axis) - np.median(y, axis=axis)


def median_ci(x):
    """Interval of the median of x (two or more samples)."""
    return _interval(np.median, [x])


def ratio_ci(a, b):
    """median(a) / median(b) and its interval; NaN where median(b) is not positive."""
    est = float(_median_ratio(np.asarray(a, float), np.asarray(b, float)))
    return est, _interval(_median_ratio, [a, b])


def difference_ci(a, b):
    """median(a) - median(b) and its interval."""
    return float(np.median(a) - np.median(b)), _interval(_median_difference, [a, b])


def u_test(a, b):
    """Two-sided Mann-Whitney p-value; None with fewer than two samples on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def outlier_mask(x):
    """Tukey fences or modified z-score > 3.5: flagged, never dropped."""
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    tukey = (x < q1 - 1.5 * iqr) | (x > q3 + 1.5 * iqr)
    med = np.median(x)
    mad = stats.median_abs_deviation(x)
    madz = (0.6745 * np.abs(x - med) / mad > 3.5) if mad > 0 else np.zeros(len(x), bool)
    return tukey | madz

"""One summary of a list of measurements: mean, percentiles (numpy's linear interpolation), max, count."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["summary"]


def summary(values, scale: float = 1.0, keys=("p50", "p95", "p99", "max"), digits: int | None = None):
    """``keys`` of ``values * scale``: ``mean``, ``pNN`` (percentile NN, e.g. ``p99.9``), ``max``, ``min``,
    ``n``; None and non-finite values are left out; None when nothing is left. ``digits``: round to."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64) * scale
    if not v.size:
        return None
    out: dict[str, float] = {}
    for k in keys:
        if k == "n":
            out[k] = int(v.size)
            continue
        if k in ("mean", "max", "min"):
            x = float(getattr(v, k)())
        elif k.startswith("p"):
            x = float(np.percentile(v, float(k[1:])))
        else:
            raise ValueError(f"unknown statistic {k!r}")
        out[k] = x if digits is None else round(x, digits)
    return out

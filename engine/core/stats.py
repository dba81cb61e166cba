"""One summary of a list of measurements: mean, percentiles (numpy's linear interpolation), max, count."""

from __future__ import annotations

import numpy as np

__all__ = ["summary"]


def summary(values, scale: float = 1.0, keys=("p50", "p95", "p99", "max")) -> dict[str, float] | None:
    """``keys`` of ``values * scale``: ``mean``, ``pNN`` (percentile NN), ``max``, ``min``, ``n``; None when
    there are no values."""
    v = np.asarray(values, dtype=np.float64).ravel() * scale
    if not v.size:
        return None
    out: dict[str, float] = {}
    for k in keys:
        if k == "n":
            out[k] = int(v.size)
        elif k in ("mean", "max", "min"):
            out[k] = float(getattr(v, k)())
        elif k.startswith("p"):
            out[k] = float(np.percentile(v, float(k[1:])))
        else:
            raise ValueError(f"unknown statistic {k!r}")
    return out

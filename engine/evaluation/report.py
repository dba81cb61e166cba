"""The result of an evaluation as text: :func:`format_table` (a plain table, null metrics with their
reason) and :func:`to_json` (strict JSON; non-finite numbers become strings)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

#: Display order, labels and the direction of each metric (for the table).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("psnr_face", "PSNR face crop (dB)", "higher is better"),
    ("ssim_face", "SSIM face crop", "higher is better"),
    ("psnr_full", "PSNR full frame (dB)", "higher is better"),
    ("ssim_full", "SSIM full frame", "higher is better"),
    ("lip_lmd", "LipLMD (px of 128 crop)", "lower is better"),
    ("lpips", "LPIPS face crop", "lower is better"),
    ("fid", "FID face crops", "lower is better"),
    ("csim", "CSIM (ArcFace cosine)", "higher is better"),
    ("syncnet_dist", "SyncNet distance (LSE-D)", "lower is better"),
    ("syncnet_conf", "SyncNet confidence (LSE-C)", "higher is better"),
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}"
    return str(v)


def format_table(result: dict) -> str:
    """A plain-text table of a result dict (null metrics show their reason)."""
    metrics, reasons = result.get("metrics", {}), result.get("reasons", {})
    rows = [("metric", "value", "std", "n", "")]
    for key, label, better in METRICS:
        m = metrics.get(key)
        if m is None:
            rows.append((label, "null", "", "", reasons.get(key, "")))
        else:
            note = better
            if key.startswith("syncnet") and "offset" in m:
                note += f"; AV offset {m['offset']} frames"
            if key == "fid":
                note += f"; {m.get('feature_dim')}-d features, few samples bias FID upwards"
            rows.append((label, _fmt(m["value"]), _fmt(m.get("std")), _fmt(m.get("n")), note))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + ("  " + r[4] if r[4] else "") for r in rows]
    fr = result.get("frames", {})
    lines.append(
        f"frame pairs: {fr.get('pairs', 0)} ({fr.get('evaluated', 0)} evaluated, "
        f"{fr.get('skipped_start', 0)} skipped at the start); "
        f"no face in {fr.get('no_face_reference', 0)} reference and "
        f"{fr.get('no_face_generated', 0)} generated frame(s)"
    )
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else "nan")
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def to_json(result: dict) -> str:
    """Strict JSON (non-finite numbers, e.g. the PSNR of identical frames, become "inf"/"nan")."""
    return json.dumps(_jsonable(result), indent=1, allow_nan=False)

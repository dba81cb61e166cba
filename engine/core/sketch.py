"""Landmark sketches: the 128x128 line drawings the renderer is conditioned on (IPLAP_FACTS.md section 5).
:func:`draw_sketch` is the literal one-sketch reference (the authors' float64 drawing, bit for bit the
golden sketches); :func:`draw_sketches` the batched production path, bit-identical to it. How each is drawn
and why the batched one is exact: docs/equivalence.md, "Sketches".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.core.landmark_sets import FULL_EDGES, N_ALL

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "SKETCH_SIZE",
    "LINE_VALUE",
    "canvas_shape",
    "visible_pixels",
    "draw_sketch",
    "draw_sketches",
    "sketches_to_tensor",
]

SKETCH_SIZE = 128
#: Grey level of the sketch lines before the division by 255.
LINE_VALUE = 224

_EDGE_A = FULL_EDGES[:, 0]
_EDGE_B = FULL_EDGES[:, 1]
#: cv2.resize accepts at most this many channels (CV_CN_MAX).
_MAX_CHANNELS = 512
#: Upper bound on the float64 stack resized in one call (bytes), to bound memory for odd crops.
_MAX_STACK_BYTES = 64 << 20
#: Upper bound on one uint8 drawing page (bytes).
_MAX_PAGE_BYTES = 64 << 20


def _edge_chains() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Split FULL_EDGES into chains of consecutive edges (a -> b, b -> c, ...).

    Returns the columns along each chain and, per edge, the index of its chain. Drawing a chain
    as one open polyline is pixel-identical to drawing its edges one by one with cv2.line (same
    segments, same direction), and far cheaper than one 2-point contour per edge.
    """
    chains: list[list[int]] = []
    edge_chain = np.empty(len(FULL_EDGES), dtype=np.int64)
    for i, (a, b) in enumerate(FULL_EDGES.tolist()):
        if not chains or chains[-1][-1] != a:
            chains.append([a])
        chains[-1].append(b)
        edge_chain[i] = len(chains) - 1
    return tuple(np.array(c, dtype=np.int64) for c in chains), edge_chain


_CHAINS, _EDGE_CHAIN = _edge_chains()


def canvas_shape(hw: tuple[int, int] | np.ndarray) -> tuple[int, int]:
    """Drawing canvas ``(H, W)`` for a crop of size ``hw = (h, w)``: the short side becomes 128."""
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"crop size must be positive, got (h, w) = ({h}, {w})")
    m = min(h, w)
    return int(h * SKETCH_SIZE / m), int(w * SKETCH_SIZE / m)


def _check_full(full: np.ndarray, batched: bool) -> np.ndarray:
    arr = np.asarray(full)
    want = (2, N_ALL)
    shape_ok = arr.ndim == (3 if batched else 2) and arr.shape[-2:] == want
    if not shape_ok:
        what = "(B, 2, 131)" if batched else "(2, 131)"
        raise ValueError(f"landmarks must have shape {what}, got {arr.shape}")
    # The reference computes in float64 (numpy scalar * Python int promotes to float64).
    return arr.astype(np.float64, copy=False)


def _is_inside(v: float) -> bool:
    """Step 2's test, verbatim: ``0 <= v <= 1`` with ``math.isclose`` at both ends."""
    return (v > 0 or math.isclose(0, v)) and (v < 1 or math.isclose(1, v))


def _inside_mask(v: np.ndarray) -> np.ndarray:
    """Vectorised :func:`_is_inside` for float64 arrays (NaN and +-inf are outside)."""
    # math.isclose(0, v) with abs_tol=0 only holds for v == 0. math.isclose(1, v) is
    # |1 - v| <= 1e-9 * max(1, |v|) for finite v and False for inf/nan.
    with np.errstate(invalid="ignore"):
        near_one = np.isfinite(v) & (np.abs(1.0 - v) <= 1e-9 * np.maximum(1.0, np.abs(v)))
        return (v >= 0) & ((v < 1) | near_one)


def visible_pixels(fulls: np.ndarray, H: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a batch of full arrays on canvases of size ``(H[b], W[b])``.

    ``fulls`` is ``(B, 2, n)`` float64. Returns ``(present (B, n) bool, px (B, 2, n) int64)``,
    ``px`` holding ``(x, y)`` pixels (meaningless where not present).
    """
    x, y = fulls[:, 0], fulls[:, 1]
    present = _inside_mask(x) & _inside_mask(y)
    Wc = W.astype(np.float64)[:, None]
    Hc = H.astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        xs = np.where(present, x, 0.0)
        ys = np.where(present, y, 0.0)
        px = np.minimum(np.floor(xs * Wc), Wc - 1)
        py = np.minimum(np.floor(ys * Hc), Hc - 1)
    return present, np.stack([px, py], axis=1).astype(np.int64)


def draw_sketch(full: np.ndarray, hw: tuple[int, int], *, raw: bool = False) -> np.ndarray:
    """Draw one sketch, literally per IPLAP_FACTS.md section 5 (the reference path).

    ``full``: (2, 131) landmarks normalised to the crop; ``hw``: the crop size ``(h, w)``.
    Returns (128, 128, 3) float32 in [0, 1], or on the 0..224 scale before the division by 255
    when ``raw`` is true.
    """
    full64 = _check_full(full, batched=False)
    H, W = canvas_shape(hw)
    canvas = np.zeros((H, W, 3), dtype=np.float64)
    pixels: dict[int, tuple[int, int]] = {}
    for c in range(N_ALL):
        x, y = float(full64[0, c]), float(full64[1, c])
        if _is_inside(x) and _is_inside(y):
            pixels[c] = (min(math.floor(x * W), W - 1), min(math.floor(y * H), H - 1))
    colour = (LINE_VALUE, LINE_VALUE, LINE_VALUE)
    for a, b in FULL_EDGES.tolist():
        if a in pixels and b in pixels:
            cv2.line(canvas, pixels[a], pixels[b], colour, 1)
    canvas = cv2.resize(canvas, (SKETCH_SIZE, SKETCH_SIZE))
    if raw:
        return canvas.astype(np.float32)
    return (canvas / 255.0).astype(np.float32)


def _grey_sketches(fulls: np.ndarray, hws: np.ndarray, out: np.ndarray, raw: bool) -> None:
    """Draw the batch into ``out``, a (B, 128, 128) float32 array or view: one grey channel each."""
    B = fulls.shape[0]
    h, w = hws[:, 0], hws[:, 1]
    if np.any(h <= 0) or np.any(w <= 0):
        raise ValueError("crop sizes must be positive")
    m = np.minimum(h, w)
    # Same float64 operations as int(h * 128 / min(h, w)) on Python ints (exact below 2**53).
    H = (h * SKETCH_SIZE / m).astype(np.int64)
    W = (w * SKETCH_SIZE / m).astype(np.int64)
    present, px = visible_pixels(fulls, H, W)

    # Canvases sorted by (W, H) and stacked vertically on "pages" (uint8 images as wide as their
    # widest canvas): every same-size run is then one contiguous block of rows.
    order = np.lexsort((H, W))
    rows = np.cumsum(H[order])
    start = 0
    while start < B:
        # Greedy page: as many canvases as fit the byte budget (at least one).
        cost = (rows[start:] - (rows[start - 1] if start else 0)) * W[order[start:]]
        end = start + max(1, int(np.searchsorted(cost, _MAX_PAGE_BYTES, side="right")))
        _draw_page(order[start:end], H, W, present, px, out, raw)
        start = end


def _draw_page(
    idx: np.ndarray,
    H: np.ndarray,
    W: np.ndarray,
    present: np.ndarray,
    px: np.ndarray,
    out: np.ndarray,
    raw: bool,
) -> None:
    S = SKETCH_SIZE
    Hp, Wp = H[idx], W[idx]
    offs = np.concatenate([[0], np.cumsum(Hp)[:-1]])
    page = np.zeros((int(Hp.sum()), int(Wp.max())), dtype=np.uint8)

    # --- drawing: every point lies inside its own canvas, so no line crosses into a neighbour.
    pts = np.empty((len(idx), N_ALL, 2), dtype=np.int32)
    pts[..., 0] = px[idx, 0]
    pts[..., 1] = px[idx, 1] + offs[:, None]
    pres = present[idx]
    chain_full = np.stack([pres[:, cols].all(axis=1) for cols in _CHAINS], axis=1)  # (n, chains)
    for c, cols in enumerate(_CHAINS):
        rows = np.flatnonzero(chain_full[:, c])
        if rows.size:
            cv2.polylines(page, pts[np.ix_(rows, cols)], False, LINE_VALUE, 1)
    # Chains with absent points: their remaining edges as 2-point segments.
    loose = pres[:, _EDGE_A] & pres[:, _EDGE_B] & ~chain_full[:, _EDGE_CHAIN]  # (n, E)
    if loose.any():
        item, edge = np.nonzero(loose)
        segs = np.stack([pts[item, _EDGE_A[edge]], pts[item, _EDGE_B[edge]]], axis=1)
        cv2.polylines(page, segs, False, LINE_VALUE, 1)

    # --- resizing: runs of equal canvas size, up to 512 canvases per cv2.resize call.
    keys = Hp * (1 << 32) + Wp
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(keys)) + 1, [len(idx)]])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        Hg, Wg = int(Hp[a]), int(Wp[a])
        step = max(1, min(_MAX_CHANNELS, _MAX_STACK_BYTES // (Hg * Wg * 8)))
        for c0 in range(a, b, step):
            k = min(step, b - c0)
            r0 = int(offs[c0])
            block = np.ascontiguousarray(page[r0 : r0 + k * Hg, :Wg])  # (k*Hg, Wg) canvases
            targets = idx[c0 : c0 + k]
            consecutive = bool(np.all(np.diff(targets) == 1))
            dst = out[targets[0] : targets[0] + k] if consecutive else np.empty((k, S, S), np.float32)
            if Hg == S and Wg == S:
                # cv2.resize to the same size is an exact copy.
                canv = block.reshape(k, S, S)
                if raw:
                    np.copyto(dst, canv)
                else:
                    np.divide(canv, 255.0, out=dst, dtype=np.float64, casting="unsafe")
            else:
                # The k canvases as the channels of one float64 image -> one resize call.
                stack = cv2.transpose(block.reshape(k, Hg * Wg)).reshape(Hg, Wg, k).astype(np.float64)
                res = cv2.resize(stack, (S, S)).reshape(S * S, k)
                r32 = np.empty((S * S, k), dtype=np.float32)
                if raw:
                    np.copyto(r32, res, casting="unsafe")
                else:
                    np.divide(res, 255.0, out=r32, casting="unsafe")
                np.copyto(dst, cv2.transpose(r32).reshape(k, S, S))
            if not consecutive:
                out[targets] = dst


def _prepare_batch(fulls: np.ndarray, hws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = _check_full(fulls, batched=True)
    hw = np.asarray(hws)
    if hw.shape != (f.shape[0], 2):
        raise ValueError(f"hws must have shape ({f.shape[0]}, 2), got {hw.shape}")
    if hw.size and not np.issubdtype(hw.dtype, np.integer):
        if not np.all(hw == np.floor(hw)):
            raise ValueError("crop sizes must be whole numbers")
    return f, hw.astype(np.int64)


def draw_sketches(
    fulls: np.ndarray,
    hws: np.ndarray,
    *,
    out: np.ndarray | None = None,
    raw: bool = False,
) -> np.ndarray:
    """Batched :func:`draw_sketch`: ``fulls`` (B, 2, 131), ``hws`` (B, 2) crop sizes ``(h, w)``.

    Returns (B, 128, 128, 3) float32 (NHWC, BGR; the channels are identical), bit-identical to
    ``np.stack([draw_sketch(f, hw, raw=raw) for f, hw in zip(fulls, hws)])``. ``out``: an optional
    preallocated float32 C-contiguous array of that shape to write into (it is returned).
    """
    f, hw = _prepare_batch(fulls, hws)
    B = f.shape[0]
    shape = (B, SKETCH_SIZE, SKETCH_SIZE, 3)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape {shape}, got {out.dtype} {out.shape}")
    grey = np.empty((B, SKETCH_SIZE, SKETCH_SIZE), dtype=np.float32)
    _grey_sketches(f, hw, grey, raw)
    if B:
        flat = grey.reshape(B * SKETCH_SIZE, SKETCH_SIZE)
        if out.flags.c_contiguous:
            cv2.cvtColor(flat, cv2.COLOR_GRAY2BGR, dst=out.reshape(B * SKETCH_SIZE, SKETCH_SIZE, 3))
        else:
            out[...] = grey[..., None]
    return out


def sketches_to_tensor(
    fulls: np.ndarray,
    hws: np.ndarray,
    *,
    out: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sketches as the models take them: a (B, 3, 128, 128) float32 NCHW tensor in [0, 1].

    Equal to ``draw_sketches(fulls, hws)`` transposed to NCHW. ``out``: an optional preallocated
    float32 tensor of that shape (any device) to fill and return; otherwise a new CPU tensor is
    made and moved to ``device`` if given.
    """
    import torch

    f, hw = _prepare_batch(fulls, hws)
    B = f.shape[0]
    shape = (B, 3, SKETCH_SIZE, SKETCH_SIZE)
    if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32):
        raise ValueError(f"out must be a float32 tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    direct = out is not None and out.device.type == "cpu" and out.is_contiguous()
    t = out if direct else torch.empty(shape, dtype=torch.float32)
    arr = t.numpy()
    # Channel 0 is drawn in place (each sketch a contiguous 128x128 block), then copied to 1, 2.
    _grey_sketches(f, hw, arr[:, 0], raw=False)
    arr[:, 1] = arr[:, 0]
    arr[:, 2] = arr[:, 0]
    if out is not None and not direct:
        out.copy_(t)
        return out
    return t.to(device) if device is not None else t

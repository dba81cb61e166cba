"""Sketch drawing (IPLAP_FACTS.md section 5): golden equality, batched == single, edge cases."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.core.landmark_sets import FULL_EDGES, N_ALL
from engine.core.sketch import (
    LINE_VALUE,
    SKETCH_SIZE,
    canvas_shape,
    draw_sketch,
    draw_sketches,
    sketches_to_tensor,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_sketch_seed1.npz"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip("golden sketch file missing")
    with np.load(GOLDEN) as d:
        return d["landmarks"], d["hw"], d["sketch"]


def test_golden_single_within_one_grey_level(golden):
    landmarks, hw, sketch = golden
    assert landmarks.shape == (4, 2, N_ALL) and sketch.shape == (4, 128, 128, 3)
    # The golden cases include points outside the crop.
    assert ((landmarks < 0) | (landmarks > 1)).any()
    for i in range(len(landmarks)):
        ours = draw_sketch(landmarks[i], tuple(hw[i]), raw=True)
        assert ours.dtype == np.float32 and ours.shape == (128, 128, 3)
        grey_diff = np.abs(np.round(ours) - np.round(sketch[i])).max()
        assert grey_diff <= 1, f"case {i}: max grey-level difference {grey_diff}"
        # Same float64 pipeline as the reference: in practice bit-identical.
        assert np.abs(ours - sketch[i]).max() < 1e-3
        assert ours.max() > 100  # something was drawn


def test_golden_batched_and_scaled(golden):
    landmarks, hw, sketch = golden
    raw = draw_sketches(landmarks, hw, raw=True)
    assert np.abs(np.round(raw) - np.round(sketch)).max() <= 1
    scaled = draw_sketches(landmarks, hw)
    np.testing.assert_allclose(scaled, (sketch / 255.0).astype(np.float32), rtol=0, atol=1e-3 / 255)


def test_canvas_shape():
    assert canvas_shape((128, 128)) == (128, 128)
    assert canvas_shape((173, 141)) == (157, 128)  # int(173*128/141) = int(157.04)
    assert canvas_shape((96, 150)) == (128, 200)
    assert canvas_shape((301, 260)) == (148, 128)
    assert canvas_shape((1, 1)) == (128, 128)
    assert canvas_shape((1, 3)) == (128, 384)
    assert canvas_shape((7, 2)) == (448, 128)
    with pytest.raises(ValueError):
        canvas_shape((0, 10))


def _only_edge(p_a, p_b, edge=0):
    """A full array whose only present points are the two endpoints of FULL_EDGES[edge]."""
    full = np.full((2, N_ALL), -1.0, dtype=np.float32)
    a, b = FULL_EDGES[edge]
    full[:, a] = p_a
    full[:, b] = p_b
    return full


def test_diagonal_from_exact_corners():
    # (0, 0) -> pixel (0, 0); (1, 1) -> min(floor(1*128), 127) = 127: the full diagonal.
    raw = draw_sketch(_only_edge((0.0, 0.0), (1.0, 1.0)), (200, 200), raw=True)
    idx = np.arange(SKETCH_SIZE)
    assert np.all(raw[idx, idx] == LINE_VALUE)
    assert raw.sum() == LINE_VALUE * SKETCH_SIZE * 3


def test_points_outside_or_nonfinite_are_absent():
    for p_b in [(1.001, 0.5), (0.5, -1e-6), (np.nan, 0.5), (np.inf, 0.5), (0.5, -np.inf)]:
        full = _only_edge((0.25, 0.25), p_b)
        assert draw_sketch(full, (100, 100)).max() == 0.0, p_b
        assert draw_sketches(full[None], np.array([[100, 100]])).max() == 0.0, p_b
    assert draw_sketch(np.full((2, N_ALL), 2.0), (64, 80)).max() == 0.0


def test_isclose_to_one_counts_as_inside():
    # Within math.isclose(1, v) (rel_tol 1e-9): inside, clamped to the last pixel (float64 input).
    full = _only_edge((1.0 + 1e-12, 0.0), (1.0 + 1e-12, 1.0)).astype(np.float64)
    full[0, FULL_EDGES[0]] = 1.0 + 1e-12  # float32 cannot hold this value
    raw = draw_sketch(full, (128, 128), raw=True)
    assert np.all(raw[:, 127] == LINE_VALUE) and raw[:, :127].max() == 0
    np.testing.assert_array_equal(draw_sketches(full[None], np.array([[128, 128]]), raw=True)[0], raw)


def test_value_range_channels_and_dtype():
    rng = np.random.default_rng(3)
    fulls = rng.uniform(0, 1, (6, 2, N_ALL)).astype(np.float32)
    hws = np.array([[128, 128], [300, 250], [90, 160], [40, 41], [500, 120], [2, 3]])
    out = draw_sketches(fulls, hws)
    assert out.dtype == np.float32 and out.shape == (6, 128, 128, 3)
    assert out.min() >= 0.0 and out.max() <= LINE_VALUE / 255.0 + 1e-7
    assert out.max() > 0.5
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


def _random_case(rng, n):
    fulls = rng.uniform(-0.15, 1.15, (n, 2, N_ALL))
    # Exact boundary values and values just outside.
    for v in (0.0, 1.0, -0.0, np.nextafter(0.0, -1.0), np.nextafter(1.0, 2.0)):
        fulls.flat[rng.integers(0, fulls.size, 40)] = v
    # Square, portrait, landscape, tiny and extreme crops, then random sizes and a run of equal ones.
    shapes = [(128, 128), (301, 260), (173, 141), (96, 150), (1, 1), (1, 5), (3, 2), (17, 400), (640, 9)]
    hws = rng.integers(1, 500, (n, 2))
    hws[: n // 2] = [shapes[i % len(shapes)] for i in range(n // 2)]
    hws[-5:] = hws[-6]
    return fulls, hws


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_equals_single(dtype):
    rng = np.random.default_rng(7)
    fulls, hws = _random_case(rng, 120)
    fulls = fulls.astype(dtype)
    single = np.stack([draw_sketch(f, tuple(hw)) for f, hw in zip(fulls, hws, strict=True)])
    batched = draw_sketches(fulls, hws)
    assert np.array_equal(batched, single)
    single_raw = np.stack([draw_sketch(f, tuple(hw), raw=True) for f, hw in zip(fulls, hws, strict=True)])
    assert np.array_equal(draw_sketches(fulls, hws, raw=True), single_raw)


def test_batched_many_same_size_chunks():
    # More same-size canvases than one cv2.resize call takes (512 channels), and a square group.
    rng = np.random.default_rng(11)
    n = 530
    fulls = rng.uniform(-0.05, 1.05, (n, 2, N_ALL)).astype(np.float32)
    hws = np.tile(np.array([[150, 130]]), (n, 1))
    hws[::7] = (64, 64)
    batched = draw_sketches(fulls, hws)
    pick = [0, 1, 7, 300, 511, 512, 529]
    for i in pick:
        assert np.array_equal(batched[i], draw_sketch(fulls[i], tuple(hws[i]))), i


def test_batched_equals_single_with_tiny_pages(monkeypatch):
    # Force many drawing pages (same-size runs split across pages) and small resize chunks.
    import engine.core.sketch as sk

    monkeypatch.setattr(sk, "_MAX_PAGE_BYTES", 60_000)
    monkeypatch.setattr(sk, "_MAX_STACK_BYTES", 400_000)
    monkeypatch.setattr(sk, "_MAX_CHANNELS", 3)
    rng = np.random.default_rng(13)
    fulls, hws = _random_case(rng, 60)
    hws[10:30] = (300, 258)
    single = np.stack([draw_sketch(f, tuple(hw)) for f, hw in zip(fulls, hws, strict=True)])
    assert np.array_equal(draw_sketches(fulls, hws), single)


def test_edge_chains_cover_every_edge_once():
    import engine.core.sketch as sk

    drawn = []
    for cols in sk._CHAINS:
        drawn += list(zip(cols[:-1].tolist(), cols[1:].tolist(), strict=True))
    assert drawn == [tuple(e) for e in FULL_EDGES.tolist()]  # same edges, same order and direction
    assert len(sk._CHAINS) == 15


def test_out_argument_and_empty_batch():
    rng = np.random.default_rng(5)
    fulls, hws = _random_case(rng, 10)
    out = np.full((10, 128, 128, 3), -1.0, dtype=np.float32)
    res = draw_sketches(fulls, hws, out=out)
    assert res is out and np.array_equal(out, draw_sketches(fulls, hws))
    with pytest.raises(ValueError):
        draw_sketches(fulls, hws, out=np.empty((10, 128, 128, 3), np.float64))
    empty = draw_sketches(np.zeros((0, 2, N_ALL), np.float32), np.zeros((0, 2), np.int64))
    assert empty.shape == (0, 128, 128, 3)


def test_tensor_output():
    rng = np.random.default_rng(9)
    fulls, hws = _random_case(rng, 8)
    t = sketches_to_tensor(fulls, hws)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (8, 3, 128, 128)
    assert t.is_contiguous()
    nhwc = draw_sketches(fulls, hws)
    assert np.array_equal(t.numpy(), nhwc.transpose(0, 3, 1, 2))
    buf = torch.full((8, 3, 128, 128), -1.0)
    assert sketches_to_tensor(fulls, hws, out=buf) is buf and torch.equal(buf, t)
    strided = torch.full((3, 8, 128, 128), -1.0).permute(1, 0, 2, 3)  # not contiguous
    assert sketches_to_tensor(fulls, hws, out=strided) is strided and torch.equal(strided, t)
    with pytest.raises(ValueError):
        sketches_to_tensor(fulls, hws, out=torch.empty(8, 3, 128, 128, dtype=torch.float64))


def test_bad_inputs():
    with pytest.raises(ValueError):
        draw_sketch(np.zeros((2, 130)), (10, 10))
    with pytest.raises(ValueError):
        draw_sketches(np.zeros((2, 131)), np.array([[10, 10]]))
    with pytest.raises(ValueError):
        draw_sketches(np.zeros((3, 2, 131)), np.array([[10, 10]]))
    with pytest.raises(ValueError):
        draw_sketches(np.zeros((1, 2, 131)), np.array([[0, 10]]))


def test_polylines_matches_line():
    """The batched path's premise: one polylines call with 2-point segments == cv2.line each."""
    rng = np.random.default_rng(1)
    for H, W in [(128, 128), (148, 128), (128, 384), (9, 640)]:
        segs = np.stack([rng.integers(0, W, (300, 2)), rng.integers(0, H, (300, 2))], -1).astype(np.int32)
        a = np.zeros((H, W), np.uint8)
        cv2.polylines(a, segs, False, 224, 1)
        b = np.zeros((H, W), np.uint8)
        for (xa, ya), (xb, yb) in segs.tolist():
            cv2.line(b, (xa, ya), (xb, yb), 224, 1)
        assert np.array_equal(a, b)

"""The paste mask and compositing: equal to a full-frame blur, nothing changes outside the mask."""

from __future__ import annotations

import cv2
import numpy as np

from engine.core.composite import MASK_POINTS_MP, MaskConfig, composite, face_polygon, paste_mask


def _mesh(cx: float, cy: float, r: float, seed: int = 0) -> np.ndarray:
    """A plausible 478-point mesh: the mask points on an ellipse around (cx, cy), the rest inside."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((478, 3), np.float32)
    pts[:, 0] = cx + rng.uniform(-r / 2, r / 2, 478)
    pts[:, 1] = cy + rng.uniform(-r / 2, r / 2, 478)
    ang = np.linspace(0, 2 * np.pi, len(MASK_POINTS_MP), endpoint=False)
    pts[MASK_POINTS_MP, 0] = cx + r * np.cos(ang)
    pts[MASK_POINTS_MP, 1] = cy + 1.2 * r * np.sin(ang)
    return pts


def _full_frame_mask(points, h, w):
    cfg = MaskConfig()
    m = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(m, face_polygon(points, h, w), 255)
    return cv2.GaussianBlur(m, (cfg.blur_kernel, cfg.blur_kernel), cfg.blur_sigma)


def _box(points, h, w, margin=25):
    xs, ys = points[:, 0] * w, points[:, 1] * h
    return (
        max(int(ys.min()) - margin, 0),
        min(int(ys.max()) + margin, h),
        max(int(xs.min()) - margin, 0),
        min(int(xs.max()) + margin, w),
    )


def test_box_mask_equals_the_full_frame_blur_inside_and_out():
    h, w = 240, 320
    for cx, cy in [(0.5, 0.5), (0.12, 0.5), (0.9, 0.85), (0.5, 0.1)]:  # centre and near every edge
        pts = _mesh(cx, cy, 0.1)
        box = _box(pts, h, w)
        y1, y2, x1, x2 = box
        full = _full_frame_mask(pts, h, w)
        assert np.array_equal(paste_mask(pts, box, h, w), full[y1:y2, x1:x2])
        outside = full.copy()
        outside[y1:y2, x1:x2] = 0
        assert outside.max() == 0  # the mask never reaches past the box


def test_composite_changes_only_masked_pixels_and_blends_by_the_mask():
    h, w = 200, 260
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pts = _mesh(0.5, 0.5, 0.15)
    box = _box(pts, h, w)
    y1, y2, x1, x2 = box
    mask = paste_mask(pts, box, h, w)
    face = np.full((128, 128, 3), 200, np.uint8)
    out = composite(frame, face, box, mask)
    assert out.shape == frame.shape and out is not frame
    changed = np.any(out != frame, axis=2)
    inside = np.zeros((h, w), bool)
    inside[y1:y2, x1:x2] = mask > 0
    assert not changed[~inside].any()  # pixels the mask does not touch equal the template exactly
    assert changed[inside].mean() > 0.9
    core = mask == 255
    assert np.array_equal(out[y1:y2, x1:x2][core], np.full((core.sum(), 3), 200, np.uint8))
    m = mask.astype(np.float64)[..., None] / 255
    expected = (200 * m + frame[y1:y2, x1:x2] * (1 - m)).astype(np.uint8)
    assert np.array_equal(out[y1:y2, x1:x2], expected)
    # a feathered edge: the mask rises gradually, no seam
    assert 0 < mask[mask > 0].min() < 20 and len(np.unique(mask)) > 50


def test_composite_into_preallocated_output():
    frame = np.zeros((100, 100, 3), np.uint8)
    pts = _mesh(0.5, 0.5, 0.2)
    box = _box(pts, 100, 100)
    buf = np.full_like(frame, 7)
    res = composite(
        frame, np.full((128, 128, 3), 255, np.uint8), box, paste_mask(pts, box, 100, 100), out=buf
    )
    assert res is buf and buf[0, 0, 0] == 0 and buf[50, 50, 0] == 255

"""Face crop box, landmark normalisation, FaceRecord and MediaPipe FaceMesh on real media."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.core.face import (
    FaceLandmarker,
    FaceMeshConfig,
    FaceRecord,
    crop_box,
    crop_face,
    lip_openness,
    normalise,
    record_from_points,
    records_from_arrays,
    records_to_arrays,
    split_pose_content,
)
from engine.core.landmark_sets import ALL_MP, CONTENT_MP, FULL_MP, ORDER, POSE_MP
from engine.core.sketch import draw_sketch

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIPS = ["talk_a_25fps.mp4", "talk_b_25fps.mp4", "talk_c_30fps.mp4"]


def _mesh(order_xy=None, fill=(0.5, 0.5)):
    """A synthetic 478-point mesh: the 131 ORDER points from ``order_xy`` (131, 2), others ``fill``."""
    pts = np.zeros((478, 3), dtype=np.float32)
    pts[:, :2] = fill
    pts[:, 2] = 0.123
    if order_xy is not None:
        pts[ALL_MP, :2] = order_xy
    return pts


def _grid_order_points(x0, x1, y0, y1):
    t = np.linspace(0.0, 1.0, len(ORDER))
    return np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t[::-1]], axis=1)


# ------------------------------------------------------------------------------------ pure helpers


def test_crop_box_hand_computed():
    # w=400: margin 25/400 = 0.0625; h=200: 25/200 = 0.125 (all exact in binary).
    # x in [0.25, 0.625] -> [0.1875, 0.6875] -> x1 = 75, x2 = 275
    # y in [0.375, 0.75] -> [0.25, 0.875]    -> y1 = 50, y2 = 175
    pts = _mesh(_grid_order_points(0.25, 0.625, 0.375, 0.75))
    # Points outside the 131 ORDER set never widen the box.
    pts[10, :2] = (0.0, 0.0)
    pts[470, :2] = (0.99, 0.99)
    assert crop_box(pts, 200, 400) == (50, 175, 75, 275)
    assert crop_box(pts[ALL_MP], 200, 400) == (50, 175, 75, 275)  # the 131 points directly
    assert crop_box(pts[:, :2], 200, 400) == (50, 175, 75, 275)
    # Another margin.
    assert crop_box(pts, 200, 400, margin_px=0) == (75, 150, 100, 250)


def test_crop_box_clamps_and_truncates():
    # Clamped to [0, 1]: the box reaches the frame edges.
    pts = _mesh(_grid_order_points(0.01, 0.99, 0.02, 0.97))
    assert crop_box(pts, 200, 400) == (0, 200, 0, 400)
    # int() truncation of non-integral products, computed in float64 from the float32 points
    # exactly as the reference's Python code does.
    pts = _mesh(_grid_order_points(0.2, 0.6, 0.3, 0.7))
    xs, ys = pts[ALL_MP, 0].astype(float), pts[ALL_MP, 1].astype(float)
    expect = (
        int(max(ys.min() - 25 / 100, 0) * 100),
        int(min(ys.max() + 25 / 100, 1) * 100),
        int(max(xs.min() - 25 / 300, 0) * 300),
        int(min(xs.max() + 25 / 300, 1) * 300),
    )
    assert crop_box(pts, 100, 300) == expect
    assert crop_box(pts, 100, 300)[0] == 5  # (0.3f - 0.25) * 100 = 5.0000001 -> 5


def test_crop_box_rejects_bad_input():
    with pytest.raises(ValueError):
        crop_box(np.zeros((100, 2)), 10, 10)  # neither 131 nor 468/478 points
    with pytest.raises(ValueError):
        crop_box(_mesh(), 0, 10)
    bad = _mesh()
    bad[ALL_MP[3], 0] = np.nan
    with pytest.raises(ValueError):
        crop_box(bad, 10, 10)


def test_normalise_hand_computed():
    box = (50, 175, 75, 275)  # crop 125 x 200
    pts = np.array(
        [
            [75 / 400, 50 / 200],  # top-left corner -> (0, 0)
            [275 / 400, 175 / 200],  # bottom-right -> (1, 1)
            [175 / 400, 112.5 / 200],  # centre -> (0.5, 0.5)
            [25 / 400, 200 / 200],  # outside: ((25-75)/200, (200-50)/125) = (-0.25, 1.2)
        ]
    )
    out = normalise(pts, box, 200, 400)
    assert out.shape == (2, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.T, [[0, 0], [1, 1], [0.5, 0.5], [-0.25, 1.2]], atol=1e-6)
    with pytest.raises(ValueError):
        normalise(pts, (10, 10, 0, 5), 200, 400)  # zero height


def test_split_pose_content_order():
    # x encodes the MediaPipe index, so every column can be traced back to its point.
    pts = np.zeros((478, 3), dtype=np.float32)
    pts[:, 0] = np.arange(478) / 1000.0
    pts[:, 1] = 0.5
    box = (0, 100, 0, 100)  # h = w = 100: normalised x = x
    pose, content = split_pose_content(pts, box, 100, 100)
    assert pose.shape == (2, 74) and content.shape == (2, 57)
    assert pose.dtype == np.float32 and content.dtype == np.float32
    np.testing.assert_allclose(pose[0] * 1000, POSE_MP, atol=1e-3)
    np.testing.assert_allclose(content[0] * 1000, CONTENT_MP, atol=1e-3)
    # Section 2: pose = ORDER[0:4] + ORDER[21:91]; content = jaw ORDER[4:21] then lips ORDER[91:131].
    assert POSE_MP.tolist() == list(ORDER[0:4]) + list(ORDER[21:91])
    np.testing.assert_allclose(content[0, :17] * 1000, ORDER[4:21], atol=1e-3)
    np.testing.assert_allclose(content[0, 17:] * 1000, ORDER[91:131], atol=1e-3)
    np.testing.assert_allclose(pose[1], 0.5)


def test_lip_openness():
    pts = _mesh()
    pts[0] = (0.5, 0.4, 5.0)
    pts[17] = (0.53, 0.44, -7.0)  # z is ignored
    assert lip_openness(pts) == pytest.approx(0.05, abs=1e-7)
    pts[17] = pts[0]
    assert lip_openness(pts) == 0.0


def test_crop_face():
    frame = np.zeros((200, 400, 3), dtype=np.uint8)
    frame[:, :, 0] = np.arange(400, dtype=np.uint8)[None, :] % 256
    frame[50:175, 75:275, 2] = 200
    crop = crop_face(frame, (50, 175, 75, 275))
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert np.all(crop[..., 2] == 200) and np.all(crop[..., 1] == 0)
    np.testing.assert_array_equal(crop, cv2.resize(frame[50:175, 75:275], (128, 128)))
    assert crop_face(frame, (0, 10, 0, 10), size=64).shape == (64, 64, 3)


# ------------------------------------------------------------------------------------- FaceRecord


def test_record_from_points_and_full_order():
    pts = _mesh(_grid_order_points(0.25, 0.625, 0.375, 0.75))
    pts[0, :2] = (0.4, 0.5)
    pts[17, :2] = (0.4, 0.56)
    rec = record_from_points(pts, 200, 400, index=7)
    assert rec.found and rec.index == 7 and rec.reason == ""
    assert rec.box == crop_box(pts, 200, 400)
    assert rec.crop_hw == (rec.box[1] - rec.box[0], rec.box[3] - rec.box[2])
    assert rec.lip_openness == pytest.approx(lip_openness(pts))
    full = rec.full
    assert full.shape == (2, 131) and full.dtype == np.float32
    # Column c of the full array is MediaPipe point FULL_MP[c], normalised to the box.
    np.testing.assert_array_equal(full, normalise(pts[FULL_MP], rec.box, 200, 400))
    np.testing.assert_array_equal(full[:, :74], rec.pose)
    np.testing.assert_array_equal(full[:, 74:], rec.content)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.found = False  # type: ignore[misc]


def test_no_face_record():
    rec = FaceRecord.no_face(3, "no face detected")
    assert not rec.found and rec.index == 3 and rec.reason == "no face detected"
    assert rec.points is None and rec.box is None and rec.pose is None and rec.content is None
    assert rec.lip_openness is None and rec.full is None and rec.crop_hw is None


def test_degenerate_box_is_no_face():
    # Every point right of the frame: x_min - margin >= 1, so x1 >= w = x2.
    pts = _mesh(_grid_order_points(1.1, 1.3, 0.3, 0.6))
    rec = record_from_points(pts, 200, 400, index=2)
    assert not rec.found and rec.index == 2 and "degenerate" in rec.reason


def test_serialisation_round_trip(tmp_path):
    a = record_from_points(_mesh(_grid_order_points(0.25, 0.625, 0.375, 0.75)), 200, 400, index=0)
    b = FaceRecord.no_face(1, "no face detected")
    c = record_from_points(_mesh(_grid_order_points(0.1, 0.5, 0.2, 0.9)), 300, 300, index=2)
    arrays = records_to_arrays([a, b, c])
    assert arrays["found"].tolist() == [True, False, True]
    assert arrays["points"].shape == (3, 478, 3) and arrays["pose"].shape == (3, 2, 74)
    np.savez(tmp_path / "faces.npz", **arrays)
    with np.load(tmp_path / "faces.npz", allow_pickle=False) as d:
        back = records_from_arrays(d)
    assert [r.index for r in back] == [0, 1, 2]
    assert [r.found for r in back] == [True, False, True]
    assert back[1].reason == "no face detected" and back[1].points is None and back[1].box is None
    for orig, new in [(a, back[0]), (c, back[2])]:
        assert new.box == orig.box and isinstance(new.box[0], int)
        assert new.lip_openness == orig.lip_openness
        for field in ("points", "pose", "content", "full"):
            np.testing.assert_array_equal(getattr(new, field), getattr(orig, field))
    empty = records_to_arrays([])
    assert empty["points"].shape == (0, 478, 3) and records_from_arrays(empty) == []


# -------------------------------------------------------------------------------------- MediaPipe


def test_import_is_lazy():
    code = "import sys, engine.core.face; print('mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_mediapipe_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(RuntimeError, match="0.10.21"):
        FaceLandmarker()
    monkeypatch.setitem(sys.modules, "mediapipe", types.ModuleType("mediapipe"))  # no .solutions
    with pytest.raises(RuntimeError, match="0.10.21"):
        FaceLandmarker()


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as lm:
        yield lm


def test_config_defaults(landmarker):
    assert landmarker.config == FaceMeshConfig(True, 1, True, 0.5, 25)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float32", "grey", "bgra", "empty", "list"],
)
def test_bad_frames_raise_value_error(landmarker, frame):
    with pytest.raises(ValueError, match="frame"):
        landmarker.detect(frame)


def test_no_face_frames_and_close():
    grey = np.full((240, 320, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    with FaceLandmarker() as lm:
        recs = lm.detect_many([grey, noise], start_index=10)
    assert [r.index for r in recs] == [10, 11]
    for r in recs:
        assert not r.found and r.reason == "no face detected" and r.points is None
    assert lm.closed
    with pytest.raises(RuntimeError, match="closed"):
        lm.detect(grey)


def _read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        while i <= max(indices):
            ok, frame = cap.read()
            if not ok:
                break
            if i in indices:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    return frames


@pytest.mark.parametrize("clip", CLIPS)
def test_facemesh_on_talking_clip(landmarker, clip):
    path = MEDIA / clip
    if not path.exists():
        pytest.skip(f"{path} not available")
    indices = [0, 20, 40, 60, 80]
    frames = _read_frames(path, indices)
    assert len(frames) == len(indices)
    recs = landmarker.detect_many(frames, start_index=100)
    assert [r.index for r in recs] == [100 + i for i in range(len(indices))]
    lips = []
    for rec, frame in zip(recs, frames, strict=True):
        h, w = frame.shape[:2]
        assert rec.found, rec.reason
        assert rec.points.shape == (478, 3) and rec.points.dtype == np.float32
        y1, y2, x1, x2 = rec.box
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        assert min(rec.crop_hw) > 60  # a talking head fills a good part of the frame
        full = rec.full
        inside = ((full >= 0) & (full <= 1)).all(axis=0).mean()
        assert inside > 0.95
        # The 25-px margin keeps the landmarks off the crop edges.
        assert full.min() > 0.0 and full.max() < 1.0
        assert rec.lip_openness > 0
        lips.append(rec.lip_openness)
        assert crop_face(frame, rec.box).shape == (128, 128, 3)
        sketch = draw_sketch(full, rec.crop_hw)
        assert (sketch > 0).any(axis=2).sum() > 500  # a real line drawing
    assert np.ptp(lips) > 2e-3, lips  # the mouth moves while talking


def test_facemesh_on_still_portrait(landmarker):
    path = MEDIA / "still_portrait.png"
    if not path.exists():
        pytest.skip(f"{path} not available")
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rec = landmarker.detect(frame, index=5)
    assert rec.found and rec.index == 5, rec.reason
    h, w = frame.shape[:2]
    y1, y2, x1, x2 = rec.box
    assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
    assert 50 < rec.crop_hw[0] < h / 2 and 50 < rec.crop_hw[1] < w / 2  # a small face
    assert rec.lip_openness > 0

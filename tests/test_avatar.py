"""Avatar preparation: FaceMesh per frame, references, masks, the cache, missing faces, errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

from engine.core.avatar import AvatarConfig, AvatarError, prepare_avatar
from engine.core.schedule import reference_indices
from engine.core.sketch import draw_sketches
from tests.conftest import ROOT

PORTRAIT = ROOT / "assets" / "portrait.png"
ARRAYS = (
    "points",
    "detected",
    "boxes",
    "pose",
    "content",
    "lip",
    "crops",
    "landmark_ref_idx",
    "ref_idx",
    "ref_imgs",
    "ref_sketches",
    "mask_flat",
    "mask_offsets",
)


@pytest.fixture(scope="module")
def talk_b(media_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return prepare_avatar(media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=5), cache), cache


def test_prepared_video_avatar_has_consistent_data(talk_b):
    av_, _ = talk_b
    L = av_.n_frames
    assert L == 125 and av_.frame_size == (590, 590)
    assert av_.detected.all() and av_.report.filled == [] and av_.report.n_detected == 125
    assert (
        av_.pose.shape == (L, 2, 74)
        and av_.content.shape == (L, 2, 57)
        and av_.crops.shape == (L, 128, 128, 3)
    )
    y1, y2, x1, x2 = av_.boxes.T
    assert np.all((0 <= y1) & (y1 < y2) & (y2 <= 590) & (0 <= x1) & (x1 < x2) & (x2 <= 590))
    assert 0.0 < av_.pose.min() and av_.pose.max() < 1.0  # the 25-pixel margin keeps landmarks inside
    # references: chosen by lip openness exactly as the authors (Nl = 15, N = 5 here)
    assert av_.landmark_ref_idx.tolist() == reference_indices(av_.lip, 15).tolist()
    assert av_.ref_idx.tolist() == reference_indices(av_.lip, 5).tolist()
    assert np.all(np.diff(av_.lip[av_.ref_idx]) >= 0)
    assert np.array_equal(av_.ref_imgs, av_.crops[av_.ref_idx])
    assert np.array_equal(av_.ref_sketches, draw_sketches(av_.full[av_.ref_idx], av_.crop_hw[av_.ref_idx]))
    imgs, sketches = av_.reference_tensors()
    assert imgs.shape == sketches.shape == (5, 3, 128, 128)
    # paste masks: one per frame, the size of its box, feathered
    for i in (0, 60, 124):
        m = av_.mask(i)
        assert m.shape == tuple(av_.crop_hw[i]) and m.max() == 255 and m[0].max() == 0 and m[:, 0].max() == 0


def test_second_prepare_reuses_the_cache_with_identical_data(talk_b, media_dir):
    first, cache = talk_b
    again = prepare_avatar(media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=5), cache)
    assert again.report.reused_cache and not first.report.reused_cache
    assert again.folder == first.folder
    for name in ARRAYS:
        assert np.array_equal(getattr(again, name), getattr(first, name)), name
    assert np.array_equal(np.asarray(again.frames), np.asarray(first.frames))
    other = prepare_avatar(media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=3), cache)
    assert other.folder != first.folder and len(other.ref_idx) == 3  # settings are part of the key


def test_still_image_avatar(tmp_path):
    avatar = prepare_avatar(PORTRAIT, AvatarConfig(), tmp_path)
    assert avatar.n_frames == 1 and avatar.frame_size == (512, 512)
    assert avatar.ref_idx.tolist() == [0] * 25 and avatar.landmark_ref_idx.tolist() == [0] * 15
    assert avatar.report.source_fps is None
    auto = prepare_avatar(PORTRAIT, AvatarConfig(n_refs="auto"), tmp_path)
    assert len(auto.ref_idx) == 1  # L/5, at least one


def test_30fps_avatar_is_converted_to_25fps(media_dir, tmp_path):
    avatar = prepare_avatar(media_dir / "talk_c_30fps.mp4", AvatarConfig(n_refs=3), tmp_path)
    assert avatar.report.source_fps == pytest.approx(30.0)
    assert avatar.n_frames == 166  # round((199 / 30) * 25)
    assert avatar.frame_size == (700, 700) and avatar.detected.all()


def _write_video(path, frames, fps=25):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "10"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_frames_without_a_face_are_filled_from_neighbours_and_reported(media_dir, tmp_path):
    src = [
        f.to_ndarray(format="bgr24")
        for _, f in zip(range(12), av.open(str(media_dir / "talk_b_25fps.mp4")).decode(video=0), strict=False)
    ]
    frames = [np.full_like(f, 128) if i in (5, 6, 11) else f for i, f in enumerate(src)]
    path = tmp_path / "gaps.mp4"
    _write_video(path, frames)
    avatar = prepare_avatar(path, AvatarConfig(n_refs=2), tmp_path / "cache")
    assert avatar.report.filled == [5, 6, 11] and avatar.report.n_detected == 9
    assert avatar.detected.tolist() == [i not in (5, 6, 11) for i in range(12)]
    # interpolated between frames 4 and 7; the last one copies frame 10
    expect5 = (2 / 3) * avatar.points[4].astype(np.float64) + (1 / 3) * avatar.points[7]
    assert np.allclose(avatar.points[5], expect5, atol=1e-6)
    assert np.array_equal(avatar.points[11], avatar.points[10])
    lo, hi = np.minimum(avatar.boxes[4], avatar.boxes[7]), np.maximum(avatar.boxes[4], avatar.boxes[7])
    assert np.all((lo - 1 <= avatar.boxes[5]) & (avatar.boxes[5] <= hi + 1))
    assert "3 without a face filled" in avatar.report.summary()


def test_smoothing_boxes_is_optional_and_off_by_default(talk_b, media_dir):
    plain, cache = talk_b
    smooth = prepare_avatar(media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=5, smooth_boxes=5), cache)
    assert not np.array_equal(smooth.boxes, plain.boxes)
    assert np.abs(np.diff(smooth.boxes, axis=0)).sum() < np.abs(np.diff(plain.boxes, axis=0)).sum()
    assert np.array_equal(smooth.points, plain.points)


def test_no_face_at_all_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.mp4"
    _write_video(path, [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(5)])
    with pytest.raises(AvatarError, match=r"noise\.mp4: no face found in any of its 5 frame"):
        prepare_avatar(path, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/meta.json"))  # nothing half-written is cached


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        prepare_avatar(tmp_path / "nope.mp4", cache_dir=tmp_path)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="bad.mp4"):
        prepare_avatar(bad, cache_dir=tmp_path)

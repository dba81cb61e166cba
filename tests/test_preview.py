"""The CPU preview renderer and the audio -> openness curve (engine.synth.preview, issue 6).

Without ../shared/media everything runs on the bundled still portrait, and on a small synthetic
"video" avatar made from it (the portrait warped to several mouth openings, each frame moved and
turned a little, FaceMesh run on every frame). With the media, the acceptance test renders real
speech through a talking-head video and the still, and checks with FaceMesh that the mouth moves
with the audio. Speed is measured in benchmarks/retrieval_speed.py, never asserted here.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from engine.core.audio import load_audio, melspectrogram, num_video_frames
from engine.core.avatar import AvatarConfig, prepare_avatar
from engine.core.face import FaceLandmarker, lip_openness, split_pose_content
from engine.core.schedule import pingpong
from engine.live.audio import IncrementalMel, LiveFrameScheduler, SpeechGate
from engine.synth.preview import (
    OpennessConfig,
    OpennessTracker,
    PreviewConfig,
    PreviewRenderer,
    openness_curve,
)

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "assets" / "portrait.png"
RNG_SEED = 6


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def syllables(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like loudness: band-limited noise in 4 Hz syllables with pauses (16 kHz), and its
    amplitude envelope per 40 ms frame."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.7 * t), 0, None) ** 2 * (np.sin(2 * np.pi * 0.35 * t) > -0.2)
    noise = rng.standard_normal(n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1 / 16000)
    spec[(f < 250) | (f > 3500)] = 0  # voiced-band noise
    noise = np.fft.irfft(spec, n)
    x = (0.08 * env * noise / noise.std()).astype(np.float32)
    frames = n // 640
    return x, env[: frames * 640].reshape(frames, 640).mean(axis=1)


def band_envelope(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Independent speech envelope: RMS of the 300-3000 Hz band per 40 ms frame (FFT, Hann)."""
    n = min(n_frames, x.size // 640)
    seg = x[: n * 640].reshape(n, 640) * np.hanning(640)
    f = np.fft.rfftfreq(640, 1 / 16000)
    power = np.abs(np.fft.rfft(seg, axis=1)) ** 2
    return np.sqrt(power[:, (f >= 300) & (f <= 3000)].sum(axis=1))


def live_openness(x: np.ndarray, gate: bool, seed: int = 0) -> np.ndarray:
    """The live front end (speech gate -> incremental mel -> the preview's frame scheduler) fed in
    random-sized pieces, each frame's openness; as many frames as a dub of it has (the live session
    goes on to the end of the audio)."""
    rng = np.random.default_rng(seed)
    sg = SpeechGate(warm_up_on_quiet=True) if gate else None  # the live session's gate for the preview
    mel = IncrementalMel()
    tracker = OpennessTracker()
    sched = LiveFrameScheduler(7, tracker.analysis, speech_gate=sg)
    values: dict[int, float] = {}

    def take(windows):
        for w in windows:
            assert w.output_indices == (w.index,)
            values[w.index] = tracker.push_window(w)

    i = 0
    while i < x.size:
        n = int(rng.integers(100, 2000))
        piece = x[i : i + n]
        i += n
        if sg is not None:
            sg.push(piece)
        take(sched.push(mel.push(piece)))
    take(sched.push(mel.finish()))
    out = np.zeros(max(values) + 1, np.float32)
    for p, v in values.items():
        out[p] = v
    return out[: num_video_frames(1 + x.size // 200)]


def measured_openness(fm: FaceLandmarker, frame: np.ndarray) -> float:
    """FaceMesh lip openness (points 0-17) over the outer eye-corner distance."""
    rec = fm.detect(frame)
    assert rec.found
    h, w = frame.shape[:2]
    p = rec.points[:, :2] * (w, h)
    return lip_openness(p) / float(np.linalg.norm(p[33] - p[263]))


def assert_blended_within_mask(out: np.ndarray, template: np.ndarray, info) -> None:
    """Outside the box: the template exactly. Inside: out = source * mask + template * (1 - mask)
    up to rounding, the template exactly where the mask is 0, and the mask is feathered (0 on the
    box's sides inside the frame, no steps)."""
    y1, y2, x1, x2 = info.box
    template = np.asarray(template)
    outside = np.ones(template.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], template[outside])
    o = out[y1:y2, x1:x2].astype(np.int16)
    t = template[y1:y2, x1:x2].astype(np.int16)
    s = info.source.astype(np.int16)
    m = info.mask
    assert m.shape == o.shape[:2] and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    assert (np.abs(o - t) <= m[..., None] * np.abs(s - t) + 1.0).all()
    assert np.array_equal(o[m == 0], t[m == 0])
    h, w = template.shape[:2]
    sides = [(y1 > 0, m[0]), (y2 < h, m[-1]), (x1 > 0, m[:, 0]), (x2 < w, m[:, -1])]
    assert all(side.max() == 0.0 for inside, side in sides if inside)
    assert np.abs(np.diff(m, axis=0)).max() < 0.3 and np.abs(np.diff(m, axis=1)).max() < 0.3


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as fm:
        yield fm


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    return prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path_factory.mktemp("portrait"))


@pytest.fixture(scope="module")
def synthetic_video(portrait, landmarker):
    """A 24-frame "video" avatar from the still: mouths from closed to wide open, each frame moved,
    scaled and turned a little; FaceMesh points of every frame (as prepare_avatar finds them)."""
    warp = PreviewRenderer(portrait)
    rng = np.random.default_rng(RNG_SEED)
    h, w = portrait.frame_size
    frames, points, boxes, content = [], [], [], []
    for k in range(24):
        warp.reset()
        img = warp.render(0, (k % 8) / 7.0)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-2, 2), 1 + rng.uniform(-0.02, 0.02))
        m[:, 2] += rng.uniform(-4, 4, 2)
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        rec = landmarker.detect(img)
        assert rec.found
        frames.append(img)
        points.append(rec.points)
        boxes.append(rec.box)
        content.append(split_pose_content(rec.points, rec.box, h, w)[1])
    return SimpleNamespace(
        frames=np.stack(frames),
        points=np.stack(points),
        detected=np.ones(len(frames), bool),
        boxes=np.array(boxes),
        content=np.stack(content),
        n_frames=len(frames),
        frame_size=(h, w),
    )


@pytest.fixture(scope="module")
def speech(media_dir):
    return load_audio(media_dir / "speech_c_16k_60s.wav")[: 10 * 16000]


@pytest.fixture(scope="module")
def talk_b(media_dir, tmp_path_factory):
    return prepare_avatar(
        media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=1), tmp_path_factory.mktemp("b")
    )


# --------------------------------------------------------------------------------------------
# audio -> openness
# --------------------------------------------------------------------------------------------


def test_silence_and_quiet_noise_give_exactly_zero():
    rng = np.random.default_rng(0)
    for x in (
        np.zeros(3 * 16000, np.float32),
        (10 ** (-65 / 20) * rng.standard_normal(3 * 16000)).astype(np.float32),
    ):
        for gate in (True, False):
            curve = openness_curve(x, speech_gate=gate)
            assert curve.shape == (num_video_frames(1 + x.size // 200),) and curve.dtype == np.float32
            assert np.array_equal(curve, np.zeros_like(curve))


def test_openness_follows_the_syllable_envelope():
    x, env = syllables(8.0)
    curve = openness_curve(x, speech_gate=False)
    assert curve.shape == (num_video_frames(1 + x.size // 200),)
    assert 0.0 <= curve.min() and curve.max() <= 1.0 and curve.max() > 0.8
    n = min(len(curve), len(env))
    r = np.corrcoef(curve[:n], env[:n])[0, 1]
    print(f"r(openness, syllable envelope) = {r:.3f}")
    assert r > 0.7
    pauses = np.flatnonzero(env[:n] == 0)  # the long pauses: the mouth closes completely
    assert (curve[pauses[(pauses > 5) & (pauses < n - 5)] + 3] == 0).mean() > 0.5


def test_streaming_tracker_equals_the_whole_file_function():
    x, _ = syllables(6.0, seed=1)
    whole = openness_curve(x, speech_gate=False)
    live = live_openness(x, gate=False)
    assert live.shape == whole.shape
    np.testing.assert_array_equal(live, whole)


def test_streaming_tracker_with_the_speech_gate_equals_the_whole_file_function(speech):
    whole = openness_curve(speech)
    live = live_openness(speech, gate=True, seed=3)
    np.testing.assert_array_equal(live, whole)
    assert (whole == 0).any() and whole.max() > 0.8  # the clip opens with silence, then speech


def test_tracker_reset_and_smoothing():
    x, _ = syllables(3.0)
    mel = melspectrogram(x)
    tr = OpennessTracker(OpennessConfig(attack=1.0, release=1.0, snap=0.0))
    blocks = [tr.analysis.block(mel, q) for q in range(num_video_frames(mel.shape[1]))]
    raw = [tr.push(b) for b in blocks]
    tr2 = OpennessTracker()
    smooth = [tr2.push(b) for b in blocks]
    # the smoothed curve moves less from frame to frame than the raw targets
    assert np.abs(np.diff(smooth)).max() < np.abs(np.diff(raw)).max()
    assert tr2.peak_db is not None
    peak = tr2.peak_db
    tr2.reset()
    assert tr2.value == 0.0 and tr2.peak_db == peak  # the learnt range is kept over a flush
    tr2.reset(levels=True)
    assert tr2.peak_db is None and tr2.noise_db is None
    assert tr2.push(np.full((80, tr2.analysis.n_frames), -4.0, np.float32)) == 0.0  # digital silence
    with pytest.raises(ValueError):
        tr2.push(np.zeros((80, 16), np.float32))  # a renderer chunk: not this analysis


# --------------------------------------------------------------------------------------------
# still image: warp mode
# --------------------------------------------------------------------------------------------


def test_still_avatar_warps_and_is_exact_at_rest(portrait):
    r = PreviewRenderer(portrait)
    assert r.mode == "warp"
    out = r.render(0, 0.0)
    assert np.array_equal(out, portrait.frames[0])
    assert r.last.mode == "template"
    buf = np.zeros_like(out)
    assert r.render(0, 0.0, out=buf) is buf and np.array_equal(buf, portrait.frames[0])


def test_still_mouth_opens_with_openness_and_looks_like_a_mouth(portrait, landmarker):
    r = PreviewRenderer(portrait)
    meas = []
    for o in (0.0, 0.25, 0.5, 0.75, 1.0):
        r.reset()
        out = r.render(0, o)
        assert_blended_within_mask(out, portrait.frames[0], r.last)
        meas.append(measured_openness(landmarker, out))
    print("measured openness:", np.round(meas, 3))
    assert np.all(np.diff(meas) > 0)
    assert meas[-1] > 1.4 * meas[0]
    # the opening is dark (a mouth interior, not skin or a glitch): the dark part of the region
    # between the inner lips of the wide-open mouth
    rec = landmarker.detect(out)
    p = rec.points[:, :2] * portrait.frame_size[::-1]
    inner = np.array(
        [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
    )
    mask = np.zeros(out.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(p[inner]).astype(np.int32)], 1)
    lum = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[mask > 0].astype(float)
    skin = cv2.cvtColor(np.asarray(portrait.frames[0]), cv2.COLOR_BGR2GRAY)[
        int(p[152, 1]) - 8 : int(p[152, 1]) - 2, int(p[152, 0]) - 3 : int(p[152, 0]) + 3
    ]
    print(f"interior: darkest half {np.sort(lum)[: len(lum) // 2].mean():.0f}, chin skin {skin.mean():.0f}")
    assert np.sort(lum)[: len(lum) // 2].mean() < 0.5 * skin.mean()


def triangle_areas(p: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])


def test_warp_mesh_never_folds(portrait, synthetic_video):
    for avatar, templates in ((portrait, [0]), (synthetic_video, range(24))):
        r = PreviewRenderer(avatar, PreviewConfig(mode="warp"))
        for t in templates:
            src, _, tris = r.warp_mesh(t, 0.0)
            a0 = triangle_areas(src, tris)
            ok = np.abs(a0) > 1e-6
            for o in (0.25, 0.5, 0.75, 1.0):
                dst = r.warp_mesh(t, o)[1]
                assert (np.sign(a0[ok]) == np.sign(triangle_areas(dst, tris)[ok])).all(), (t, o)
            assert np.abs(dst - src).max() > 2.0  # it does move


def test_warp_mesh_never_folds_on_any_frame_of_a_video(talk_b):
    r = PreviewRenderer(talk_b, PreviewConfig(mode="warp"))
    for t in range(talk_b.n_frames):
        src, _, tris = r.warp_mesh(t, 0.0)
        a0 = triangle_areas(src, tris)
        ok = np.abs(a0) > 1e-6
        for o in (0.25, 0.5, 0.75, 1.0):
            a1 = triangle_areas(r.warp_mesh(t, o)[1], tris)
            assert (np.sign(a0[ok]) == np.sign(a1[ok])).all(), (t, o)


def test_warp_mode_keeps_everything_outside_the_mask(synthetic_video):
    r = PreviewRenderer(synthetic_video, PreviewConfig(mode="warp"))
    for i, o in enumerate((0.2, 0.9, 0.5, 1.0)):
        t = (5 * i) % synthetic_video.n_frames
        out = r.render(t, o)
        assert r.last.mode == "warp"
        assert_blended_within_mask(out, synthetic_video.frames[t], r.last)


# --------------------------------------------------------------------------------------------
# video: retrieval mode (synthetic video, no media needed)
# --------------------------------------------------------------------------------------------


def test_video_avatar_uses_retrieval(synthetic_video):
    r = PreviewRenderer(synthetic_video)
    assert r.mode == "retrieval"
    lo = r.library_openness
    assert lo.shape == (24,) and lo.min() == 0.0 and lo.max() == 1.0
    # frames made with a wider mouth rank as more open
    made = np.arange(24) % 8
    assert np.corrcoef(made, lo)[0, 1] > 0.9


def test_retrieval_blends_only_inside_a_feathered_mask(synthetic_video):
    r = PreviewRenderer(synthetic_video)
    rng = np.random.default_rng(1)
    seq = np.clip(np.repeat(rng.uniform(0, 1, 12), 3) + rng.normal(0, 0.05, 36), 0, 1)
    modes, fades = set(), 0
    for i, o in enumerate(seq):
        t = int(pingpong(i, synthetic_video.n_frames))
        out = r.render(t, float(o))
        info = r.last
        assert info.template_index == t and 0 <= info.pick < 24
        assert_blended_within_mask(out, synthetic_video.frames[t], info)
        modes.add(info.mode)
        fades += info.fade_from >= 0
    assert "retrieval" in modes and fades > 0  # cross-fades happened and were checked too


def test_picks_change_smoothly_and_rendering_is_deterministic(synthetic_video):
    cfg = PreviewConfig()
    r = PreviewRenderer(synthetic_video, cfg)
    seq = [0.0] * 4 + [1.0] * 6 + [0.0] * 6 + [0.6, 0.1, 0.9, 0.2] * 3
    frames, infos = [], []
    for i, o in enumerate(seq):
        frames.append(r.render(int(pingpong(i, 24)), o))
        infos.append(r.last)
    drawn = np.array([i.openness for i in infos])
    picked = np.array([i.pick_openness for i in infos])
    assert np.abs(np.diff(drawn)).max() <= cfg.max_step + 1e-9
    assert np.abs(np.diff(picked)).max() <= cfg.max_jump + 1e-9
    assert picked[9] > 0.7 and picked[15] < 0.15  # it does follow the target
    for info in infos:
        assert info.fade == 1.0 if info.fade_from < 0 else 0.0 < info.fade < 1.0
    # determinism: the same inputs after reset() give the same frames
    r.reset()
    again = [r.render(int(pingpong(i, 24)), o) for i, o in enumerate(seq)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    # the same openness on the same template, once settled, gives the same frame
    r.reset()
    outs = [r.render(5, 0.6) for _ in range(6)]
    assert np.array_equal(outs[-1], outs[-2])


def test_silence_picks_the_most_closed_mouths_and_keeps_closed_templates(synthetic_video):
    r = PreviewRenderer(synthetic_video)
    kept = 0
    for i in range(48):
        t = int(pingpong(i, 24))
        out = r.render(t, 0.0)
        assert r.last.pick_openness <= 0.1
        if r.last.mode == "template":
            kept += 1
            assert np.array_equal(out, synthetic_video.frames[t])
    assert kept > 0


def test_content_landmarks_drive_the_pick(synthetic_video):
    r = PreviewRenderer(synthetic_video)
    lo = r.library_openness
    for j in (3, 7, 14, 16):
        r.reset()
        # a frame's own landmarks on its own template: that frame (or one as open) is chosen,
        # whatever the openness argument says
        r.render(j, 1.0 - lo[j], content=synthetic_video.content[j])
        assert abs(r.last.pick_openness - lo[j]) < 0.15
        assert abs(r.content_openness(j, synthetic_video.content[j]) - lo[j]) < 1e-6
    with pytest.raises(ValueError):
        r.render(0, None)
    with pytest.raises(ValueError):
        r.render(0, 0.5, content=np.zeros((2, 40)))
    with pytest.raises(IndexError):
        r.render(24, 0.5)


def _shifted(avatar, dx: int, dy: int):
    """The avatar moved by (dx, dy) pixels inside its frames (the face towards an edge)."""
    h, w = avatar.frame_size
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    frames = np.stack(
        [cv2.warpAffine(np.asarray(f), m, (w, h), borderMode=cv2.BORDER_REPLICATE) for f in avatar.frames]
    )
    points = np.array(avatar.points, copy=True)
    points[..., 0] += dx / w
    points[..., 1] += dy / h
    return SimpleNamespace(
        frames=frames, points=points, detected=np.asarray(avatar.detected), boxes=avatar.boxes
    )


@pytest.mark.parametrize("dx, dy", [(0, 300), (-150, 0), (200, 0)])
def test_a_face_at_the_frame_edge_still_renders(portrait, synthetic_video, dx, dy):
    for avatar in (portrait, synthetic_video):
        moved = _shifted(avatar, dx, dy)
        r = PreviewRenderer(moved)
        for i, o in enumerate((0.3, 1.0, 0.6)):
            t = i % len(moved.frames)
            out = r.render(t, o)
            assert_blended_within_mask(out, moved.frames[t], r.last)
            assert not np.array_equal(out, moved.frames[t])


def test_retrieval_needs_a_video(portrait):
    with pytest.raises(ValueError):
        PreviewRenderer(portrait, PreviewConfig(mode="retrieval"))
    with pytest.raises(ValueError):
        PreviewConfig(mode="neural")


# --------------------------------------------------------------------------------------------
# acceptance with real media
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["talk_b", "talk_a", "still"])
def test_acceptance_mouth_follows_real_speech(
    which, request, media_dir, speech, portrait, landmarker, tmp_path
):
    """Acceptance A: ~10 s of real speech through openness_curve + PreviewRenderer over the
    template frames ping-pong; FaceMesh's lip openness on every rendered frame correlates with the
    audio (the openness curve, and an independent 300-3000 Hz RMS envelope) with r >= 0.5."""
    if which == "still":
        avatar = portrait
    elif which == "talk_b":
        avatar = request.getfixturevalue("talk_b")
    else:
        avatar = prepare_avatar(media_dir / f"{which}_25fps.mp4", AvatarConfig(n_refs=1), tmp_path)
    curve = openness_curve(speech)
    r = PreviewRenderer(avatar)
    assert r.mode == ("warp" if which == "still" else "retrieval")
    meas = np.empty(len(curve))
    for i, o in enumerate(curve):
        t = int(pingpong(i, avatar.n_frames))
        out = r.render(t, float(o))
        if i % 10 == 0:
            assert_blended_within_mask(out, avatar.frames[t], r.last)
        meas[i] = measured_openness(landmarker, out)
    env = band_envelope(speech, len(curve))
    n = len(env)
    r_curve = np.corrcoef(meas, curve)[0, 1]
    r_env = np.corrcoef(meas[:n], env)[0, 1]
    print(f"{which}: r(measured, openness curve) = {r_curve:.3f}, r(measured, band RMS) = {r_env:.3f}")
    assert r_curve >= 0.5 and r_env >= 0.5


def test_silence_on_a_video_avatar(talk_b):
    curve = openness_curve(np.zeros(4 * 16000, np.float32))
    assert not curve.any()
    r = PreviewRenderer(talk_b)
    closed = np.sort(r.library_openness)[int(0.1 * talk_b.n_frames)]  # the 10 % most closed
    kept = 0
    for i in range(2 * talk_b.n_frames):
        t = int(pingpong(i, talk_b.n_frames))
        out = r.render(t, float(curve[i % len(curve)]))
        assert r.last.pick_openness <= closed
        y1, y2, x1, x2 = r.last.box
        if r.last.mode == "template":
            kept += 1
            assert np.array_equal(out, talk_b.frames[t])
        else:
            assert_blended_within_mask(out, talk_b.frames[t], r.last)
    print(f"silence: template frame kept as is in {kept} of {2 * talk_b.n_frames} frames")

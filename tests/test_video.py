"""Tests of engine.core.video: probing, decoding with frame-rate conversion, images and MP4 writing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.core.audio import load_audio
from engine.core.video import (
    AAC_RATES,
    EncoderConfig,
    Mp4Writer,
    VideoError,
    VideoInfo,
    is_image,
    iter_frames,
    probe_video,
    read_frames,
    read_image,
    write_mp4,
)

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"

# Synthetic clips encode their frame index as three 32x32 blocks, one base-5 digit each.
LEVELS = np.array([0, 60, 120, 180, 240])
BLOCK = 32


def _index_frame(i: int) -> np.ndarray:
    digits = [(i // 25) % 5, (i // 5) % 5, i % 5]
    frame = np.zeros((BLOCK, 3 * BLOCK, 3), np.uint8)
    for j, d in enumerate(digits):
        frame[:, j * BLOCK : (j + 1) * BLOCK] = LEVELS[d]
    return frame


def _frame_index(frame: np.ndarray) -> int:
    digits = []
    for j in range(3):
        level = frame[8:-8, j * BLOCK + 8 : (j + 1) * BLOCK - 8].mean()
        digits.append(int(np.abs(LEVELS - level).argmin()))
    return digits[0] * 25 + digits[1] * 5 + digits[2]


def _make_clip(path: Path, fps: int, n: int) -> Path:
    """An H.264 MP4 of n index frames at fps, written with plain PyAV (frame i at pts i / fps)."""
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "10", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 3 * BLOCK, BLOCK, "yuv420p"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_index_frame(i), format="bgr24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def _expected_sources(src_fps: float, n_src: int, fps: float = 25.0) -> list[int]:
    """The documented rule with float times i/src_fps: count round-half-up, nearest (earlier on ties)."""
    total = max(1, int(np.floor(n_src / src_fps * fps + 0.5)))
    src_t = np.arange(n_src) / src_fps
    return [int(np.abs(src_t - k / fps).argmin()) for k in range(total)]


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _smooth_frames(n: int, w: int, h: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        b = 128 + 60 * np.sin((xx + 2 * i) / 17.0)
        g = 128 + 60 * np.cos((yy - i) / 13.0)
        r = 100 + 100 * (xx + yy) / (w + h)
        out.append(np.stack([b, g, r], axis=-1).round().astype(np.uint8))
    return out


# --------------------------------------------------------------------------------------------
# Frame-rate conversion on synthetic clips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src_fps, n_src, n_out, prefix",
    [
        (30, 40, 33, [0, 1, 2, 4, 5, 6, 7, 8, 10, 11]),  # k -> round(1.2 k)
        (24, 30, 31, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 13]),  # source 12 shown twice
        (120, 26, 5, [0, 5, 10, 14, 19]),  # fast source: count is known only at the end
        (25, 37, 37, list(range(37))),  # unchanged
    ],
)
def test_read_frames_converts_by_nearest_timestamp(tmp_path, src_fps, n_src, n_out, prefix):
    path = _make_clip(tmp_path / f"clip{src_fps}.mp4", src_fps, n_src)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.n_frames) == (96, 32, src_fps, n_src)
    assert info.duration_s == pytest.approx(n_src / src_fps, abs=1e-6) and not info.has_audio

    native = [_frame_index(f) for f in iter_frames(path)]
    assert native == list(range(n_src))

    frames, rinfo = read_frames(path, fps=25)
    assert rinfo.fps == src_fps
    assert len(frames) == n_out == round(n_src / src_fps * 25)
    assert all(f.dtype == np.uint8 and f.shape == (32, 96, 3) for f in frames)
    got = [_frame_index(f) for f in frames]
    assert got[: len(prefix)] == prefix
    assert got == _expected_sources(src_fps, n_src)

    # max_frames truncates the same sequence
    assert [_frame_index(f) for f in read_frames(path, fps=25, max_frames=4)[0]] == got[:4]


def test_iter_frames_other_target_rate(tmp_path):
    path = _make_clip(tmp_path / "clip25.mp4", 25, 20)
    got = [_frame_index(f) for f in iter_frames(path, fps=50)]  # doubling: every frame twice
    assert got == [i // 2 for i in range(40)]
    got = [_frame_index(f) for f in iter_frames(path, fps=12.5)]  # halving: the even frames
    assert got == list(range(0, 20, 2))


# --------------------------------------------------------------------------------------------
# Real media
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"shared media not present at {MEDIA}")
    return MEDIA


def test_talk_c_30fps_to_25(media):
    path = media / "talk_c_30fps.mp4"
    info = probe_video(path)
    assert info == VideoInfo(700, 700, 30.0, 199, pytest.approx(6.6333, abs=1e-3), True)
    frames, rinfo = read_frames(path, fps=25)
    assert rinfo.fps == 30.0
    assert len(frames) == 166 == round(199 / 30 * 25)  # 6.633 s * 25 = 165.8
    assert all(f.shape == (700, 700, 3) and f.dtype == np.uint8 for f in frames[::20])
    native = list(iter_frames(path, max_frames=30))
    for k in range(25):  # output k is native frame round(1.2 k), bit for bit
        assert np.array_equal(frames[k], native[round(1.2 * k)]), k


def test_talk_b_25fps_unchanged(media):
    frames, info = read_frames(media / "talk_b_25fps.mp4")
    assert len(frames) == 125 and info.n_frames == 125 and info.fps == 25.0 and info.has_audio
    assert frames[0].shape == (590, 590, 3) and frames[0].dtype == np.uint8


def test_still_portrait_is_image(media):
    assert is_image(media / "still_portrait.png") and not is_image(media / "talk_b_25fps.mp4")
    img = read_image(media / "still_portrait.png")
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _decoded_audio(path: Path) -> tuple[np.ndarray, int, float, str]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        meta_duration = float(s.duration * s.time_base)
        name, rate = s.codec_context.name, s.rate
        samples = np.concatenate([f.to_ndarray()[0] for f in c.decode(s)])
    return samples, rate, meta_duration, name


@pytest.mark.parametrize("audio_rate", [16000, 44100])
@pytest.mark.parametrize("size", [(96, 64), (101, 75)])
def test_mp4_writer_round_trip(tmp_path, audio_rate, size):
    w, h = size
    frames = _smooth_frames(30, w, h)
    audio = _tone(1.23, audio_rate)
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, w, h, fps=25, audio=audio, audio_rate=audio_rate) as writer:
        for f in frames:
            writer.write(f)
    writer.close()  # second close is harmless

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.average_rate == 25 and v.frames == 30
        assert float(v.duration * v.time_base) == pytest.approx(30 / 25)
        # odd sizes are padded by one (replicated edge) for yuv420p
        assert (v.width, v.height) == (w + w % 2, h + h % 2)
        decoded = [f.to_ndarray(format="bgr24") for f in c.decode(v)]
    assert len(decoded) == 30
    err = np.mean(
        [np.abs(d[:h, :w].astype(int) - f.astype(int)).mean() for d, f in zip(decoded, frames, strict=True)]
    )
    assert err < 3.0

    samples, rate, meta_duration, name = _decoded_audio(path)
    assert name == "aac" and rate == audio_rate
    assert abs(meta_duration - 1.23) < 0.04  # container duration: priming removed, exact length
    # the decoder returns whole 1024-sample AAC frames (priming skipped, end padding kept)
    assert audio.size <= samples.size < audio.size + 1024
    spectrum = np.abs(np.fft.rfft(samples[: audio.size] * np.hanning(audio.size)))
    assert abs(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()] - 440.0) < 5.0
    assert np.corrcoef(samples[: audio.size], audio)[0, 1] > 0.99  # aligned: no priming offset
    loaded = load_audio(path)
    assert 1.23 <= loaded.size / 16000 < 1.23 + 1024 / audio_rate + 1e-3


def test_unsupported_audio_rate_is_resampled(tmp_path):
    assert 22000 not in AAC_RATES
    path = tmp_path / "a.mp4"
    write_mp4(path, _smooth_frames(5, 32, 32), 25, audio=_tone(0.5, 22000), audio_rate=22000)
    samples, rate, meta_duration, _ = _decoded_audio(path)
    assert rate == 22050 and abs(meta_duration - 0.5) < 0.04


def test_write_video_only_and_helpers(tmp_path):
    path = tmp_path / "v.mp4"
    frames = _smooth_frames(12, 64, 48)
    assert write_mp4(path, frames, fps=30, crf=23, preset="ultrafast") == 12
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.n_frames, info.has_audio) == (64, 48, 30.0, 12, False)
    back, _ = read_frames(path, fps=30)
    assert len(back) == 12
    assert EncoderConfig().options() == {"crf": "18", "preset": "veryfast", "profile": "high"}
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "empty.mp4", [], fps=25)


def test_writer_closes_file_on_exception(tmp_path):
    path = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(path, 64, 48, audio=_tone(1.0, 16000), audio_rate=16000) as writer:
            for f in _smooth_frames(5, 64, 48):
                writer.write(f)
            raise RuntimeError("boom")
    info = probe_video(path)
    assert info.n_frames == 5 and info.has_audio
    assert len(read_frames(path)[0]) == 5


def test_writer_rejects_bad_frames(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4", 64, 48) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((48, 63, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((48, 64, 3), np.float32))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((48, 64), np.uint8))
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="audio_rate"):
        Mp4Writer(tmp_path / "y.mp4", 64, 48, audio=_tone(0.1, 16000))
    with pytest.raises(FileNotFoundError, match="directory"):
        Mp4Writer(tmp_path / "no_dir" / "z.mp4", 64, 48)
    empty = Mp4Writer(tmp_path / "empty.mp4", 64, 48, audio=_tone(0.1, 16000), audio_rate=16000)
    with pytest.raises(ValueError, match="no video frames"):
        empty.close()
    assert not (tmp_path / "empty.mp4").exists()
    empty.close()  # already closed: nothing to do


# --------------------------------------------------------------------------------------------
# Errors and images
# --------------------------------------------------------------------------------------------


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_frames(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "nope.mp4")

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="corrupt.mp4"):
        read_frames(corrupt)

    wav = tmp_path / "tone.wav"
    with av.open(str(wav), mode="w") as c:
        s = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        f = av.AudioFrame.from_ndarray((_tone(0.2, 16000)[None] * 32767).astype(np.int16), "s16", "mono")
        f.sample_rate, f.pts = 16000, 0
        for p in [*s.encode(f), *s.encode(None)]:
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        read_frames(wav)
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(wav)


def test_read_image_variants(tmp_path):
    assert is_image("a/b.PNG") and is_image("x.jpeg") and is_image("y.tiff") and not is_image("z.mp4")
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 128
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    img = read_image(tmp_path / "rgba.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8 and img[0, 0].tolist() == [10, 20, 30]

    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    img = read_image(tmp_path / "gray.png")
    assert img.shape == (20, 30, 3)
    assert np.array_equal(img[..., 0], gray) and np.array_equal(img[..., 2], gray)

    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    with pytest.raises(VideoError, match="fake.png"):
        read_image(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")

"""Offline dubbing end to end: frame counts, timing, compositing, batching, the CLI, errors."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from engine.cli import main
from engine.core.audio import load_audio, mel_chunks, melspectrogram
from engine.core.avatar import AvatarConfig, prepare_avatar
from engine.core.schedule import pingpong
from engine.offline.dub import dub_frames
from engine.synth.neural import DubConfig, DubError, NeuralSynthesizer
from tests.conftest import ROOT

PORTRAIT = ROOT / "assets" / "portrait.png"


def _write_wav(path, samples: np.ndarray, rate: int = 16000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _speech_like(seconds: float, rate: int = 16000) -> np.ndarray:
    """A voiced, syllable-rate modulated harmonic signal (no shared media needed)."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    return 0.3 * voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) / 2


def _chunks(wav: np.ndarray) -> np.ndarray:
    return mel_chunks(melspectrogram(wav))


def _dub(landmark_model, renderer_model, config: DubConfig, avatar, chunks) -> list:
    synth = NeuralSynthesizer.from_models(landmark_model, renderer_model, config)
    return list(dub_frames(synth, avatar, chunks, config.batch))


@pytest.fixture(scope="module")
def talk_b_run(media_dir, tmp_path_factory, landmark_model, renderer_model):
    """talk_b avatar (N=2) and 0.5 s of real speech, dubbed with 4 windows per call."""
    avatar = prepare_avatar(
        media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=2), tmp_path_factory.mktemp("c")
    )
    chunks = _chunks(load_audio(media_dir / "speech_a_44k.wav")[:8000])
    results = _dub(landmark_model, renderer_model, DubConfig(batch=4), avatar, chunks)
    return avatar, chunks, results


def test_one_frame_per_mel_chunk_in_order_with_the_authors_templates(talk_b_run):
    avatar, chunks, results = talk_b_run
    assert len(chunks) == 9  # 0.5 s: 41 mel frames; chunks start at int(k * 3.2) while start + 16 <= 41
    assert [r.index for r in results] == list(range(9))
    # windows 0, 0, 0, 1, ..., 6: the first face is written three times, then one face per window
    assert results[0].face is results[1].face is results[2].face
    assert len({id(r.face) for r in results}) == 7
    expected = [2, 2, 2] + [pingpong(p, avatar.n_frames) for p in range(3, 9)]
    assert [r.template for r in results] == expected
    for r in results:
        assert r.face.shape == (128, 128, 3) and r.face.dtype == np.uint8
        assert r.image.shape == (590, 590, 3) and r.box.yyxx == tuple(avatar.boxes[r.template])


def test_pixels_outside_the_pasted_face_equal_the_template_frame(talk_b_run):
    avatar, _, results = talk_b_run
    for r in results[2:]:
        template = np.asarray(avatar.frames[r.template])
        y1, y2, x1, x2 = r.box.yyxx
        touched = np.zeros(template.shape[:2], bool)
        touched[y1:y2, x1:x2] = avatar.mask(r.template) > 0
        assert np.array_equal(r.image[~touched], template[~touched])
        assert np.any(r.image[touched] != template[touched])


def test_faces_agree_within_one_grey_level_batched_or_not(talk_b_run, landmark_model, renderer_model):
    avatar, chunks, batched = talk_b_run
    single = _dub(landmark_model, renderer_model, DubConfig(batch=1), avatar, chunks)
    diffs = [
        int(np.abs(a.face.astype(int) - b.face.astype(int)).max())
        for a, b in zip(batched, single, strict=True)
    ]
    assert max(diffs) <= 1, diffs


def _probe(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(video=0))
        return (
            v.codec_context.name,
            float(v.average_rate),
            n,
            a.codec_context.name,
            float(a.duration * a.time_base),
        )


def test_cli_dub_of_a_still_image_writes_a_playable_mp4(tmp_path, capsys):
    """Runs on a fresh clone: the bundled portrait and synthetic speech."""
    wav = _speech_like(0.5)
    audio = _write_wav(tmp_path / "speech.wav", wav)
    out, faces = tmp_path / "out.mp4", tmp_path / "faces.npz"
    args = ["dub", "--avatar", str(PORTRAIT), "--audio", str(audio), "--out", str(out), "--refs", "1"]
    args += ["--random-weights", "--cache", str(tmp_path / "cache"), "--save-faces", str(faces), "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err and "frames at 25 fps" in captured.out
    n = len(_chunks(wav))
    vcodec, rate, frames, acodec, audio_s = _probe(out)
    assert (vcodec, rate, frames, acodec) == ("h264", 25.0, n, "aac")
    assert abs(audio_s - 0.5) <= 0.04  # the whole input audio, within one frame
    saved = np.load(faces)["faces"]
    assert saved.shape == (n - 2, 128, 128, 3) and saved.dtype == np.uint8
    assert not (tmp_path / "out.partial.mp4").exists()


def test_cli_dub_with_the_preview_renderer_needs_no_weights(tmp_path, capsys):
    """``--renderer preview``: the CPU preview renderer, no checkpoints; one frame per mel chunk and
    the portrait's mouth moves with the speech."""
    from engine.core.video import read_frames

    wav = np.concatenate([np.zeros(8000, np.float32), _speech_like(1.0)])
    audio = _write_wav(tmp_path / "speech.wav", wav)
    out = tmp_path / "preview.mp4"
    args = ["dub", "--avatar", str(PORTRAIT), "--audio", str(audio), "--out", str(out), "--refs", "1"]
    args += ["--renderer", "preview", "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(args) == 0
    stages = capsys.readouterr().out.split("time per stage")[1]
    assert "openness " in stages and "preview " in stages  # the preview renderer's stages ran
    n = len(_chunks(wav))
    vcodec, rate, frames, acodec, _ = _probe(out)
    assert (vcodec, rate, frames, acodec) == ("h264", 25.0, n, "aac")
    video = np.stack(read_frames(out)[0])
    avatar = prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path / "cache")
    y1, y2, x1, x2 = (int(v) for v in avatar.boxes[0])
    lower = video[:, (y1 + y2) // 2 : y2, x1:x2].astype(np.float32)
    rest = avatar.frames[0][(y1 + y2) // 2 : y2, x1:x2].astype(np.float32)
    change = np.abs(lower - rest).mean(axis=(1, 2, 3))  # per frame; codec noise is ~1-2 grey levels
    assert change[:10].max() < 3.0  # the leading silence: the photo at rest
    assert change[15:].max() > 8.0  # speech: the mouth opens
    assert main(args + ["--save-faces", str(tmp_path / "f.npz")]) == 2  # no 128x128 faces to save


def test_cli_dub_talking_head_with_real_speech(media_dir, tmp_path):
    audio = _write_wav(tmp_path / "a.wav", load_audio(media_dir / "speech_a_44k.wav")[:6400])
    out = tmp_path / "talk.mp4"
    args = ["dub", "--avatar", str(media_dir / "talk_b_25fps.mp4"), "--audio", str(audio), "--out", str(out)]
    assert (
        main(
            args
            + ["--refs", "1", "--batch", "2", "--random-weights", "--cache", str(tmp_path / "c"), "--quiet"]
        )
        == 0
    )
    vcodec, rate, frames, _, audio_s = _probe(out)
    assert (vcodec, rate, frames) == ("h264", 25.0, len(_chunks(load_audio(audio))))
    assert abs(audio_s - 0.4) <= 0.04


def test_30fps_avatar_dubs(media_dir, tmp_path, landmark_model, renderer_model):
    avatar = prepare_avatar(media_dir / "talk_c_30fps.mp4", AvatarConfig(n_refs=1), tmp_path)
    chunks = _chunks(_speech_like(0.3))
    results = _dub(landmark_model, renderer_model, DubConfig(), avatar, chunks)
    assert len(chunks) == 4  # 0.3 s: 25 mel frames
    assert len(results) == 4 and results[0].image.shape == (700, 700, 3)


def test_too_short_audio_and_missing_weights_are_clear_errors(
    tmp_path, capsys, monkeypatch, landmark_model, renderer_model
):
    avatar = prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path / "c")
    with pytest.raises(DubError, match="too short"):
        _dub(landmark_model, renderer_model, DubConfig(), avatar, _chunks(_speech_like(0.2)))
    audio = _write_wav(tmp_path / "s.wav", _speech_like(0.5))
    monkeypatch.chdir(tmp_path)  # no checkpoints/ folder here
    assert main(["dub", "--avatar", str(PORTRAIT), "--audio", str(audio), "--out", "o.mp4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no landmark transformer checkpoint found in checkpoints/" in err and "--random-weights" in err
    assert (
        main(["dub", "--avatar", "missing.png", "--audio", str(audio), "--out", "o.mp4", "--random-weights"])
        == 2
    )
    assert "avatar file not found: missing.png" in capsys.readouterr().err
    assert (
        main(["dub", "--avatar", str(PORTRAIT), "--audio", "none.wav", "--out", "o.mp4", "--random-weights"])
        == 2
    )
    assert "audio file not found: none.wav" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_cli_prepare_reports_and_reuses(tmp_path, capsys):
    assert main(["prepare", str(PORTRAIT), "--cache", str(tmp_path), "--refs", "3"]) == 0
    first = capsys.readouterr().out
    assert "1 frames, face found in 1" in first and "3 references" in first and "prepared in" in first
    assert main(["prepare", str(PORTRAIT), "--cache", str(tmp_path), "--refs", "3"]) == 0
    assert "reused cache" in capsys.readouterr().out


def test_fast_and_plain_backends_give_the_same_faces(talk_b_run, landmark_model, renderer_model):
    avatar, chunks, fast = talk_b_run  # the default backend is the fast one
    plain = _dub(landmark_model, renderer_model, DubConfig(batch=4, backend="plain"), avatar, chunks[:5])
    assert DubConfig().backend == "fast"
    diffs = [
        int(np.abs(a.face.astype(int) - b.face.astype(int)).max()) for a, b in zip(plain, fast, strict=False)
    ]
    assert len(diffs) == 5 and max(diffs) <= 1, diffs


def test_background_writer_keeps_order_and_reports_errors():
    from engine.offline.dub import BackgroundWriter

    class Sink:
        def __init__(self, fail_at=None):
            self.got, self.fail_at = [], fail_at

        def write(self, frame):
            if len(self.got) == self.fail_at:
                raise OSError("disk full")
            self.got.append(int(frame[0, 0, 0]))

    sink = Sink()
    w = BackgroundWriter(sink, maxsize=2)
    for i in range(20):
        w.write(np.full((2, 2, 3), i, np.uint8))
    w.close()
    assert sink.got == list(range(20))
    w = BackgroundWriter(Sink(fail_at=3), maxsize=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            w.write(np.full((2, 2, 3), i, np.uint8))
        w.close()


def test_onnx_backend_dubs_like_the_torch_backend(talk_b_run, landmark_model, renderer_model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    avatar, chunks, fast = talk_b_run
    onnx = _dub(landmark_model, renderer_model, DubConfig(batch=2, backend="onnx"), avatar, chunks[:4])
    diffs = [
        int(np.abs(a.face.astype(int) - b.face.astype(int)).max()) for a, b in zip(onnx, fast, strict=False)
    ]
    assert len(diffs) == 4 and max(diffs) <= 1, diffs


# --------------------------------------------------------------------------------------------
# The streaming pipeline: the same output as the whole-file one, bounded buffers
# --------------------------------------------------------------------------------------------


def _decoded(path):
    """All frames (BGR) and the audio samples of an MP4, decoded."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return frames, audio


def _whole_file_dub(avatar, audio_path, out, batch=4):
    """The dub as it was before streaming: all the audio in memory (16 kHz for the mel and the preview
    renderer's openness curve, 48 kHz for the output), every frame through one Mp4Writer."""
    from engine.core.video import Mp4Writer
    from engine.synth.preview.synthesizer import PreviewSynthesizer

    wav = load_audio(audio_path)
    chunks = mel_chunks(melspectrogram(wav))
    h, w = avatar.frame_size
    with Mp4Writer(out, w, h, fps=25, audio=load_audio(audio_path, 48000), audio_rate=48000) as writer:
        for frame in dub_frames(PreviewSynthesizer(), avatar, chunks, batch, wav):
            writer.write(frame.image)
    return len(chunks)


@pytest.mark.parametrize("source", ["speech_a_44k.wav", "speech_b_48k.wav"])
def test_streaming_dub_makes_the_same_file_as_the_whole_file_dub(media_dir, tmp_path, source, monkeypatch):
    """Real speech at 44.1 and 48 kHz (stereo), the talk_b video avatar, the preview renderer (its
    openness curve computed as the audio streams): every frame given to the encoder is the same, and
    every decoded audio sample. (The decoded frames are compared within codec noise: this FFmpeg
    build's H.264 encoder does not always make the same bytes from the same frames.)"""
    import hashlib

    from engine.core.video import Mp4Writer
    from engine.offline.dub import dub_file

    written: dict[str, list[str]] = {}
    write = Mp4Writer.write

    def recording_write(self, frame):
        written.setdefault(self.path.stem, []).append(hashlib.sha256(frame.tobytes()).hexdigest())
        write(self, frame)

    monkeypatch.setattr(Mp4Writer, "write", recording_write)
    audio = media_dir / source
    cache = tmp_path / "c"
    avatar = prepare_avatar(media_dir / "talk_b_25fps.mp4", AvatarConfig(n_refs=1), cache)
    n = _whole_file_dub(avatar, audio, tmp_path / "before.mp4")
    summary = dub_file(
        media_dir / "talk_b_25fps.mp4",
        audio,
        tmp_path / "after.mp4",
        avatar_config=AvatarConfig(n_refs=1),
        cache_dir=cache,
        progress=False,
        renderer="preview",
        config=DubConfig(batch=4),
    )
    assert summary.frames == n and summary.audio_seconds == load_audio(audio).size / 16000
    assert len(written["before"]) == n and written["after.partial"] == written["before"]
    assert len(set(written["before"])) > n // 2  # the mouth moves: not one picture over and over
    before, after = _decoded(tmp_path / "before.mp4"), _decoded(tmp_path / "after.mp4")
    assert len(before[0]) == len(after[0]) == n
    noise = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(before[0], after[0], strict=True)]
    assert max(noise) < 1.0, max(noise)
    assert before[1].size == after[1].size and np.array_equal(before[1], after[1])


def test_streamed_chunks_windows_and_openness_equal_the_whole_file_ones(media_dir):
    from engine.core.schedule import windows
    from engine.offline.dub import DubAudio, stream_windows
    from engine.synth.preview import StreamingOpenness, openness_curve

    path = media_dir / "speech_a_44k.wav"
    wav, chunks = load_audio(path), _chunks(load_audio(path))
    out = []
    audio = DubAudio(path)
    opened = StreamingOpenness()
    got = list(
        stream_windows(audio.chunks(out.append, opened.add_samples, opened.end), 7, on_window=opened.window)
    )
    assert audio.samples == wav.size and audio.chunks_total == len(chunks)
    assert np.array_equal(np.concatenate(out), load_audio(path, 48000))
    ref = windows(len(chunks), 7, chunks)
    assert len(got) == len(ref) == len(chunks) - 2
    for a, b in zip(got, ref, strict=True):
        assert (a.index, a.output_indices, a.templates, a.render_template) == (
            b.index,
            b.output_indices,
            b.templates,
            b.render_template,
        )
        assert np.array_equal(a.mel, b.mel)
    curve = openness_curve(wav)
    assert len(opened) == curve.size and np.array_equal(
        np.array([opened[i] for i in range(curve.size)]), curve
    )
    assert curve.max() > 0.5 and (curve == 0).any()  # speech and pauses both present


def test_streaming_neural_dub_gives_the_same_faces(media_dir, tmp_path, landmark_model, renderer_model):
    from engine.offline.dub import DubAudio

    path = _write_wav(tmp_path / "a.wav", load_audio(media_dir / "speech_a_44k.wav")[:6400])
    avatar = prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path / "c")
    whole = _dub(landmark_model, renderer_model, DubConfig(batch=3), avatar, _chunks(load_audio(path)))
    synth = NeuralSynthesizer.from_models(landmark_model, renderer_model, DubConfig(batch=3))
    streamed = list(dub_frames(synth, avatar, DubAudio(path).chunks(), 3))
    assert [f.index for f in streamed] == [f.index for f in whole] == list(range(len(whole)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(whole, streamed, strict=True))


def test_a_too_short_stream_is_refused_before_any_frame(tmp_path, capsys):
    from engine.offline.dub import DubAudio
    from engine.synth.preview.synthesizer import PreviewSynthesizer

    avatar = prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path / "c")
    path = _write_wav(tmp_path / "s.wav", _speech_like(0.2))
    with pytest.raises(DubError, match=r"too short: 1 mel chunk\(s\)"):
        next(dub_frames(PreviewSynthesizer(), avatar, DubAudio(path).chunks()))
    out = tmp_path / "o.mp4"
    args = ["dub", "--avatar", str(PORTRAIT), "--audio", str(path), "--out", str(out), "--quiet"]
    assert main(args + ["--renderer", "preview", "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "the audio is too short: 1 mel chunk(s)" in err and err.count("\n") == 1, err
    assert not out.exists() and not (tmp_path / "o.partial.mp4").exists()


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [48000, 22000])  # an AAC rate; one resampled to 22050
def test_mp4_writer_incremental_audio_makes_the_same_file(tmp_path, rate):
    from engine.core.video import Mp4Writer

    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(20)]
    audio = np.stack([_tone(0.83, rate), 0.5 * _tone(0.83, rate)], axis=1)  # stereo: mixed to mono
    with Mp4Writer(tmp_path / "whole.mp4", 48, 32, audio=audio, audio_rate=rate) as w:
        for f in frames:
            w.write(f)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(0, len(audio), 30))
    pieces = np.split(audio, cuts)
    largest = max(len(p) for p in pieces)
    pending, fed = [], 0
    with Mp4Writer(tmp_path / "pieces.mp4", 48, 32, audio_rate=rate, incremental_audio=True) as w:
        for i, f in enumerate(frames):
            while pieces and fed < (i + 3) * rate // 25:  # audio ~3 frames ahead of the video
                fed += len(pieces[0])
                w.add_audio(pieces.pop(0))
            w.write(f)
            pending.append(w.audio_samples_pending)
        for p in pieces:
            w.add_audio(p)
        w.end_audio()
        with pytest.raises(ValueError, match="before end_audio"):
            w.add_audio(audio[:10])
    a, b = _decoded(tmp_path / "whole.mp4"), _decoded(tmp_path / "pieces.mp4")
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True)) and len(b[0]) == 20
    assert np.array_equal(a[1], b[1])
    assert max(pending) <= 3 * rate // 25 + 1024 + largest  # what was ahead of the video, no more
    with pytest.raises(ValueError, match="not both"):
        Mp4Writer(tmp_path / "x.mp4", 48, 32, audio=audio, audio_rate=rate, incremental_audio=True)
    with pytest.raises(ValueError, match="audio_rate"):
        Mp4Writer(tmp_path / "x.mp4", 48, 32, incremental_audio=True)
    with Mp4Writer(tmp_path / "v.mp4", 48, 32) as w:
        with pytest.raises(ValueError, match="incremental_audio"):
            w.add_audio(audio)
        w.write(frames[0])


def test_background_writer_passes_audio_in_order_with_the_frames():
    from engine.offline.dub import BackgroundWriter

    class Sink:
        def __init__(self):
            self.calls = []

        def write(self, frame):
            self.calls.append(("frame", int(frame[0, 0, 0])))

        def add_audio(self, samples):
            self.calls.append(("audio", int(samples[0])))

        def end_audio(self):
            self.calls.append(("end",))

    sink = Sink()
    w = BackgroundWriter(sink, maxsize=2)
    for i in range(10):
        w.add_audio(np.full(4, i))
        w.write(np.full((2, 2, 3), i, np.uint8))
    w.end_audio()
    w.close()
    expected = [c for i in range(10) for c in (("audio", i), ("frame", i))] + [("end",)]
    assert sink.calls == expected


def test_the_output_is_never_one_of_the_inputs(media_dir, tmp_path, capsys):
    """--out (or its NAME.partial.mp4) naming the avatar or the audio, by another spelling, a hard link or a
    symbolic link: one line, status 2, the file untouched."""
    import os
    import shutil

    video = tmp_path / "talk.mp4"
    shutil.copy(media_dir / "talk_b_25fps.mp4", video)
    original = video.read_bytes()
    wav = _write_wav(tmp_path / "s.wav", _speech_like(0.5))
    os.link(video, tmp_path / "hard.mp4")
    os.symlink(video, tmp_path / "soft.mp4")
    partial_audio = tmp_path / "x.partial.mp4"
    shutil.copy(video, partial_audio)
    cases = [
        (
            ["--avatar", str(video), "--audio", str(wav)],
            str(video),
            "--out would overwrite the --avatar file",
        ),
        (
            ["--avatar", str(PORTRAIT), "--audio", str(video)],
            str(video),
            "--out would overwrite the --audio file",
        ),
        (["--avatar", str(video), "--audio", str(wav)], str(tmp_path / "." / "talk.mp4"), "--avatar"),
        (["--avatar", str(video), "--audio", str(wav)], str(tmp_path / "hard.mp4"), "--avatar"),
        (["--avatar", str(PORTRAIT), "--audio", str(tmp_path / "soft.mp4")], str(video), "--audio"),
        (["--avatar", str(PORTRAIT), "--audio", str(partial_audio)], str(tmp_path / "x.mp4"), "temporary"),
    ]
    for inputs, out, message in cases:
        args = ["dub", *inputs, "--out", out, "--renderer", "preview", "--cache", str(tmp_path / "c")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert video.read_bytes() == original and partial_audio.read_bytes() == original
    assert not (tmp_path / "x.mp4").exists()
    faces = ["--save-faces", str(wav), "--random-weights", "--refs", "1", "--cache", str(tmp_path / "c")]
    assert (
        main(
            ["dub", "--avatar", str(PORTRAIT), "--audio", str(wav), "--out", str(tmp_path / "o.mp4"), *faces]
        )
        == 2
    )
    assert "--save-faces would overwrite the --audio file" in capsys.readouterr().err


def test_a_large_image_is_scaled_down_on_load(tmp_path):
    import cv2

    from engine.core.avatar import MAX_IMAGE_SIDE, fit_image

    assert MAX_IMAGE_SIDE == 2048
    small = np.zeros((100, 60, 3), np.uint8)
    assert fit_image(small) is small
    assert fit_image(np.zeros((1000, 3000, 3), np.uint8)).shape == (683, 2048, 3)
    assert fit_image(np.zeros((5000, 20, 3), np.uint8)).shape == (2048, 8, 3)
    big = cv2.resize(cv2.imread(str(PORTRAIT)), (2600, 2600), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    avatar = prepare_avatar(tmp_path / "big.jpg", AvatarConfig(n_refs=1), tmp_path / "c")
    assert avatar.frame_size == (2048, 2048) and avatar.report.scaled_from == [2600, 2600]
    assert "the 2600x2600 image was scaled down to at most 2048 px" in avatar.report.summary()
    again = prepare_avatar(tmp_path / "big.jpg", AvatarConfig(n_refs=1), tmp_path / "c")
    assert again.report.reused_cache and again.report.scaled_from == [2600, 2600]
    normal = prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path / "c")
    assert normal.frame_size == (512, 512) and normal.report.scaled_from is None

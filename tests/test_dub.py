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

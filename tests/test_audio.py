"""Tests of engine.core.audio: loading, the mel spectrogram (vs the authors' golden output) and chunking."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from engine.core.audio import (
    AudioError,
    MelConfig,
    MelSpectrogram,
    load_audio,
    mel_chunk_starts,
    mel_chunks,
    mel_filterbank,
    melspectrogram,
    num_video_frames,
    to_mono_16k,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_mel_seed1.npz"
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"

TOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _random_speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Noise bursts with silent gaps and a quiet tail: exercises the -4 floor and the log range."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 0.2
    x[n // 3 : n // 2] = 0.0
    x[-n // 5 :] *= 1e-4
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Mel spectrogram
# --------------------------------------------------------------------------------------------


def test_numpy_mel_matches_golden(golden):
    mel = melspectrogram(golden["wav"])
    assert mel.shape == golden["mel"].shape and mel.dtype == np.float32
    diff = float(np.abs(mel - golden["mel"]).max())
    assert diff <= TOL, f"numpy mel vs golden: max abs diff {diff:.3e}"


def test_torch_mel_matches_golden_and_numpy(golden):
    wav = golden["wav"]
    module = MelSpectrogram()
    with torch.no_grad():
        mel = module(torch.from_numpy(wav))
        batch = module(torch.from_numpy(np.stack([wav, 0.5 * wav])))
    assert mel.shape == golden["mel"].shape and mel.dtype == torch.float32
    diff = float(np.abs(mel.numpy() - golden["mel"]).max())
    assert diff <= TOL, f"torch mel vs golden: max abs diff {diff:.3e}"
    assert batch.shape == (2, *golden["mel"].shape)
    assert torch.equal(batch[0], mel)
    ref_half = melspectrogram(0.5 * wav)
    diff_b = float(np.abs(batch[1].numpy() - ref_half).max())
    assert diff_b <= TOL, f"torch batch item vs numpy: max abs diff {diff_b:.3e}"


def test_torch_mel_matches_numpy_on_random_signal():
    wav = _random_speechlike(16000 + 123, seed=3)
    with torch.no_grad():
        mel_t = MelSpectrogram()(torch.from_numpy(wav)).numpy()
    mel_n = melspectrogram(wav)
    assert mel_t.shape == mel_n.shape == (80, 1 + len(wav) // 200)
    diff = float(np.abs(mel_t - mel_n).max())
    assert diff <= TOL, f"torch vs numpy mel: max abs diff {diff:.3e}"
    assert (mel_n == -4).any() and (mel_n > 0).any()  # the signal spans the floor and loud frames


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_mel_on_cuda(golden):
    module = MelSpectrogram().to("cuda")
    with torch.no_grad():
        mel = module(torch.from_numpy(golden["wav"]).to("cuda")).cpu().numpy()
    diff = float(np.abs(mel - golden["mel"]).max())
    assert diff <= TOL, f"cuda torch mel vs golden: max abs diff {diff:.3e}"


def test_torch_preemphasis_equals_lfilter():
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(1).standard_normal((2, 1000))
    got = MelSpectrogram().double().preemphasis(torch.from_numpy(x)).numpy()
    want = signal.lfilter([1, -0.97], [1], x, axis=-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_mel_module_buffers_follow_dtype_and_state_dict():
    m = MelSpectrogram()
    assert set(m.state_dict()) == {"window", "mel_basis"}
    assert m.mel_basis.shape == (80, 401) and m.window.shape == (800,)
    m64 = MelSpectrogram().double()
    with torch.no_grad():
        out = m64(torch.zeros(3000, dtype=torch.float32))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("n", [1, 199, 200, 201, 800, 4321])
def test_mel_frame_count(n):
    wav = np.full(n, 0.1, dtype=np.float32)
    assert melspectrogram(wav).shape == (80, 1 + n // 200)
    with torch.no_grad():
        assert MelSpectrogram()(torch.from_numpy(wav)).shape == (80, 1 + n // 200)


def test_silence_mel_is_floor():
    wav = np.zeros(8000, dtype=np.float32)
    assert np.all(melspectrogram(wav) == -4.0)
    with torch.no_grad():
        assert torch.all(MelSpectrogram()(torch.from_numpy(wav)) == -4.0)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    cfg = MelConfig()
    ours = mel_filterbank(cfg)
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.shape == (80, 401) and ours.dtype == np.float32
    diff = float(np.abs(ours - ref).max())
    assert diff <= 1e-6, f"filterbank vs librosa: max abs diff {diff:.3e}"


def test_mel_matches_librosa_reference():
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    wav = _random_speechlike(12345, seed=7)
    y = signal.lfilter([1, -0.97], [1], wav)
    spec = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="constant")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(spec))) - 20
    ref = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
    ours = melspectrogram(wav)
    assert ours.shape == ref.shape
    diff = float(np.abs(ours - ref).max())
    assert diff <= TOL, f"mel vs librosa reference: max abs diff {diff:.3e}"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _write_audio(
    path: Path,
    x: np.ndarray,
    rate: int,
    codec: str,
    fmt: str,
    container_format: str | None = None,
    video: bool = False,
) -> None:
    """Encode ``x`` (channels, n) in [-1, 1] with PyAV; optionally add a short video stream first."""
    channels = x.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=container_format) as c:
        if video:
            vs = c.add_stream("mpeg4", rate=25)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        stream = c.add_stream(codec, rate=rate, layout=layout)
        if codec.startswith("pcm"):
            stream.format = fmt
        data = np.round(x * 32767).astype(np.int16) if fmt.startswith("s16") else x.astype(np.float32)
        planar = fmt.endswith("p")
        pts = 0
        for i in range(0, x.shape[1], 4096):
            block = data[:, i : i + 4096]
            block = block if planar else block.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, pts
            pts += frame.samples
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
        if video:
            for k in range(int(x.shape[1] / rate * 25)):
                vf = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * k % 256, np.uint8), format="rgb24")
                vf.pts = k
                for packet in vs.encode(vf):
                    c.mux(packet)
            for packet in vs.encode(None):
                c.mux(packet)


def _tone(rate: int, n: int, freq: float, amp: float, onset_s: float = 0.25) -> np.ndarray:
    """A sine of ``freq`` Hz that starts at ``onset_s`` (silence before), shape (n,)."""
    t = np.arange(n) / rate
    return np.where(t >= onset_s, amp * np.sin(2 * np.pi * freq * t), 0.0)


def _peak_hz_and_amp(y: np.ndarray, start: int, stop: int, rate: int = 16000) -> tuple[float, float]:
    seg = y[start:stop].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=8 * len(seg)))  # zero-padded: fine bins
    peak = float(np.argmax(spectrum) * rate / (8 * len(seg)))
    return peak, float(seg.std() * np.sqrt(2))


def _has_encoder(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:
        return False
    return True


# name, rate, channels, n samples at rate, codec, sample format, container format, video stream
CASES = [
    ("mono_8k.wav", 8000, 1, 8000, "pcm_s16le", "s16", None, False),
    ("stereo_44k.wav", 44100, 2, 44100, "pcm_s16le", "s16", None, False),
    ("mono_48k.wav", 48000, 1, 48000, "pcm_s16le", "s16", None, False),
    ("stereo_44k.mp3", 44100, 2, 44100, "libmp3lame", "fltp", None, False),
    ("stereo_48k.m4a", 48000, 2, 47 * 1024, "aac", "fltp", "mp4", False),  # whole AAC frames
    ("mono_22k.flac", 22050, 1, 22050, "flac", "s16", None, False),
    ("mono_48k.ogg", 48000, 1, 48000, "libopus", "flt", None, False),
    ("stereo_44k_video.mp4", 44100, 2, 43 * 1024, "aac", "fltp", None, True),
]


@pytest.mark.parametrize("name,rate,channels,n,codec,fmt,container_format,video", CASES)
def test_load_audio_formats(tmp_path, name, rate, channels, n, codec, fmt, container_format, video):
    if not _has_encoder(codec):
        pytest.skip(f"PyAV build has no {codec} encoder")
    freq, amp = 440.0, 0.5
    left = _tone(rate, n, freq, amp)
    x = np.stack([left, 0.5 * left]) if channels == 2 else left[None]  # mono mix: 0.75 * left
    path = tmp_path / name
    _write_audio(path, x, rate, codec, fmt, container_format, video)

    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    lossless = name.endswith((".wav", ".flac"))
    # duration: exact for PCM; within 1 ms for lossy codecs (encoder priming/padding trimmed)
    expected = n * 16000 / rate
    assert abs(len(y) - expected) <= (1 if lossless else 16), f"{len(y)} samples, expected {expected:.1f}"
    # alignment: the tone starts at 0.25 s (sample 4000 at 16 kHz), within 1 ms
    onset = int(np.argmax(np.abs(y) > 0.05))
    assert abs(onset - 4000) <= 16, f"onset at sample {onset}, expected 4000"
    peak, got_amp = _peak_hz_and_amp(y, 6000, min(len(y), 15000))
    want_amp = amp * (0.75 if channels == 2 else 1.0)
    assert abs(peak - freq) <= 2.0, f"peak at {peak:.1f} Hz, expected {freq}"
    assert got_amp == pytest.approx(want_amp, rel=0.01 if lossless else 0.1)


def test_stereo_mix_is_channel_mean(tmp_path):
    rate, n = 44100, 22050
    left = _tone(rate, n, 440.0, 0.6, onset_s=0.0)
    right = _tone(rate, n, 1000.0, 0.2, onset_s=0.0)
    x = np.stack([left, right])
    path = tmp_path / "lr.wav"
    _write_audio(path, x, rate, "pcm_s16le", "s16")
    pcm = np.round(x * 32767).astype(np.int16).T  # (n, 2), exactly what the file holds
    y = load_audio(path)
    ref = to_mono_16k(pcm, rate)
    assert y.shape == ref.shape == (8000,)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    spectrum = np.abs(np.fft.rfft(y[1000:7000])) / 3000  # 1 s / 6000 samples: bins of 8/3 Hz
    bins = np.fft.rfftfreq(6000, 1 / 16000)
    a440 = spectrum[np.argmin(np.abs(bins - 440))]
    a1000 = spectrum[np.argmin(np.abs(bins - 1000))]
    assert a440 == pytest.approx(0.3, rel=0.05) and a1000 == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_to_mono_16k_arrays(rate):
    n = rate  # 1 s
    tone = _tone(rate, n, 1000.0, 0.5, onset_s=0.0)
    y = to_mono_16k(tone.astype(np.float32), rate)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    peak, got_amp = _peak_hz_and_amp(y, 2000, 14000)
    assert abs(peak - 1000.0) <= 2.0 and got_amp == pytest.approx(0.5, rel=0.01)
    stereo_int16 = np.round(np.stack([tone, -tone / 2], axis=1) * 32767).astype(np.int16)  # (n, 2)
    y2 = to_mono_16k(stereo_int16, rate)
    np.testing.assert_allclose(y2, to_mono_16k((tone / 4).astype(np.float32), rate), atol=1e-4)


def test_to_mono_16k_rejects_bad_shape():
    with pytest.raises(AudioError):
        to_mono_16k(np.zeros((2, 3, 4)), 16000)


MEDIA_FILES = [
    ("speech_a_44k.wav", 5.015510),
    ("speech_b_48k.wav", 5.013333),
    ("speech_c_16k_60s.wav", 60.0),
    ("talk_a_25fps.mp4", 5.015011),
]


@pytest.mark.parametrize("name,seconds", MEDIA_FILES)
def test_load_shared_media(name, seconds):
    path = MEDIA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) / 16000 - seconds) <= 2e-3, f"{len(y) / 16000:.4f} s, expected {seconds} s"
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    assert 0.005 < rms < 0.5 and np.abs(y).max() <= 1.5, f"rms {rms:.4f}"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nope" / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(path)


def test_corrupt_file_raises_audio_error(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_audio(path)


def test_empty_file_raises_audio_error(tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.mp3"):
        load_audio(path)


def test_video_without_audio_raises_audio_error(tmp_path):
    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(5):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = k
            for packet in vs.encode(vf):
                c.mux(packet)
        for packet in vs.encode(None):
            c.mux(packet)
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path)
    assert issubclass(AudioError, ValueError)


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------


def _brute_starts(n: int, fps: float) -> list[int]:
    starts, k = [], 0
    while int(k * (80.0 / fps)) + 16 <= n:
        starts.append(int(k * (80.0 / fps)))
        k += 1
    return starts


def test_chunk_starts_fps25_examples():
    assert mel_chunk_starts(15).tolist() == []
    assert mel_chunk_starts(16).tolist() == [0]
    assert mel_chunk_starts(50).tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    assert num_video_frames(401) == 121  # 5 s of audio: 80000 samples -> 401 mel frames
    assert num_video_frames(0) == 0


@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0, 29.97])
def test_chunk_starts_match_brute_force(fps):
    for n in range(0, 600):
        assert mel_chunk_starts(n, fps).tolist() == _brute_starts(n, fps), f"n={n} fps={fps}"


def test_mel_chunks_are_slices():
    mel = np.random.default_rng(0).standard_normal((80, 97)).astype(np.float32)
    chunks = mel_chunks(mel)
    starts = mel_chunk_starts(97)
    assert chunks.shape == (len(starts), 80, 16) and chunks.dtype == np.float32
    for k, s in enumerate(starts):
        np.testing.assert_array_equal(chunks[k], mel[:, s : s + 16])
    assert mel_chunks(mel[:, :10]).shape == (0, 80, 16)

"""Audio input and the IP_LAP mel spectrogram (IPLAP_FACTS.md section 3).

* Loading: :func:`load_audio` decodes any file FFmpeg understands (wav, mp3, m4a/aac, flac, ogg,
  the audio stream of a video) through PyAV, :func:`decode_audio` gives the same samples piece by
  piece (memory that does not grow with the file); :func:`to_mono_16k` does the same conversion for
  an in-memory array. All return mono float32 as the mean of the channels.
* Mel: :func:`melspectrogram` (numpy, float64 internally) and :class:`MelSpectrogram` (torch,
  any device) compute the authors' normalised log-mel; :func:`mel_chunks` cuts it per video frame.

librosa is only used by the tests, to cross-check; nothing here imports it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

#: Warnings about the media files read (NaN samples here, truncated videos in
#: :mod:`engine.core.video`); the command line prints them as ``mouthpiece: warning: ...`` lines.
log = logging.getLogger("mouthpiece.media")

__all__ = [
    "AudioError",
    "MelConfig",
    "MelChunker",
    "MelSpectrogram",
    "decode_audio",
    "load_audio",
    "mel_chunk_starts",
    "mel_chunks",
    "mel_filterbank",
    "melspectrogram",
    "num_video_frames",
    "to_mono_16k",
]

from engine.core.clock import MEL_CHUNK_LEN, MEL_FPS  # noqa: E402  (re-exported)


class AudioError(ValueError):
    """An audio file or array that cannot be turned into samples (no audio, corrupt, empty)."""


# --------------------------------------------------------------------------------------------
# Loading and resampling
# --------------------------------------------------------------------------------------------


def _resample(mono: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono float signal with FFmpeg's swresample; length becomes n * target / rate."""
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sample_rate == target_rate or mono.size == 0:
        return mono
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
    out: list[np.ndarray] = []
    block = 1 << 16
    for i in range(0, mono.size, block):
        frame = av.AudioFrame.from_ndarray(mono[None, i : i + block], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        out.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
    out.extend(f.to_ndarray()[0] for f in resampler.resample(None))  # flush the filter tail
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


def to_mono_16k(samples: np.ndarray, sample_rate: int, target_rate: int = 16000) -> np.ndarray:
    """Convert an in-memory signal to mono float32 at ``target_rate`` (default 16 kHz).

    ``samples``: shape (n,) or (n, channels); int16 (scaled by 1/32768), another signed integer
    type (scaled by its full range) or float (taken as is, nominally in [-1, 1]). Channels are mixed
    as their mean. Each call resamples independently (no state carried between calls).
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise AudioError(f"expected samples of shape (n,) or (n, channels), got {x.shape}")
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be positive, got {sample_rate}")
    if np.issubdtype(x.dtype, np.signedinteger):
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)  # int16: / 32768
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"expected signed integer or float samples, got dtype {x.dtype}")
    mono = x.mean(axis=1) if x.ndim == 2 else x  # (n,)
    return _resample(mono, int(sample_rate), int(target_rate))


def decode_audio(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the first audio stream of ``path`` piece by piece: ``(sample_rate, samples)`` per decoded
    frame, ``samples`` mono float32 (the mean of the channels) at the stream's own rate, shape (n,).

    Memory does not grow with the file's length (one decoded frame at a time). The checks of
    :func:`load_audio` apply, raised when iteration reaches them: ``FileNotFoundError`` for a missing
    path (at once) and :class:`AudioError` for a file with no audio stream, one FFmpeg cannot decode,
    a sample rate that changes mid-stream, or one that decodes to no samples (at the end). NaN and
    infinite samples (a broken float WAV) become silence, with one warning on the ``mouthpiece.media``
    logger when the file has been read (an encoder refuses them, the mel turns them into noise).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"audio file not found: {p}")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file")
    return _decode(p)


def _finite(mono: np.ndarray) -> tuple[np.ndarray, int]:
    """``mono`` with NaN and infinite samples replaced by silence (0), and how many there were."""
    bad = ~np.isfinite(mono)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        mono = np.where(bad, np.float32(0), mono).astype(np.float32, copy=False)
    return mono, n_bad


def _decode(p: Path) -> Iterator[tuple[int, np.ndarray]]:
    rate = 0
    n = 0
    n_bad = 0
    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.audio:
                raise AudioError(f"{p}: no audio stream in file")
            stream = container.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")  # keep layout and rate, planar float
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                if frame.sample_rate != rate:
                    raise AudioError(f"{p}: sample rate changes mid-stream ({rate} -> {frame.sample_rate})")
                for f in to_float.resample(frame):
                    mono, bad = _finite(f.to_ndarray().mean(axis=0))  # (channels, n) -> (n,)
                    n, n_bad = n + mono.size, n_bad + bad
                    yield rate, mono
            for f in to_float.resample(None):
                mono, bad = _finite(f.to_ndarray().mean(axis=0))
                n, n_bad = n + mono.size, n_bad + bad
                yield rate, mono
    except av.error.FFmpegError as e:
        raise AudioError(f"{p}: cannot decode audio ({e.__class__.__name__}: {e.strerror or e})") from None
    if n == 0:
        raise AudioError(f"{p}: audio stream decodes to no samples")
    if n_bad:
        log.warning(
            "%s: %d of %d samples were not numbers (NaN or infinite) and were replaced by silence",
            p,
            n_bad,
            n,
        )


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate``, shape (n,).

    Raises ``FileNotFoundError`` for a missing path and :class:`AudioError` for a file with no
    audio stream, one FFmpeg cannot decode, or one that decodes to no samples. The whole signal is
    in memory; :func:`decode_audio` gives it piece by piece.
    """
    chunks: list[np.ndarray] = []  # each (n_i,) mono float32 at the stream rate
    rate = 0
    for r, mono in decode_audio(path):
        rate = r
        chunks.append(mono)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return _resample(samples, rate, int(sample_rate))


# --------------------------------------------------------------------------------------------
# Mel spectrogram
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelConfig:
    """Constants of the authors' mel spectrogram (IPLAP_FACTS.md section 3)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    win: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0

    @property
    def min_level(self) -> float:
        """Amplitude floor before the log: 10 ** (min_level_db / 20) = 1e-5."""
        return 10.0 ** (self.min_level_db / 20.0)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    mel = hz * 3.0 / 200.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Slaney-scale, Slaney-area-normalised triangular filterbank, shape (n_mels, n_fft//2 + 1).

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (htk=False, norm="slaney").
    """
    fft_freqs = np.arange(cfg.n_fft // 2 + 1) * (cfg.sample_rate / cfg.n_fft)  # (F,)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))  # (M+2,)
    widths = np.diff(edges)  # (M+1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (M+2, F)
    lower = -ramps[:-2] / widths[:-1, None]  # rising edge, (M, F)
    upper = ramps[2:] / widths[1:, None]  # falling edge, (M, F)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # unit area per band
    return weights.astype(np.float32)


def _hann_window(n: int) -> np.ndarray:
    """Periodic Hann window of length n (scipy ``get_window('hann', n)``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _padded_window(cfg: MelConfig) -> np.ndarray:
    """The analysis window, zero-padded (centred) to n_fft as librosa does when win < n_fft."""
    left = (cfg.n_fft - cfg.win) // 2
    return np.pad(_hann_window(cfg.win), (left, cfg.n_fft - cfg.win - left))


def melspectrogram(wav: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Normalised log-mel of a mono signal at ``cfg.sample_rate``: (n,) -> (n_mels, 1 + n // hop).

    Pre-emphasis, centred STFT with zero padding of n_fft // 2 per side, magnitude, mel
    filterbank, ``20*log10(max(1e-5, mel)) - 20``, then scaled from [-100, 0] dB to [-4, 4]
    and clipped. Computed in float64, returned as float32.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    y = x.copy()
    y[1:] -= cfg.preemphasis * x[:-1]  # lfilter([1, -k], [1], x)
    pad = cfg.n_fft // 2
    y = np.pad(y, (pad, pad))  # zero padding ("constant"), as librosa 0.9.2
    frames = np.lib.stride_tricks.sliding_window_view(y, cfg.n_fft)[:: cfg.hop]  # (T, n_fft)
    mag = np.abs(np.fft.rfft(frames * _padded_window(cfg), axis=1))  # (T, F)
    mel = mel_filterbank(cfg).astype(np.float64) @ mag.T  # (M, T)
    db = 20.0 * np.log10(np.maximum(cfg.min_level, mel)) - cfg.ref_level_db
    a = cfg.max_abs_value
    out = np.clip(2.0 * a * (db - cfg.min_level_db) / -cfg.min_level_db - a, -a, a)
    return out.astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """Torch version of :func:`melspectrogram`; runs on whatever device it is moved to.

    ``forward(wav)``: (n,) -> (n_mels, frames) or (B, n) -> (B, n_mels, frames), in the dtype of
    the module's buffers (float32 unless converted with ``.double()``).
    """

    window: torch.Tensor
    mel_basis: torch.Tensor

    def __init__(self, cfg: MelConfig = MelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.from_numpy(_padded_window(cfg).astype(np.float32)))
        self.register_buffer("mel_basis", torch.from_numpy(mel_filterbank(cfg)))  # (M, F)

    def preemphasis(self, x: torch.Tensor) -> torch.Tensor:
        """``y[n] = x[n] - k * x[n-1]`` along the last axis, zero initial state (scipy lfilter)."""
        return torch.cat([x[..., :1], x[..., 1:] - self.cfg.preemphasis * x[..., :-1]], dim=-1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = wav.to(self.window.dtype)  # (..., n)
        spec = torch.stft(
            self.preemphasis(x),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (..., F, T)
        mel = torch.matmul(self.mel_basis, spec.abs())  # (..., M, T)
        db = 20.0 * torch.log10(mel.clamp_min(cfg.min_level)) - cfg.ref_level_db
        a = cfg.max_abs_value
        return (2.0 * a * (db - cfg.min_level_db) / -cfg.min_level_db - a).clamp(-a, a)


# --------------------------------------------------------------------------------------------
# Chunking by video frame
# --------------------------------------------------------------------------------------------


def mel_chunk_starts(n_mel_frames: int, fps: float = 25.0) -> np.ndarray:
    """Start mel frame of each video frame's chunk: ``int(k * (80.0 / fps))``, shape (n_chunks,).

    Chunk k exists while ``start + 16 <= n_mel_frames`` (the starts never decrease).
    """
    step = MEL_FPS / float(fps)
    if n_mel_frames < MEL_CHUNK_LEN:
        return np.zeros(0, dtype=np.int64)
    k = np.arange(int((n_mel_frames - MEL_CHUNK_LEN) / step) + 2)  # one candidate past the end
    starts = (k * step).astype(np.int64)  # float64 product, then truncation
    return starts[starts + MEL_CHUNK_LEN <= n_mel_frames]


def num_video_frames(n_mel_frames: int, fps: float = 25.0) -> int:
    """Number of video frames (mel chunks) a mel of ``n_mel_frames`` frames drives."""
    return len(mel_chunk_starts(n_mel_frames, fps))


def mel_chunks(mel: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """Cut a mel (n_mels, frames) into per-video-frame chunks, shape (n_chunks, n_mels, 16)."""
    starts = mel_chunk_starts(mel.shape[1], fps)  # (K,)
    idx = starts[:, None] + np.arange(MEL_CHUNK_LEN)  # (K, 16)
    return np.ascontiguousarray(np.moveaxis(mel[:, idx], 1, 0))  # (M, K, 16) -> (K, M, 16)


class MelChunker:
    """:func:`mel_chunks` for a mel that arrives in pieces (e.g. from an incremental mel).

    :meth:`push` takes the next mel frames (n_mels, k), in order, and returns the chunks that became
    complete, shape (m, n_mels, 16): chunk k is mel frames ``int(k * 80 / fps)`` to ``+ 16``, as
    :func:`mel_chunk_starts`, so everything returned, concatenated, equals :func:`mel_chunks` of the
    whole mel. Only the frames later chunks still need are kept (at most 16 + one push).
    """

    def __init__(self, fps: float = 25.0, n_mels: int = 80) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.step = MEL_FPS / float(fps)
        self.n_mels = int(n_mels)
        self.chunks_total = 0  # chunks returned
        self.mel_total = 0  # mel frames pushed
        self._buf = np.zeros((self.n_mels, 0), np.float32)
        self._base = 0  # mel index of self._buf[:, 0]

    def push(self, mel: np.ndarray) -> np.ndarray:
        m = np.asarray(mel, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != self.n_mels:
            raise ValueError(f"expected mel frames ({self.n_mels}, k), got {m.shape}")
        if m.shape[1]:
            self._buf = np.concatenate([self._buf, m], axis=1) if self._buf.shape[1] else m
            self.mel_total += m.shape[1]
        out: list[np.ndarray] = []
        while (s := int(self.chunks_total * self.step)) + MEL_CHUNK_LEN <= self.mel_total:
            out.append(self._buf[:, s - self._base : s - self._base + MEL_CHUNK_LEN])
            self.chunks_total += 1
        if not out:
            return np.zeros((0, self.n_mels, MEL_CHUNK_LEN), np.float32)
        chunks = np.stack(out)  # copies: the buffer can be trimmed
        keep = int(self.chunks_total * self.step)  # the next chunk's first frame
        if keep > self._base:
            self._buf = self._buf[:, keep - self._base :].copy()
            self._base = keep
        return chunks

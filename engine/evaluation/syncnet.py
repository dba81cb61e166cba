"""SyncNet confidence (LSE-C), distance (LSE-D) and AV offset as syncnet_python's
``SyncNetInstance.evaluate``: its MFCC features (numpy), its face-track crop (the box from FaceMesh)
and the offset search over per-window lip and audio embeddings (details in docs/evaluation.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from engine.evaluation.common import DOCS, SAMPLES_PER_FRAME, EvaluationError, mesh_pixels
from engine.evaluation.networks import Network

SYNCNET_SIZE = 224
SYNCNET_CROP_SCALE = 0.4  # syncnet_python run_pipeline --crop_scale
SYNCNET_PAD_VALUE = 110  # syncnet_python pads frames with grey 110 before cropping
SYNCNET_SMOOTH = 13  # median filter over frames of the crop box (syncnet_python: kernel 13)
SYNCNET_VSHIFT = 15
SYNCNET_BATCH = 20


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def _mfcc_filterbank(nfilt: int = 26, nfft: int = 512, rate: int = 16000) -> np.ndarray:
    mels = np.linspace(_hz2mel(0.0), _hz2mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mels) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def _dct2_ortho(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m  # (n, n): X = m @ x


def mfcc(wav16k: np.ndarray, rate: int = 16000) -> np.ndarray:
    """SyncNet's audio features: ``python_speech_features.mfcc(signal, 16000)`` with its defaults,
    reimplemented in numpy. Returns (13, N) float64, 100 frames per second.

    ``wav16k``: mono float samples in [-1, 1] at 16 kHz; they are first converted to int16 units
    (``round(x * 32768)``, clipped), as syncnet_python reads a 16-bit wav. Then: pre-emphasis 0.97;
    frames of 400 samples every 160 (the last one zero-padded), no window; power spectrum
    ``|rfft(frame, 512)|^2 / 512``; 26 triangular mel filters (0 Hz to 8 kHz, HTK mel, bin edges
    ``floor(513 * hz / 16000)``); log (zeros replaced by machine epsilon); orthonormal DCT-II, first
    13; lifter 22 (``1 + 11 sin(pi n / 22)``); coefficient 0 replaced by the log of the frame energy.
    """
    x = np.asarray(wav16k, dtype=np.float64).reshape(-1)
    if rate != 16000:
        raise ValueError("SyncNet features are defined at 16 kHz")
    if x.size == 0:
        raise ValueError("empty audio")
    sig = np.clip(np.round(x * 32768.0), -32768, 32767)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen, fstep, nfft = 400, 160, 512
    n = 1 if sig.size <= flen else 1 + int(math.ceil((sig.size - flen) / fstep))
    pad = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - sig.size)])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    frames = pad[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ _mfcc_filterbank(26, nfft, rate).T
    feat = np.where(feat == 0, eps, feat)
    cep = np.log(feat) @ _dct2_ortho(26).T[:, :13]
    cep = cep * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22))
    cep[:, 0] = np.log(energy)
    return cep.T


def syncnet_box(points: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """The face box (x1, y1, x2, y2) in pixels of all 468 FaceMesh points (stands in for the S3FD
    detection of syncnet_python's pipeline)."""
    p = mesh_pixels(points, frame_hw)[:468]
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def syncnet_crop(frame_bgr: np.ndarray, box_xyxy: Sequence[float], size: int = SYNCNET_SIZE) -> np.ndarray:
    """syncnet_python's face-track crop (``run_pipeline.crop_video``, crop_scale 0.4) of one frame.

    ``bs`` = half the larger side of the box, centre (cx, cy); the frame is padded by
    ``int(bs * 1.8)`` with grey 110, and rows ``cy - bs .. cy + 1.8 bs``, columns
    ``cx - 1.4 bs .. cx + 1.4 bs`` are cut (int truncation) and resized to 224x224 (bilinear).
    The crop stays BGR, as cv2 read it there.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cs = SYNCNET_CROP_SCALE
    bs = max(x2 - x1, y2 - y1) / 2
    if not bs > 0:
        raise ValueError(f"degenerate face box {box_xyxy}")
    bsi = int(bs * (1 + 2 * cs))
    padded = cv2.copyMakeBorder(
        frame_bgr, bsi, bsi, bsi, bsi, cv2.BORDER_CONSTANT, value=(SYNCNET_PAD_VALUE,) * 3
    )
    my, mx = (y1 + y2) / 2 + bsi, (x1 + x2) / 2 + bsi
    rows = slice(int(my - bs), int(my + bs * (1 + 2 * cs)))
    cols = slice(int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs)))
    face = padded[rows, cols]
    return cv2.resize(face, (size, size))


def smooth_boxes(boxes: np.ndarray, kernel: int = SYNCNET_SMOOTH) -> np.ndarray:
    """Fill missing boxes (NaN rows) from the nearest detected frame, then a running median over
    ``kernel`` frames (the frames of the window that exist)."""
    boxes = np.array(boxes, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if ok.size == 0:
        raise ValueError("no face box in any frame")
    for i in np.flatnonzero(~np.isfinite(boxes).all(axis=1)):
        boxes[i] = boxes[ok[np.argmin(np.abs(ok - i))]]
    half = kernel // 2
    return np.stack([np.median(boxes[max(0, i - half) : i + half + 1], axis=0) for i in range(len(boxes))])


def syncnet_offsets(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = SYNCNET_VSHIFT) -> dict:
    """syncnet_python's offset search on per-window embeddings (V, D) and (V, D).

    ``dists[i, j] = |video_emb[i] - audio_pad[i + j] + 1e-6|`` (torch ``pairwise_distance``), where
    ``audio_pad`` is ``audio_emb`` zero-padded by ``vshift`` windows on both sides, j = 0..2 vshift;
    ``mdist[j]`` = mean over i. Returns ``dist`` = min mdist (LSE-D), ``conf`` = median(mdist) - min
    (LSE-C), ``offset`` = vshift - argmin (positive: video frame i best matches audio window
    i - offset, the video lags the audio), and the per-window confidence ``median(mdist) - dists[:, argmin]``
    median-filtered over 9 windows (``framewise_conf``).
    """
    v = np.asarray(video_emb, np.float64)
    a = np.asarray(audio_emb, np.float64)
    if v.ndim != 2 or a.shape != v.shape:
        raise ValueError(f"video and audio embeddings must both be (V, D), got {v.shape} and {a.shape}")
    n, win = v.shape[0], 2 * vshift + 1
    ap = np.concatenate([np.zeros((vshift, a.shape[1])), a, np.zeros((vshift, a.shape[1]))])
    dists = np.stack([np.linalg.norm(v[i][None, :] - ap[i : i + win] + 1e-6, axis=1) for i in range(n)])
    mdist = dists.mean(axis=0)
    j = int(np.argmin(mdist))
    med = float(np.median(mdist))
    fconf = med - dists[:, j]
    padded = np.pad(fconf, (4, 4))  # scipy.signal.medfilt(fconf, kernel_size=9) pads with zeros
    framewise = np.array([np.median(padded[i : i + 9]) for i in range(n)])
    return {
        "dist": float(mdist[j]),
        "conf": float(med - mdist[j]),
        "offset": int(vshift - j),
        "mdist": mdist,
        "framewise_conf": framewise,
    }


def syncnet_score(
    crops_bgr: Sequence[np.ndarray] | np.ndarray,
    wav16k: np.ndarray,
    lip_net: Network,
    audio_net: Network,
    *,
    vshift: int = SYNCNET_VSHIFT,
    batch: int = SYNCNET_BATCH,
) -> dict:
    """SyncNet confidence and distance of a face track and its audio (syncnet_python's evaluate).

    ``crops_bgr``: (T, 224, 224, 3) uint8 BGR face-track crops (:func:`syncnet_crop`), frame 0
    aligned with sample 0 of ``wav16k`` (mono 16 kHz, float in [-1, 1]), 25 fps. With
    ``L = min(T, floor(len(wav) / 640))``, windows ``v = 0 .. L - 6`` (syncnet_python's
    ``lastframe = L - 5``, exclusive) give the lip input ``crops[v:v+5]`` as (B, 3, 5, 224, 224)
    float32 BGR 0..255 and the audio input ``mfcc[:, 4v:4v+20]`` as (B, 1, 13, 20) float32; both
    networks must return (B, D). Returns :func:`syncnet_offsets`'s dict plus ``windows``.
    """
    t = len(crops_bgr)
    wav = np.asarray(wav16k, dtype=np.float64).reshape(-1)
    length = min(t, wav.size // SAMPLES_PER_FRAME)
    last = length - 5
    if last < 1:
        raise ValueError(
            f"SyncNet needs at least 6 frames with 240 ms of audio; "
            f"got {t} frame(s) and {wav.size / 16000:.3f} s"
        )
    cc = mfcc(wav).astype(np.float32)  # (13, N)
    vid, aud = [], []
    for s in range(0, last, batch):
        frames = range(s, min(last, s + batch))
        clip = np.stack([np.asarray(c, dtype=np.uint8) for c in crops_bgr[s : min(last, s + batch) + 4]])
        x = clip.transpose(3, 0, 1, 2).astype(np.float32)  # (3, T, H, W)
        lip_in = np.stack([x[:, f - s : f - s + 5] for f in frames])
        aud_in = np.stack([cc[None, :, 4 * f : 4 * f + 20] for f in frames])
        vid.append(lip_net(lip_in))
        aud.append(audio_net(aud_in))
    v, a = np.concatenate(vid), np.concatenate(aud)
    for name, e, net in (("lip", v, lip_net), ("audio", a, audio_net)):
        if e.ndim != 2:
            raise EvaluationError(
                f"{net.path}: the SyncNet {name} network returned shape {tuple(e.shape)}; expected (B, D) "
                f"(see {DOCS})"
            )
    if v.shape[1] != a.shape[1]:
        raise EvaluationError(
            f"SyncNet lip ({lip_net.path}) and audio ({audio_net.path}) embeddings differ in size: "
            f"{v.shape[1]} vs {a.shape[1]}"
        )
    out = syncnet_offsets(v, a, vshift)
    out["windows"] = int(v.shape[0])
    return out

"""The named suites of ``benchmarks/live_latency.py``, its constants and its microphone input.

``SUITES`` maps a suite name to its runs: (run name, overrides of the command-line options). The
backend and precision values are keys of :data:`engine.synth.backends.BACKENDS` / ``DTYPES``; the
renderer values are the entry point's ``--renderer`` choices (``preview`` is the CPU preview
renderer). :func:`input_audio` is the signal every client plays as its microphone (16 kHz mono).
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT

SHARED_MEDIA = ROOT.parent / "shared" / "media"
DEFAULT_AUDIO = SHARED_MEDIA / "speech_c_16k_60s.wav"
DEFAULT_AUDIO_START = 2.5  # s: the clip is silent for its first 3 s; keep 0.5 s of that silence
DEFAULT_AVATAR = ROOT / "assets" / "portrait.png"
SR16 = 16000
SAMPLES_PER_FRAME = 640  # 16 kHz samples per 25 fps frame
VIDEO_RTP_STEP = 3600  # 90 kHz RTP ticks per 25 fps frame
LIMIT_S = 60.0  # bound on every wait beyond the audio length

# named sequences of runs: (name, overrides of the command-line options)
SUITES = {
    "cpu": [
        ("passthrough, 1 session", dict(weights="none", sessions=1)),
        ("stand-in models, 1 session", dict(weights="standin", refs=1, delay_ms=600.0, batch=4, sessions=1)),
        ("passthrough, 2 sessions", dict(weights="none", sessions=2)),
        ("preview renderer, 1 session", dict(weights="none", renderer="preview", sessions=1)),
    ],
    "gpu": [
        ("passthrough, 8 sessions", dict(weights="none", sessions=8)),
        (
            "stand-in models, 1 session",
            dict(weights="standin", refs=5, sessions=1, backend="cuda-graph", precision="fp16"),
        ),
        (
            "stand-in models, 8 sessions",
            dict(weights="standin", refs=5, sessions=8, backend="cuda-graph", precision="fp16"),
        ),
    ],
}


def write_wav16(path: Path, x16: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR16)
        w.writeframes((np.clip(x16, -1, 1) * 32767).astype("<i2").tobytes())


def input_audio(args) -> tuple[np.ndarray, str]:
    """The microphone signal (16 kHz mono, ``--seconds`` long) and a description of it."""
    path = Path(args.audio) if args.audio else (DEFAULT_AUDIO if DEFAULT_AUDIO.is_file() else None)
    if path is None:
        from tests.helpers import speechlike

        x = np.concatenate([np.zeros(SR16 // 2, np.float32), speechlike(args.seconds - 0.5, seed=3)])
        return x[: int(args.seconds * SR16)], "synthetic speech (tests.helpers.speechlike)"
    from engine.core.audio import load_audio

    start = (
        args.audio_start if args.audio_start is not None else (DEFAULT_AUDIO_START if not args.audio else 0)
    )
    x = load_audio(path)[int(start * SR16) :][: int(args.seconds * SR16)]
    if x.size < args.seconds * SR16 - 1:
        print(f"note: {path.name} gives only {x.size / SR16:.2f} s from {start} s", file=sys.stderr)
    return x.astype(np.float32), f"{path.name} from {start:g} s"

"""Frame time of the CPU preview renderer (engine.synth.preview; this file keeps its old name), one
session, per avatar.

    .venv/bin/python benchmarks/retrieval_speed.py --media ../shared/media --seconds 20

Renders ``--seconds`` of speech (openness from engine.synth.preview.openness_curve) over the template
frames ping-pong, as a live session does, and times every ``render()`` call (a full output frame:
template copy, mouth choice, alignment, mask, blend), plus the per-frame openness tracker. Avatars:
the bundled still portrait (512x512, warp mode) and, when ``--media`` holds them, talk_b resized
to 512x512 (retrieval, and forced warp mode: like an idle video whose mouth never opens), talk_b
(590x590) and talk_a (844x844) (retrieval mode). Each avatar runs with OpenCV's
default thread count and with one thread (what a session gets when several share the CPU).
Without media the audio is synthetic (syllable-modulated noise). Writes
``benchmarks/results/retrieval_speed_cpu.json`` and ``.md`` with device, command and date.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from benchmarks.common import RESULTS, ROOT, run_meta, write_results  # noqa: E402
from engine.core.audio import load_audio, melspectrogram, num_video_frames  # noqa: E402
from engine.core.avatar import AvatarConfig, prepare_avatar  # noqa: E402
from engine.core.schedule import pingpong  # noqa: E402
from engine.core.stats import summary  # noqa: E402
from engine.synth.preview import OpennessTracker, PreviewConfig, PreviewRenderer, openness_curve  # noqa: E402


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise shaped like speech loudness: 4 Hz syllables with pauses, at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2 * (np.sin(2 * np.pi * 0.3 * t) > -0.3)
    return (0.1 * env * rng.standard_normal(n)).astype(np.float32)


def resized_video(src: Path, size: int, out: Path) -> Path:
    from engine.core.video import read_frames, write_mp4

    frames, _ = read_frames(src, fps=25)
    write_mp4(out, (cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames), fps=25)
    return out


def time_avatar(
    avatar, curve: np.ndarray, chunks: list[np.ndarray], threads: int | None, mode: str = "auto"
) -> dict:
    saved = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(threads)
    try:
        t0 = time.perf_counter()
        renderer = PreviewRenderer(avatar, PreviewConfig(mode=mode))
        init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # warp mode: the per-template warps; a still's patches at every level too (a video template
        # changes every frame, so its patches are made per frame: that is what is timed)
        renderer.precompute(levels=avatar.n_frames == 1)
        pre_s = time.perf_counter() - t0
        for i in range(10):  # warm-up
            renderer.render(pingpong(i, avatar.n_frames), float(curve[i % len(curve)]))
        renderer.reset()
        render_ms = []
        for i, o in enumerate(curve):
            t0 = time.perf_counter()
            renderer.render(pingpong(i, avatar.n_frames), float(o))
            render_ms.append(1000 * (time.perf_counter() - t0))
        tracker = OpennessTracker()
        track_ms = []
        for ch in chunks:
            t0 = time.perf_counter()
            tracker.push(ch, True)
            track_ms.append(1000 * (time.perf_counter() - t0))
    finally:
        cv2.setNumThreads(saved)
    total = [r + t for r, t in zip(render_ms, track_ms, strict=False)]
    render, tracker, frame = (summary(x, keys=("p50", "p95")) for x in (render_ms, track_ms, total))
    return {
        "mode": renderer.mode,
        "frame_hw": list(avatar.frame_size),
        "box_hw": [
            int(renderer.region_box(0)[1] - renderer.region_box(0)[0]),
            int(renderer.region_box(0)[3] - renderer.region_box(0)[2]),
        ],
        "cv2_threads": cv2.getNumThreads() if threads is None else threads,
        "frames": len(render_ms),
        "init_ms": round(1000 * init_s, 1),
        "precompute_ms": round(1000 * pre_s, 1),
        "render_p50_ms": round(render["p50"], 2),
        "render_p95_ms": round(render["p95"], 2),
        "render_max_ms": round(max(render_ms), 2),
        "total_max_ms": round(max(total), 2),
        "tracker_p50_ms": round(tracker["p50"], 3),
        "total_p50_ms": round(frame["p50"], 2),
        "total_p95_ms": round(frame["p95"], 2),
        "fps_p50": round(1000 / frame["p50"], 1),
        "fps_p95": round(1000 / frame["p95"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", default=str(ROOT.parent / "shared" / "media"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--stem", default="retrieval_speed_cpu")
    args = ap.parse_args()

    media = Path(args.media)
    speech = media / "speech_c_16k_60s.wav"
    if speech.is_file():
        wav = load_audio(speech)[: int(args.seconds * 16000)]
        audio_name = f"{speech.name}, first {args.seconds:g} s"
    else:
        wav = synthetic_speech(args.seconds)
        audio_name = f"synthetic syllable-modulated noise, {args.seconds:g} s"
    curve = openness_curve(wav)
    mel = melspectrogram(wav)  # each frame's openness analysis: the mel frames around its time
    an = OpennessTracker().analysis
    chunks = [an.block(mel, q) for q in range(num_video_frames(mel.shape[1]))]

    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        avatars = [("portrait.png (still)", ROOT / "assets" / "portrait.png", "auto")]
        if (media / "talk_b_25fps.mp4").is_file():
            b512 = resized_video(media / "talk_b_25fps.mp4", 512, Path(tmp) / "b512.mp4")
            avatars.append(("talk_b resized 512", b512, "auto"))
            avatars.append(("talk_b resized 512, forced warp", b512, "warp"))
            avatars.append(("talk_b_25fps.mp4", media / "talk_b_25fps.mp4", "auto"))
        if (media / "talk_a_25fps.mp4").is_file():
            avatars.append(("talk_a_25fps.mp4", media / "talk_a_25fps.mp4", "auto"))
        for name, path, mode in avatars:
            avatar = prepare_avatar(path, AvatarConfig(n_refs=1), Path(tmp) / "cache")
            for threads in (None, 1):
                row = {"avatar": name, **time_avatar(avatar, curve, chunks, threads, mode)}
                rows.append(row)
                print(row, flush=True)

    load_after = os.getloadavg()[0]
    meta = run_meta(
        "retrieval_speed.py",
        "cpu",
        audio=audio_name,
        loadavg_1min_before=round(load, 2),
        loadavg_1min_after=round(load_after, 2),
    )
    md = [
        f"Preview renderer frame time (one session) — {meta['device']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        f"Audio: {audio_name}; openness from `openness_curve`; templates ping-pong; 1-min load average "
        f"{load:.2f} before the run, {load_after:.2f} after. A frame = `PreviewRenderer.render()` "
        "(full frame out) + "
        "`OpennessTracker.push()`. Warp mode: the per-template warps are built beforehand "
        "(`precompute()`, in the precompute column), and for the still its patches at all 32 openness "
        "levels; a video template changes every frame, so there every frame makes its patch.",
        "",
        "| avatar | mode | frame | box | cv2 threads | p50 ms | p95 ms | max ms | fps at p50 | fps at p95 "
        "| init ms | precompute ms |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        md.append(
            f"| {r['avatar']} | {r['mode']} | {r['frame_hw'][0]}x{r['frame_hw'][1]} | "
            f"{r['box_hw'][0]}x{r['box_hw'][1]} | {r['cv2_threads']} | {r['total_p50_ms']} | "
            f"{r['total_p95_ms']} | {r['total_max_ms']} | {r['fps_p50']} | {r['fps_p95']} | "
            f"{r['init_ms']} | {r['precompute_ms']} |"
        )
    write_results(args.out, args.stem, {"meta": meta, "rows": rows}, md)


if __name__ == "__main__":
    main()

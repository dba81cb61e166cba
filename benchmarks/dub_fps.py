"""Offline dubbing throughput (frames per second after preparation) by N and renderer backend.

    .venv/bin/python benchmarks/dub_fps.py --avatar ../shared/media/talk_b_25fps.mp4 \\
        --audio ../shared/media/speech_a_44k.wav --seconds 1 --refs 1 5 25 --backends plain fast

Stand-in weights (timings do not depend on the values). Writes
``benchmarks/results/dub_fps_<device>.json`` and ``.md`` with device, versions, command and date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, run_meta, write_results  # noqa: E402
from engine.core.audio import load_audio, mel_chunks, melspectrogram  # noqa: E402
from engine.core.avatar import AvatarConfig, prepare_avatar  # noqa: E402
from engine.offline.dub import dub_frames  # noqa: E402
from engine.synth.neural import DubConfig, NeuralSynthesizer, load_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avatar", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--seconds", type=float, default=1.0, help="audio to dub (from its start)")
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--backends", nargs="+", default=["plain"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    lm, renderer = load_models(device=args.device, random_weights=True)
    wav = load_audio(args.audio)[: int(args.seconds * 16000)]
    chunks = mel_chunks(melspectrogram(wav))
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for n in args.refs:
            avatar = prepare_avatar(args.avatar, AvatarConfig(n_refs=n), cache)
            for backend in args.backends:
                cfg = DubConfig(batch=args.batch, device=args.device, backend=backend)
                synth = NeuralSynthesizer.from_models(lm, renderer, cfg)
                t0 = time.perf_counter()
                frames = sum(1 for _ in dub_frames(synth, avatar, chunks, cfg.batch))
                wall = time.perf_counter() - t0
                stages = {k: round(v, 2) for k, v in synth.times.seconds.items()}
                rows.append(
                    {
                        "refs": n,
                        "backend": backend,
                        "frames": frames,
                        "seconds": round(wall, 2),
                        "fps": round(frames / wall, 3),
                        "stages_s": stages,
                    }
                )
                print(rows[-1], flush=True)
    meta = run_meta(
        "dub_fps.py",
        args.device,
        avatar=Path(args.avatar).name,
        audio_seconds=round(len(wav) / 16000, 2),
        batch=args.batch,
    )
    lines = [
        f"Offline dubbing throughput — {meta['device']}, torch {meta['torch']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        f"({meta['audio_seconds']} s of audio, batch {args.batch}, stand-in weights)",
        "",
        "| N refs | backend | frames | seconds | frames/s | renderer s | transformer s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = r["stages_s"]
        lines.append(
            f"| {r['refs']} | {r['backend']} | {r['frames']} | {r['seconds']} | {r['fps']} | "
            f"{s.get('renderer', 0)} | {s.get('transformer', 0)} |"
        )
    write_results(args.out, f"dub_fps_{args.device.split(':')[0]}", {"meta": meta, "rows": rows}, lines)


if __name__ == "__main__":
    main()

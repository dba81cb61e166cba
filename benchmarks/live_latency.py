"""Mouth-to-frame latency of the live server, per stage, with real WebRTC clients over loopback.

    .venv/bin/python benchmarks/live_latency.py --suite cpu          # the three CPU runs, one file pair
    .venv/bin/python benchmarks/live_latency.py --weights none --sessions 2
    .venv/bin/python benchmarks/live_latency.py --weights standin --refs 1 --delay-ms 600 --batch 4
    .venv/bin/python benchmarks/live_latency.py --renderer preview          # the CPU preview renderer
    .venv/bin/python benchmarks/live_latency.py --device cuda --weights standin --refs 5 --sessions 8 \\
        --backend cuda-graph --precision fp16                          # the GPU target setting

The server runs in this process (aiohttp ``AppRunner`` on 127.0.0.1, port 0, loopback ICE); each
session is a :class:`streaming.client.RtcClient` (aiortc) that POSTs /offer, plays a speech file as
its microphone in real time and receives the avatar's video and the delayed audio. The clients run
in a child process (as a browser would be another process), so that this process's CPU time and
its event loop are the server's alone; their records (received frames with RTP timestamps and
arrival times, RTCP sender reports, their own microphone frames) come back when they close. Both
processes time with ``time.time()`` (one machine). ``--weights none`` is passthrough (no model:
transport and playout only); ``standin`` is the real landmark transformer and neural renderer with
stand-in weights (timings do not depend on the values); ``paths`` loads ``--landmark-checkpoint``
/ ``--renderer-checkpoint``. ``--renderer`` picks the server's renderer (``ServerConfig.renderer``):
by default ``neural`` with weights and ``none`` (passthrough) without; ``preview`` (or its old name
``retrieval``) is the CPU preview renderer (the avatar's own mouths, following the voice's loudness,
or the transformer when weights are given).

What is measured, and on which clock:

- **client e2e (send)**: for every received video frame that shows a fresh session frame ``p`` of
  the speech clip: the time the server sent it (its RTP timestamp mapped to the server's send
  clock by the RTCP sender reports the client received, as ``RtcClient.send_time``) minus the time
  the client sent the audio frame that contains the first sample of ``p`` (its own record of its
  microphone frames). **client e2e (arrival)**: the same, to the time the decoded frame came out of
  the client's aiortc receiver (adds the client's jitter buffer and decoding).
- Which session frame a received frame shows is taken from the server object in-process: a
  wrapper around the session's video track records, for each output frame ``i`` it makes,
  whether it showed a fresh session frame (and which ``p``), repeated the last image (late) or was
  an idle rest frame. The output index of a received frame is ``i = pts / 3600 + i0``; ``i0`` (the
  first received frame's index) is the largest value for which no RTCP sender report claims a send
  time before the server made the frame (sender reports are sent after the frame's packets).
- **server stages** (``streaming.session.STAGES``: ingest, mel, window_wait, queue, transformer,
  sketch, renderer, composite, hold, encode, send; total = audio arrival -> frame on the wire):
  the server's own per-frame records (``StreamSession.on_frame``), for the same frames as the
  client figure. Around them, **uplink** (the client sent the frame's first sample -> it reached
  the server's session: Opus, loopback, aiortc's receive jitter buffer) and **wire** (the server's
  end of ``total`` -> the RTCP-mapped send time; about 0); uplink + total + wire = client e2e.
  The server's ``stats()`` snapshot of each session is stored in the JSON as well.
- Session frames map to input samples through the session's segments (a gap closed by the watchdog
  moves the session clock on; the next segment goes on with the next input sample); frames of gaps
  are not measured.
- **A/V offset**: one loud second of the input is found in the returned audio by cross-correlation,
  which places session sample 0 on the returned audio's send clock; offset = median over frames of
  (send time of video frame ``p``) - (send time of the returned audio of session sample ``640 p``);
  positive = video later. **audio e2e**: send time of the returned copy of that input second minus
  the time the client sent it (mouth to ear, on the server's send clock).
- received fps (client arrival times), frames shed by the latency budget (``dropped``; drop rate =
  dropped / (dropped + rendered speech frames)), late frames (the previous image repeated because
  the frame was not ready: the server's counter, and those of the clip's frames), CPU% of this
  process (the server alone) and of the clients' process, and, on CUDA, peak GPU memory. Before
  each run the machine is checked idle (1-min load < ``--max-load``; it waits up to
  ``--idle-wait`` s, else the run is marked busy).

Writes ``benchmarks/results/<out-name>.json`` and ``.md`` with device, versions, command and date.
The suites, the server and its probes, the clients' process, the analysis and the report are in
``benchmarks/latency/`` (its package docstring lists them); this file holds the options and the plan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, run_meta, write_results  # noqa: E402
from benchmarks.latency.report import markdown, print_table  # noqa: E402
from benchmarks.latency.run import measure  # noqa: E402
from benchmarks.latency.suites import (  # noqa: E402
    DEFAULT_AUDIO,
    DEFAULT_AUDIO_START,
    DEFAULT_AVATAR,
    SR16,
    SUITES,
    input_audio,
    write_wav16,
)
from engine.synth.backends import BACKENDS, DTYPES  # noqa: E402

RENDERERS = ("auto", "neural", "preview", "retrieval", "none")  # retrieval: the old name of preview


def git_state() -> dict:
    """The commit measured, and the tracked files that differ from it (the working tree is measured)."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    changed = git("diff", "--name-only", "HEAD").splitlines()
    return {"git_commit": git("rev-parse", "--short", "HEAD") or None, "git_modified": changed}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), help="run a named sequence of configurations")
    ap.add_argument(
        "--weights",
        choices=("none", "standin", "paths"),
        default=None,
        help="none: passthrough (default); standin: stand-in weights; paths: the checkpoints below",
    )
    ap.add_argument(
        "--renderer",
        choices=RENDERERS,
        help="the server's renderer (default: neural with weights, none without: passthrough); "
        "preview: the CPU preview renderer (retrieval: its old name)",
    )
    ap.add_argument("--landmark-checkpoint", metavar="P")
    ap.add_argument("--renderer-checkpoint", metavar="P")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default cpu; cuda for --suite gpu)")
    ap.add_argument("--backend", default="fast", choices=BACKENDS)
    ap.add_argument("--precision", default="fp32", choices=tuple(DTYPES))
    ap.add_argument(
        "--refs", type=int, default=None, help="renderer references (default 1 on CPU, 5 on CUDA)"
    )
    ap.add_argument("--batch", type=int, default=2, help="max windows per model call (default 2)")
    ap.add_argument("--delay-ms", type=float, default=400.0)
    ap.add_argument("--sessions", type=int, default=1, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="microphone audio per session")
    ap.add_argument(
        "--audio", help=f"speech file (default {DEFAULT_AUDIO.name} from ../shared/media, else synthetic)"
    )
    ap.add_argument(
        "--audio-start",
        type=float,
        default=None,
        help=f"seconds skipped from the file's start (default {DEFAULT_AUDIO_START} for the default clip)",
    )
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR))
    ap.add_argument("--cache", default=None, help="avatar cache folder (default: a temporary one)")
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of an unmeasured first session (0: none)"
    )
    ap.add_argument("--max-load", type=float, default=0.8, help="idle: 1-minute load average below this")
    ap.add_argument("--idle-wait", type=float, default=180.0, help="wait at most this long for idle (s)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--out-name", help="result file stem (default live_latency_<device or suite>)")
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if args.suite == "gpu" else "cpu"
    if args.weights is None:
        args.weights = "paths" if args.landmark_checkpoint or args.renderer_checkpoint else "none"
    if args.renderer == "retrieval":
        args.renderer = "preview"
    if args.renderer == "neural" and args.weights == "none":
        ap.error("--renderer neural needs weights: --weights standin or the checkpoints")
    if args.weights == "paths" and not (args.landmark_checkpoint and args.renderer_checkpoint):
        ap.error("--weights paths needs --landmark-checkpoint and --renderer-checkpoint")
    if args.seconds < 3:
        ap.error("--seconds must be at least 3")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    device_kind = args.device.split(":")[0]
    if device_kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    plan = [(n, o) for n, o in SUITES[args.suite]] if args.suite else [("run", {})]
    x16, audio_desc = input_audio(args)
    import aiortc

    meta = run_meta(  # before the server sets torch's thread count (each run records its own)
        "live_latency.py",
        args.device,
        aiortc=aiortc.__version__,
        audio=audio_desc,
        seconds=args.seconds,
        avatar=Path(args.avatar).name,
        cpu_count=os.cpu_count(),
        device_arg=args.device,
        **git_state(),
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cache is None:
            args.cache = str(tmp / "avatars")
        wav = tmp / "mic.wav"
        write_wav16(wav, x16)
        warm = None
        if args.warmup > 0:
            warm = tmp / "warm.wav"
            write_wav16(warm, x16[: int(args.warmup * SR16)])
        for name, over in plan:
            opts = argparse.Namespace(**{**vars(args), **over})
            if opts.refs is None:
                opts.refs = 5 if device_kind == "cuda" else 1
            if opts.renderer is None:
                opts.renderer = "none" if opts.weights == "none" else "neural"
            if name == "run":
                name = f"{opts.weights} weights, renderer {opts.renderer}, {opts.sessions} session(s)"
            print(f"[{name}] {', '.join(f'{k}={v}' for k, v in over.items())}", flush=True)
            r = asyncio.run(measure(opts, x16, wav, warm))
            r["name"] = name
            runs.append(r)
            print_table(name, r)
    stem = args.out_name or f"live_latency_{args.suite if args.suite else device_kind}"
    write_results(args.out, stem, {"meta": meta, "runs": runs}, markdown(meta, runs))


if __name__ == "__main__":
    main()

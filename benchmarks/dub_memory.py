"""Peak memory and speed of ``mouthpiece dub --renderer preview`` by audio length, for this tree and,
optionally, another one (the code before the streaming dub).

    git archive 0fae833 | tar -x -C /tmp/dub_before        # the whole-file dub, for comparison
    .venv/bin/python benchmarks/dub_memory.py --minutes 1 10 60 --before /tmp/dub_before

Each dub runs in a child process (``python -m engine dub``, the tree on PYTHONPATH, the avatar
prepared beforehand so that its cache is warm); its peak RSS is its own ``VmHWM``
(/proc/self/status, read as it exits; the kernel's ``ru_maxrss`` for one that was stopped). A child
whose RSS passes ``--max-rss-gb`` is stopped (the peak is then "more than" that) so that the machine
is not pushed into swap or the OOM killer. The audio is
``speech_c_16k_60s.wav`` from the shared media repeated to the length (silence where that file is
absent). Writes ``benchmarks/results/dub_memory_<device>.json`` and ``.md`` with device, command, date.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, ROOT, run_meta, write_results  # noqa: E402

#: Runs ``python -m engine ARGS`` and writes the process's own peak RSS (VmHWM, kB) to the file named
#: first: ``ru_maxrss`` of a child started by fork or vfork also counts its parent's pages before exec.
CHILD = (
    "import runpy, sys\n"
    "hwm = sys.argv.pop(1)\n"
    "try:\n"
    "    runpy.run_module('engine', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    kb = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "    open(hwm, 'w').write(kb)\n"
)
SPEECH = ROOT.parent / "shared" / "media" / "speech_c_16k_60s.wav"


def write_audio(path: Path, minutes: float) -> str:
    """``minutes`` of 16 kHz mono 16-bit audio: the speech clip repeated, or silence; returns which."""
    rate, total = 16000, int(minutes * 60 * 16000)
    if SPEECH.is_file():
        with wave.open(str(SPEECH)) as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (rate, 1, 2)
            clip, kind = f.readframes(f.getnframes()), "speech (a 60 s clip, repeated)"
    else:
        clip, kind = np.zeros(rate, "<i2").tobytes(), "silence"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        left = total * 2
        while left > 0:
            f.writeframes(clip[:left])
            left -= len(clip)
    return kind


def run_child(tree: Path, args: list[str], max_rss_kb: int) -> dict:
    """Run ``python -m engine ARGS`` from ``tree``; wall seconds, exit status, output, peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryFile("w+") as out, tempfile.NamedTemporaryFile("r") as hwm:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", CHILD, hwm.name, *args]
        p = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=out)
        stopped = threading.Event()

        def watch() -> None:  # stop a child that passes the limit
            while p.poll() is None:
                try:
                    status = Path(f"/proc/{p.pid}/status").read_text()
                except OSError:
                    return
                m = re.search(r"VmRSS:\s+(\d+) kB", status)
                if m and int(m.group(1)) > max_rss_kb:
                    stopped.set()
                    p.kill()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
        own = hwm.read().strip()  # empty when the child was killed
    peak_kb = int(own) if own else usage.ru_maxrss
    m = re.search(r": (\d+) frames at .*?; ([\d.]+) frames/s after preparation", text)
    return {
        "rc": p.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "stopped_over_limit": stopped.is_set(),
        "frames": int(m.group(1)) if m else None,
        "frames_per_s": float(m.group(2)) if m else None,
        "tail": text.strip().splitlines()[-3:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    ap.add_argument("--before", type=Path, help="another source tree to measure the same way (before)")
    ap.add_argument("--avatar", default=str(ROOT / "assets" / "portrait.png"))
    ap.add_argument("--max-rss-gb", type=float, default=6.0, help="stop a child past this RSS")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    trees = {"after": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    rows = []
    limit_kb = int(args.max_rss_gb * 1024 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kind = ""
        for minutes in args.minutes:
            audio = tmp / f"audio_{minutes:g}min.wav"
            kind = write_audio(audio, minutes)
            for label, tree in trees.items():
                cache, out = tmp / f"cache_{label}", tmp / f"{label}.mp4"
                prep = run_child(
                    tree, ["prepare", args.avatar, "--refs", "1", "--cache", str(cache)], limit_kb
                )
                assert prep["rc"] == 0, prep
                cmd = ["dub", "--avatar", args.avatar, "--audio", str(audio), "--out", str(out)]
                cmd += ["--renderer", "preview", "--refs", "1", "--cache", str(cache), "--quiet"]
                r = run_child(tree, cmd, limit_kb)
                rows.append({"code": label, "minutes": minutes, **r})
                print(rows[-1], flush=True)
                out.unlink(missing_ok=True)
            audio.unlink()
    meta = run_meta("dub_memory.py", "cpu", avatar=Path(args.avatar).name, audio=kind)
    lines = [
        "`mouthpiece dub --renderer preview`: peak memory and speed by audio length",
        f"{meta['device']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        f"(avatar {meta['avatar']}, --refs 1, warm avatar cache; audio: {kind}, 16 kHz mono WAV; peak RSS of",
        "the dub's process from the kernel; frames/s: the dub's own figure after preparation)",
        "",
        "| code | audio | frames | peak RSS | frames/s | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        peak = f"> {args.max_rss_gb:g} GB (stopped)" if r["stopped_over_limit"] else f"{r['peak_rss_mb']} MB"
        fps = f"{r['frames_per_s']:.1f}" if r["frames_per_s"] else "-"
        lines.append(
            f"| {r['code']} | {r['minutes']:g} min | {r['frames'] or '-'} | {peak} | {fps} | {r['wall_s']} |"
        )
    write_results(args.out, "dub_memory_cpu", {"meta": meta, "rows": rows}, lines)


if __name__ == "__main__":
    main()

"""Training-data preprocessing of a folder (``mouthpiece train preprocess INPUT OUT``): every video
under INPUT (or in an LRS2 file list) becomes a clip folder of the dataset in OUT
(:mod:`.dataset`, docs/training_data.md) on a process pool (spawn; one FaceMesh per worker;
``workers=1`` runs here), resumably (complete clips with the same settings are skipped), with bad
files and crashed workers reported in ``OUT/report.json`` and ``manifest.json`` rebuilt at the end.
Also the public face of the preprocessing: finding videos (:mod:`.preprocess_discover`), one clip
(:mod:`.preprocess_clip`), settings (:mod:`.preprocess_config`) and the dataset files are re-exported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np  # noqa: F401 - part of this module's face: tests patch ``preprocess.np.save``

from .dataset import (
    CLIP_FILES,
    FORMAT_VERSION,
    IMAGE_SIZE,
    SAMPLE_RATE,
    TMP_SUFFIX,
    WINDOW,
    is_complete,
    load_clip,
    read_manifest,
    rebuild_manifest,
    tmp_dir,
    write_json,
)
from .preprocess_clip import preprocess_video
from .preprocess_config import (
    VIDEO_EXTENSIONS,
    PreprocessConfig,
    PreprocessError,
    ProgressCallback,
    default_workers,
)
from .preprocess_discover import VideoEntry, clip_id, list_videos, read_filelist, relative_source

__all__ = [
    "CLIP_FILES",
    "FORMAT_VERSION",
    "IMAGE_SIZE",
    "SAMPLE_RATE",
    "VIDEO_EXTENSIONS",
    "WINDOW",
    "PreprocessConfig",
    "PreprocessError",
    "ProgressCallback",
    "VideoEntry",
    "add_arguments",
    "clip_id",
    "config_from_args",
    "default_workers",
    "is_complete",
    "list_videos",
    "load_clip",
    "preprocess_folder",
    "preprocess_video",
    "read_filelist",
    "read_manifest",
    "rebuild_manifest",
    "run_from_args",
    "summary",
]

# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

_WORKER_LANDMARKER: Any = None


def _worker_init(margin_px: int) -> None:
    """Per worker: ignore Ctrl-C (the parent stops workers), one OpenCV thread, one FaceMesh."""
    global _WORKER_LANDMARKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)
    from engine.core.face import FaceLandmarker, FaceMeshConfig

    _WORKER_LANDMARKER = FaceLandmarker(FaceMeshConfig(margin_px=margin_px))


def _process_one(
    entry: VideoEntry, out_root: str, config: PreprocessConfig, landmarker: Any
) -> dict[str, Any]:
    """Process one video; never raises for a bad video (the result says ``failed``)."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {"id": entry.id, "source": entry.source}
    try:
        meta = preprocess_video(
            entry.path,
            Path(out_root) / "clips" / entry.id,
            config,
            landmarker=landmarker,
            source=entry.source,
        )
        result.update(status="processed", frames=meta["frames"], valid_frames=meta["valid_frames"])
    except (PreprocessError, FileNotFoundError) as e:
        result.update(status="failed", reason=str(e))
    except Exception as e:  # an unexpected failure on one file must not stop the run
        result.update(
            status="failed",
            reason=f"unexpected error: {e.__class__.__name__}: {e}",
            traceback=traceback.format_exc(limit=8),
        )
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _worker_run(entry: VideoEntry, out_root: str, config: PreprocessConfig) -> dict[str, Any]:
    return _process_one(entry, out_root, config, _WORKER_LANDMARKER)


# --------------------------------------------------------------------------------------------
# A run over a folder
# --------------------------------------------------------------------------------------------


def _collect(
    input_root: Path, out_root: Path, config: PreprocessConfig
) -> tuple[list[VideoEntry], list[dict[str, Any]]]:
    """Videos to consider (after ``limit``) and the failures found while listing."""
    failed: list[dict[str, Any]] = []
    if config.filelist is not None:
        paths, missing = read_filelist(input_root, config.filelist, config.extensions)
        for name in missing:
            failed.append(
                {
                    "source": name,
                    "reason": f"listed in {config.filelist} but no video {name}"
                    f"{{{','.join(config.extensions)}}} under {input_root} or {input_root / 'main'}",
                }
            )
    else:
        paths = list_videos(input_root, config.extensions, exclude=[out_root])
    entries: list[VideoEntry] = []
    by_id: dict[str, str] = {}
    for p in paths:
        e = VideoEntry(path=p, source=relative_source(p, input_root))
        if e.id.endswith(TMP_SUFFIX):
            failed.append({"source": e.source, "reason": f"its clip id {e.id!r} ends in {TMP_SUFFIX!r}"})
        elif e.id in by_id:
            failed.append(
                {"source": e.source, "reason": f"clip id {e.id!r} is already taken by {by_id[e.id]}"}
            )
        else:
            by_id[e.id] = e.source
            entries.append(e)
    if config.limit is not None:
        entries = entries[: int(config.limit)]
    return entries, failed


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None, show: bool) -> None:
        self.total, self.done, self.frames = total, 0, 0
        self.callback = callback
        self.t0 = time.perf_counter()
        self.bar = None
        if callback is None and show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="preprocess", unit="video", dynamic_ncols=True)

    def __call__(self, entry: dict[str, Any]) -> None:
        self.done += 1
        self.frames += int(entry.get("frames", 0) or 0)
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.frames / elapsed:.0f} frames/s", refresh=False)
            self.bar.update(1)
        if self.callback is not None:
            public = {k: v for k, v in entry.items() if k in ("id", "source", "status", "frames", "reason")}
            self.callback(self.done, self.total, public)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_serial(entries: Sequence[VideoEntry], out_root: Path, config: PreprocessConfig, on_result) -> None:
    from engine.core.face import FaceLandmarker, FaceMeshConfig

    with FaceLandmarker(FaceMeshConfig(margin_px=config.margin_px)) as fm:
        for e in entries:
            on_result(_process_one(e, str(out_root), config, fm))


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (they ignore SIGINT)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


_CRASH_REASON = (
    "a worker process died while processing it (a crash in the decoder or FaceMesh, or out of memory)"
)
#: Fresh pools in a row that may die before finishing any video before the run gives up.
_MAX_DEAD_POOLS = 5


def _run_pool(
    entries: Sequence[VideoEntry], out_root: Path, config: PreprocessConfig, on_result, inflight_ids: set[str]
) -> None:
    """Run ``entries`` on a process pool, at most 2 x workers submitted at a time.

    When a worker dies, every video that was submitted and not finished becomes a suspect;
    suspects are rerun one at a time (nothing beside them), and one that kills a worker while
    alone is reported as failed. After :data:`_MAX_DEAD_POOLS` pools in a row die without
    finishing a video (e.g. workers that cannot start), :class:`PreprocessError` is raised.
    """
    ctx = multiprocessing.get_context(config.start_method)
    n = max(1, min(config.workers, len(entries)))
    pending: deque[VideoEntry] = deque(entries)
    suspects: deque[VideoEntry] = deque()
    dead_pools = 0
    while pending or suspects:
        ex = ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_worker_init, initargs=(config.margin_px,)
        )
        inflight: dict[Future, VideoEntry] = {}
        broken = False
        finished = 0

        def submit(e: VideoEntry, ex: ProcessPoolExecutor = ex, inflight: dict = inflight) -> bool:
            try:
                f = ex.submit(_worker_run, e, str(out_root), config)
            except BrokenProcessPool:
                return False
            inflight[f] = e
            inflight_ids.add(e.id)
            return True

        try:
            while (pending or suspects or inflight) and not broken:
                if suspects:  # isolate: one suspect at a time, nothing beside it
                    if not inflight:
                        e = suspects.popleft()
                        if not submit(e):
                            suspects.appendleft(e)
                            broken = True
                else:
                    while pending and len(inflight) < 2 * n and not broken:
                        e = pending.popleft()
                        if not submit(e):
                            pending.appendleft(e)
                            broken = True
                if broken or not inflight:
                    continue
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        res = f.result()
                    except BrokenProcessPool:
                        broken = True  # f stays in inflight: handled below with the others
                        continue
                    e = inflight.pop(f)
                    inflight_ids.discard(e.id)
                    finished += 1
                    on_result(res)
            if broken:
                alone = len(inflight) == 1
                for f, e in list(inflight.items()):
                    res = None
                    if f.done() and not f.cancelled() and f.exception() is None:
                        res = f.result()
                    inflight_ids.discard(e.id)
                    shutil.rmtree(tmp_dir(out_root / "clips" / e.id), ignore_errors=True)
                    if res is not None:
                        finished += 1
                        on_result(res)
                    elif alone:
                        on_result(
                            {"id": e.id, "source": e.source, "status": "failed", "reason": _CRASH_REASON}
                        )
                    else:
                        suspects.append(e)
                inflight.clear()
                dead_pools = 0 if finished else dead_pools + 1
                if dead_pools >= _MAX_DEAD_POOLS:
                    raise PreprocessError(
                        f"worker processes keep dying ({dead_pools} pools in a row finished no video); "
                        "see the errors above, or run with workers=1"
                    )
        finally:
            if broken or inflight:  # a dead pool, KeyboardInterrupt or an error in this process
                _stop_pool(ex)
            else:
                ex.shutdown(wait=True)


def preprocess_folder(
    input_root: str | os.PathLike,
    out_root: str | os.PathLike,
    config: PreprocessConfig | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Preprocess every video under ``input_root`` into ``out_root``; returns the run's report.

    The report (also written to ``out_root/report.json``) holds ``processed`` and
    ``skipped_existing`` (clip ids), ``failed`` (``{"source", "reason"}``, plus ``"id"`` when the
    video was tried), ``seconds``, and ``frames`` / ``frames_per_second`` (frames written and their
    rate), ``listed``, ``interrupted``, ``input_root``, ``out_root`` and ``config``.
    ``manifest.json`` is rebuilt at the end, also when the run is interrupted (Ctrl-C is then
    re-raised after both files are written). ``progress(done, total, entry)`` is called after each
    video (see :data:`ProgressCallback`); without it a tqdm bar is shown if
    ``config.show_progress``.
    """
    config = config or PreprocessConfig()
    t0 = time.perf_counter()
    input_root, out_root = Path(input_root), Path(out_root)
    if not input_root.is_dir():
        raise PreprocessError(f"input folder not found: {input_root}")
    clips_dir = out_root / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    for stale in clips_dir.glob(f"*{TMP_SUFFIX}"):  # left by an interrupted run (also ".<id>.old.tmp")
        shutil.rmtree(stale, ignore_errors=True)

    entries, failed = _collect(input_root, out_root, config)
    settings = config.settings()
    report: dict[str, Any] = {
        "processed": [],
        "skipped_existing": [],
        "failed": list(failed),
        "seconds": 0.0,
        "frames": 0,
        "frames_per_second": 0.0,
        "listed": len(entries) + len(failed),
        "interrupted": False,
        "input_root": str(input_root),
        "out_root": str(out_root),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    todo: list[VideoEntry] = []
    skipped: list[VideoEntry] = []
    for e in entries:
        if not config.overwrite and is_complete(clips_dir / e.id, settings):
            skipped.append(e)
        else:
            todo.append(e)

    bar = _Progress(len(entries), progress, config.show_progress)
    results: dict[str, dict[str, Any]] = {}

    def on_result(res: dict[str, Any]) -> None:
        results[res["id"]] = res
        bar(res)

    inflight_ids: set[str] = set()
    try:
        for e in skipped:
            on_result({"id": e.id, "source": e.source, "status": "skipped_existing"})
        if todo and (config.workers == 1 or len(todo) == 1):
            _run_serial(todo, out_root, config, on_result)
        elif todo:
            _run_pool(todo, out_root, config, on_result, inflight_ids)
    except KeyboardInterrupt:
        report["interrupted"] = True
        raise
    finally:
        bar.close()
        for i in inflight_ids:  # workers were stopped; remove what they left
            shutil.rmtree(tmp_dir(clips_dir / i), ignore_errors=True)
        for e in entries:  # listing order
            res = results.get(e.id)
            if res is None:
                continue
            if res["status"] == "processed":
                report["processed"].append(e.id)
                report["frames"] += int(res.get("frames", 0))
            elif res["status"] == "skipped_existing":
                report["skipped_existing"].append(e.id)
            else:
                item = {"source": e.source, "reason": res["reason"], "id": e.id}
                if "traceback" in res:
                    item["traceback"] = res["traceback"]
                report["failed"].append(item)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        report["frames_per_second"] = round(report["frames"] / max(report["seconds"], 1e-9), 2)
        rebuild_manifest(out_root, config)
        write_json(out_root / "report.json", report)
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the preprocessing arguments (INPUT OUT and options) to ``parser``."""
    d = PreprocessConfig(workers=1)
    parser.add_argument("input", metavar="INPUT", help="folder of videos (LRS2: the 'main' folder)")
    parser.add_argument("out", metavar="OUT", help="output dataset folder (created; reruns resume)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default: min(4, CPUs) = {default_workers()}; 1 = no pool)",
    )
    parser.add_argument(
        "--filelist", metavar="F", help="LRS2-style list of <speaker>/<clip> lines, relative to INPUT"
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="process at most N videos (the first N listed)"
    )
    parser.add_argument(
        "--max-frames", type=int, metavar="N", help="keep at most N frames (25 fps) of each video"
    )
    parser.add_argument("--overwrite", action="store_true", help="reprocess clips that are already complete")
    parser.add_argument(
        "--margin-px", type=int, default=d.margin_px, help="crop margin in pixels (default: 5)"
    )
    parser.add_argument(
        "--min-valid-fraction",
        type=float,
        default=d.min_valid_fraction,
        help="least fraction of frames with a face (default: %(default)s)",
    )
    parser.add_argument(
        "--extensions",
        default=",".join(e[1:] for e in d.extensions),
        help="video file extensions, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    exts = tuple(e.strip() for e in str(args.extensions).split(",") if e.strip())
    return PreprocessConfig(
        workers=args.workers if args.workers is not None else default_workers(),
        margin_px=args.margin_px,
        overwrite=args.overwrite,
        limit=args.limit,
        max_frames=args.max_frames,
        extensions=exts,
        min_valid_fraction=args.min_valid_fraction,
        filelist=args.filelist,
        show_progress=not args.quiet,
    )


def summary(report: dict[str, Any]) -> str:
    """A few lines for people: counts, speed, and each failure with its reason."""
    lines = [
        f"{len(report['processed'])} processed, {len(report['skipped_existing'])} already done, "
        f"{len(report['failed'])} failed, in {report['seconds']:.1f} s "
        f"({report['frames']} frames, {report['frames_per_second']:.1f} frames/s)"
        + (" - interrupted, run again to resume" if report.get("interrupted") else "")
    ]
    for f in report["failed"]:
        lines.append(f"  failed: {f['source']}: {f['reason']}")
    lines.append(f"report: {Path(report['out_root']) / 'report.json'}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments; prints a summary. 0 = done (failures are in the report),
    1 = no usable video (none found, or every one failed); interrupted: the summary so far, then the
    interruption goes on to the command line's convention (130 for Ctrl+C, 143 for SIGTERM)."""
    config = config_from_args(args)
    try:
        report = preprocess_folder(args.input, args.out, config)
    except KeyboardInterrupt:  # Ctrl+C, SIGTERM, SIGHUP: the summary, then 128 + the signal's number
        rp = Path(args.out) / "report.json"
        if rp.is_file():
            print(summary(json.loads(rp.read_text(encoding="utf-8"))), file=sys.stderr)
        raise
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(summary(report))
    if not report["processed"] and not report["skipped_existing"]:
        if not report["failed"]:
            print(f"no videos found under {args.input}", file=sys.stderr)
        return 1
    return 0

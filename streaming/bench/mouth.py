"""How open the avatar's mouth is in each received frame, and where it starts to open.

Mouth openness of a received frame (:class:`MouthMeter`, FaceMesh in a worker thread while the
session runs): FaceMesh (:class:`engine.core.face.FaceLandmarker`, one independent detection per
frame, no temporal smoothing) lip opening (points 0-17) over the eye-corner distance (33-263), in
pixels (:func:`mouth_openness`). Levels (:func:`mouth_levels`): *rest*, the median openness of the
frames sent while the returned audio is quiet (more than 0.5 s before and 0.6 s after each returned
burst); *peak*, the 95th percentile of the frames sent during the returned bursts; span = peak -
rest. An opening (:func:`mouth_onsets`) is found at the first frame that reaches rest + 0.3 span
after at least 5 frames (200 ms) under rest + 0.2 span (:func:`opening_frames`); it *starts* at
the earliest of that frame and the 2 before it that lies 0.1 span above the median of the 5 frames
before it (and every frame from there on at least half that far): the first frame whose mouth
visibly moves, judged against its own neighbourhood. (FaceMesh on a compressed still wanders by up
to about 0.15 span over a session, in the encoder's quality steps; the preview renderer's first
open frame, a third of the way open, rises 0.1-0.3 span over the frames before it, so now and then
the next frame, clearly open, is the one found: one frame late.)
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time

import numpy as np

__all__ = ["MouthMeter", "mouth_levels", "mouth_onsets", "mouth_openness", "opening_frames"]

SURE_FRACTION = 0.3  # an opening is found where openness reaches rest + this fraction of (peak - rest) ...
CLOSED_FRACTION = 0.2  # ... after CLOSED_FRAMES frames under rest + this fraction (closed) ...
CLOSED_FRAMES = 5
RISE_FRACTION = 0.1  # ... and starts where a frame lies this fraction above the median of ...
BASELINE = 5  # ... the frames before it ...
RISE_FRAMES = 2  # ... at most this many frames before the frame it was found at
MIN_RISE = 0.005  # (the rise is at least this, in eye-corner distances)


def mouth_openness(points: np.ndarray, height: int, width: int) -> float:
    """Lip opening (FaceMesh points 0-17) over the eye-corner distance (33-263), in pixels, from a
    raw normalised mesh (478, 2|3); NaN for a degenerate face."""
    from engine.core.face import lip_openness

    p = np.asarray(points, np.float64)[:, :2] * (width, height)
    eye = float(np.linalg.norm(p[33] - p[263]))
    return lip_openness(p) / eye if eye > 1e-6 else float("nan")


class MouthMeter:
    """FaceMesh on received frames in a worker thread while the session runs (the images are not
    kept): ``results`` gets (pts, openness or NaN when no face is found) per frame."""

    MAX_SIDE = 720  # larger frames are scaled down first (the ratio does not depend on scale)

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self.results: list[tuple[int, float]] = []
        self.cpu_s = 0.0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        from engine.core.face import _face_mesh_module

        _face_mesh_module()  # import MediaPipe here, once, not in the thread while a session runs
        self._thread = threading.Thread(target=self._run, name="mouthpiece-bench-facemesh", daemon=True)
        self._thread.start()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until FaceMesh is loaded (before the session starts, so loading it does not stall it)."""
        await asyncio.to_thread(self._ready.wait, timeout)
        if self.error is not None:
            raise RuntimeError(f"FaceMesh failed: {self.error}") from self.error
        if not self._ready.is_set():
            raise TimeoutError(f"FaceMesh did not load within {timeout:.0f} s")

    def submit(self, pts: int, arrival: float, image: np.ndarray) -> None:
        self._queue.put((pts, image))

    def _run(self) -> None:
        import cv2

        from engine.core.face import FaceLandmarker

        try:
            with FaceLandmarker() as mesh:
                self._ready.set()
                while True:
                    item = self._queue.get()
                    if item is None:
                        break
                    pts, img = item
                    h, w = img.shape[:2]
                    if max(h, w) > self.MAX_SIDE:
                        s = self.MAX_SIDE / max(h, w)
                        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                        h, w = img.shape[:2]
                    rec = mesh.detect(img)
                    o = mouth_openness(rec.points, h, w) if rec.found else float("nan")
                    self.results.append((pts, o))
        except BaseException as e:  # noqa: BLE001 - reported by ready() / close()
            self.error = e
        finally:
            self.cpu_s = time.thread_time()
            self._ready.set()

    async def close(self, timeout: float) -> list[tuple[int, float]]:
        """Finish the frames still queued (within ``timeout`` seconds) and stop."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"FaceMesh did not finish the received frames within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"FaceMesh failed: {self.error}") from self.error
        return self.results


def opening_frames(
    openness: np.ndarray, threshold: float, closed: int = CLOSED_FRAMES, low: float | None = None
) -> np.ndarray:
    """Positions in ``openness`` (frames in order; NaN: no face, skipped) where the mouth opens: it
    reaches ``threshold`` after at least ``closed`` consecutive frames under ``low`` (default:
    ``threshold``) since the last opening."""
    low = threshold if low is None else low
    out, run, armed = [], closed, True  # the start counts as closed
    for j, o in enumerate(openness):
        if not math.isfinite(o):
            continue
        if o < low:
            run += 1
            armed = armed or run >= closed
        else:
            run = 0
        if o >= threshold and armed:
            out.append(j)
            armed = False
    return np.array(out, np.int64)


def mouth_onsets(openness: np.ndarray, rest: float, peak: float) -> np.ndarray:
    """The frames where the mouth starts to open (module docstring). With ``span = peak - rest``: an
    opening is found at the first frame that reaches ``rest + 0.3 span`` after at least 5 frames
    under ``rest + 0.2 span`` (:func:`opening_frames`); it starts at the earliest of that frame and
    the 2 before it that lies ``0.1 span`` above the median of the 5 frames before it, with every
    frame from there on at least half that far above the same median."""
    span = peak - rest
    if not (math.isfinite(span) and span > 0):
        return np.zeros(0, np.int64)
    fin = np.flatnonzero(np.isfinite(openness))
    o = openness[fin]
    sure = opening_frames(o, rest + SURE_FRACTION * span, low=rest + CLOSED_FRACTION * span)
    rise = max(RISE_FRACTION * span, MIN_RISE)
    out = []
    for n in sure:
        start = int(n)
        for j in range(max(BASELINE, n - RISE_FRAMES), n + 1):
            base = float(np.median(o[j - BASELINE : j]))
            if o[j] - base >= rise and o[j : n + 1].min() >= base + rise / 2:
                start = j
                break
        out.append(int(fin[start]))
    return np.array(out, np.int64)


def mouth_levels(send: np.ndarray, openness: np.ndarray, outs: list[float], speech_s: float) -> dict:
    """Rest and open levels of the received mouth: the median of the frames sent while the returned
    audio is quiet (more than 0.5 s before and 0.6 s after each burst's returned onset) and the 95th
    percentile of those sent during the returned bursts; without returned clicks, the 10th and 95th
    percentiles of all frames."""
    ok = np.isfinite(openness)
    quiet, speaking = ok.copy(), np.zeros_like(ok)
    for out in outs:
        quiet &= ~((send >= out - 0.5) & (send < out + speech_s + 0.6))
        speaking |= (send >= out) & (send < out + speech_s)
    speaking &= ok
    if quiet.sum() >= 10 and speaking.sum() >= 5:
        rest, peak = float(np.median(openness[quiet])), float(np.percentile(openness[speaking], 95))
    elif ok.any():
        rest, peak = float(np.percentile(openness[ok], 10)), float(np.percentile(openness[ok], 95))
    else:
        rest = peak = float("nan")
    return {"rest": round(rest, 4), "peak": round(peak, 4)}

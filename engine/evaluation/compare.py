"""Metrics of generated frames against aligned reference frames: :func:`evaluate_frames` (two
frame sequences, pair i against pair i) and :func:`evaluate_video` (two video files at 25 fps,
aligned by frame index). FaceMesh runs on both frames of a pair; a metric that cannot be computed
is ``None`` with a reason in the result's ``reasons``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.evaluation.common import CROP_SIZE, DOCS, FPS, MARGIN_PX, SAMPLES_PER_FRAME, EvaluationError
from engine.evaluation.lips import lip_lmd
from engine.evaluation.networks import (
    Networks,
    arcface_align,
    arcface_embeddings,
    cosine_similarity,
    feature_statistics,
    fid_features,
    frechet_distance,
    lpips_distances,
)
from engine.evaluation.pixels import psnr, ssim
from engine.evaluation.syncnet import (
    SYNCNET_VSHIFT,
    smooth_boxes,
    syncnet_box,
    syncnet_crop,
    syncnet_score,
)


def _summary(values: Sequence[float], extra: dict | None = None) -> dict | None:
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        out = {"value": float(np.mean(vals)), "std": float(np.std(vals)), "n": int(vals.size)}
    if extra:
        out.update(extra)
    return out


def _no_model(name: str, option: str) -> str:
    return f"{name}: no {option} given; see {DOCS}"


class _Reiterable:
    """Frames of a video file, decoded again on every iteration (for the second SyncNet pass)."""

    def __init__(self, path: str | Path, fps: float, max_frames: int | None):
        self.path, self.fps, self.max_frames = path, fps, max_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        from engine.core.video import iter_frames

        return iter_frames(self.path, fps=self.fps, max_frames=self.max_frames)


def _check_frame(frame: Any, what: str, i: int) -> np.ndarray:
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
        raise EvaluationError(f"{what} frame {i}: expected (H, W, 3) uint8 BGR, got {f.shape} {f.dtype}")
    return f


def evaluate_frames(
    generated_frames: Iterable[np.ndarray],
    reference_frames: Iterable[np.ndarray],
    *,
    landmarker=None,
    networks: Networks | None = None,
    audio: np.ndarray | None = None,
    skip_start: int = 0,
    strict: bool = True,
    vshift: int = SYNCNET_VSHIFT,
    margin_px: int = MARGIN_PX,
    per_frame: bool = False,
) -> dict:
    """Metrics of generated frames against aligned reference frames (full BGR uint8 frames).

    Pair i is ``(generated_frames[i], reference_frames[i])``. Pairs ``i < skip_start`` are left out
    of the per-frame metrics (SyncNet still sees every generated frame, so that ``audio`` stays
    aligned with frame 0). FaceMesh (``landmarker``, an :class:`engine.core.face.FaceLandmarker`; one is
    made when ``None``) runs on both frames of a pair; a pair whose reference frame has no face is
    counted and left out of the face-crop metrics, LipLMD and CSIM; one whose generated frame has
    no face is left out of LipLMD only.

    ``audio``: mono 16 kHz float samples aligned with generated frame 0 (for SyncNet). With
    ``strict`` the sequences must have the same length; otherwise the shorter one sets the count.
    ``generated_frames`` is iterated twice when SyncNet runs (give a list or a re-iterable).

    Returns a JSON-able dict: ``metrics`` (name -> ``{"value", "std", "n", ...}`` or ``None``),
    ``reasons`` (name -> why it is ``None``), ``frames`` (counts) and, with ``per_frame``, the
    per-frame values.
    """
    from engine.core.face import FaceLandmarker, crop_box, crop_face

    nets = networks or Networks()
    own = landmarker is None
    fm = FaceLandmarker() if own else landmarker
    t0 = time.perf_counter()
    basic = ("psnr_face", "ssim_face", "psnr_full", "ssim_full", "lip_lmd")
    vals: dict[str, list[float]] = {k: [] for k in basic}
    frame_index: dict[str, list[int]] = {k: [] for k in vals}
    crops_gen: list[np.ndarray] = []
    crops_ref: list[np.ndarray] = []
    face_index: list[int] = []  # evaluated frames whose reference has a face
    aligned_gen: list[np.ndarray] = []
    aligned_ref: list[np.ndarray] = []
    sync_boxes: list[np.ndarray] = []
    want_sync = nets.syncnet_lip is not None and nets.syncnet_audio is not None and audio is not None
    one_shot = iter(generated_frames) is generated_frames  # an iterator cannot be read twice
    kept: list[np.ndarray] = []  # generated frames kept for SyncNet when they cannot be read again
    counts = {"pairs": 0, "evaluated": 0, "skipped_start": 0, "no_face_reference": 0, "no_face_generated": 0}
    size: tuple[int, ...] | None = None
    gen_it, ref_it = iter(generated_frames), iter(reference_frames)
    try:
        i = 0
        while True:
            g = next(gen_it, None)
            r = next(ref_it, None)
            if g is None or r is None:
                if strict and (g is not None or r is not None):
                    longer = "generated" if g is not None else "reference"
                    raise EvaluationError(f"the {longer} sequence is longer than the other (after {i} pairs)")
                break
            g, r = _check_frame(g, "generated", i), _check_frame(r, "reference", i)
            if g.shape != r.shape:
                raise EvaluationError(
                    f"frame {i}: generated frame is {g.shape[1]}x{g.shape[0]} but the reference is "
                    f"{r.shape[1]}x{r.shape[0]}"
                )
            size = size or g.shape
            hw = g.shape[:2]
            if want_sync and one_shot:
                kept.append(g)
            rec_g = fm.detect(g, i)
            box_src = rec_g if rec_g.found else None
            counts["pairs"] += 1
            if i < skip_start:
                counts["skipped_start"] += 1
                rec_r = fm.detect(r, i) if box_src is None else None
                src = box_src or (rec_r if rec_r is not None and rec_r.found else None)
                sync_boxes.append(syncnet_box(src.points, hw) if src is not None else np.full(4, np.nan))
                i += 1
                continue
            rec_r = fm.detect(r, i)
            counts["evaluated"] += 1
            src = box_src or (rec_r if rec_r.found else None)
            sync_boxes.append(syncnet_box(src.points, hw) if src is not None else np.full(4, np.nan))
            for k, v in (("psnr_full", psnr(g, r)), ("ssim_full", ssim(g, r))):
                vals[k].append(v)
                frame_index[k].append(i)
            if not rec_r.found:
                counts["no_face_reference"] += 1
                i += 1
                continue
            box = crop_box(rec_r.points, hw[0], hw[1], margin_px)
            if box[1] <= box[0] or box[3] <= box[2]:  # pragma: no cover - FaceLandmarker rejects these
                counts["no_face_reference"] += 1
                i += 1
                continue
            cg, cr = crop_face(g, box), crop_face(r, box)
            for k, v in (("psnr_face", psnr(cg, cr)), ("ssim_face", ssim(cg, cr))):
                vals[k].append(v)
                frame_index[k].append(i)
            face_index.append(i)
            if nets.lpips is not None or nets.fid is not None:
                crops_gen.append(cg)
                crops_ref.append(cr)
            if rec_g.found:
                vals["lip_lmd"].append(lip_lmd(rec_g.points, rec_r.points, hw, margin_px=margin_px))
                frame_index["lip_lmd"].append(i)
            else:
                counts["no_face_generated"] += 1
            if nets.arcface is not None:
                aligned_gen.append(arcface_align(g, rec_r.points))
                aligned_ref.append(arcface_align(r, rec_r.points))
            i += 1
    finally:
        if own:
            fm.close()

    metrics: dict[str, dict | None] = {}
    reasons: dict[str, str] = {}
    no_pairs = "no frame pairs to evaluate"
    if skip_start:
        no_pairs += f" after skipping the first {skip_start}"
    no_face = "no face found by FaceMesh in any evaluated reference frame"
    for k in ("psnr_full", "ssim_full", "psnr_face", "ssim_face", "lip_lmd"):
        metrics[k] = _summary(vals[k])
        if metrics[k] is None:
            if counts["evaluated"] == 0:
                reasons[k] = no_pairs
            elif k == "lip_lmd" and counts["no_face_reference"] < counts["evaluated"]:
                reasons[k] = "no face found by FaceMesh in any generated frame whose reference has one"
            else:
                reasons[k] = no_face
    per: dict[str, Any] = {k: {"frames": frame_index[k], "values": vals[k]} for k in vals}

    # LPIPS
    if nets.lpips is None:
        metrics["lpips"], reasons["lpips"] = None, _no_model("LPIPS", "--lpips-model")
    elif not crops_gen:
        metrics["lpips"], reasons["lpips"] = None, no_face
    else:
        d = lpips_distances(nets.lpips, np.stack(crops_gen), np.stack(crops_ref))
        metrics["lpips"] = _summary(d)
        per["lpips"] = {"frames": face_index, "values": d.tolist()}

    # FID
    if nets.fid is None:
        metrics["fid"], reasons["fid"] = None, _no_model("FID", "--fid-model")
    elif len(crops_gen) < 2:
        metrics["fid"], reasons["fid"] = None, f"FID needs at least 2 face crops, got {len(crops_gen)}"
    else:
        fg, fr = fid_features(nets.fid, np.stack(crops_gen)), fid_features(nets.fid, np.stack(crops_ref))
        value = frechet_distance(*feature_statistics(fg), *feature_statistics(fr))
        metrics["fid"] = {"value": value, "std": None, "n": len(crops_gen), "feature_dim": int(fg.shape[1])}

    # CSIM
    if nets.arcface is None:
        metrics["csim"], reasons["csim"] = None, _no_model("CSIM", "--arcface-model")
    elif not aligned_gen:
        metrics["csim"], reasons["csim"] = None, no_face
    else:
        eg = arcface_embeddings(nets.arcface, np.stack(aligned_gen))
        er = arcface_embeddings(nets.arcface, np.stack(aligned_ref))
        if eg.shape != er.shape:  # pragma: no cover - same network, same batch
            raise EvaluationError(f"{nets.arcface.path}: embeddings of different sizes")
        cs = cosine_similarity(eg, er)
        metrics["csim"] = _summary(cs)
        per["csim"] = {"frames": face_index, "values": cs.tolist()}

    # SyncNet
    sync_keys = ("syncnet_dist", "syncnet_conf")
    reason = None
    if nets.syncnet_lip is None or nets.syncnet_audio is None:
        reason = _no_model("SyncNet", "--syncnet-model (or --syncnet-lip and --syncnet-audio)")
    elif audio is None:
        reason = "SyncNet: no audio (the generated video has no audio track and no --audio was given)"
    elif not sync_boxes or not np.isfinite(np.asarray(sync_boxes, dtype=np.float64)).all(axis=1).any():
        reason = "SyncNet: no face found by FaceMesh in any frame"
    elif min(counts["pairs"], np.asarray(audio).size // SAMPLES_PER_FRAME) < 6:
        reason = "SyncNet: needs at least 6 frames with their audio"
    if reason is not None:
        for k in (*sync_keys, "syncnet_offset"):
            metrics[k], reasons[k] = None, reason
    else:
        boxes = smooth_boxes(np.asarray(sync_boxes))
        frames = kept if one_shot else generated_frames
        crops = [syncnet_crop(f, boxes[j]) for j, f in zip(range(len(boxes)), frames, strict=False)]
        s = syncnet_score(crops, audio, nets.syncnet_lip, nets.syncnet_audio, vshift=vshift)
        extra = {"windows": s["windows"], "offset": s["offset"]}
        metrics["syncnet_dist"] = {"value": s["dist"], "std": None, "n": s["windows"], **extra}
        metrics["syncnet_conf"] = {"value": s["conf"], "std": None, "n": s["windows"], **extra}
        metrics["syncnet_offset"] = {"value": s["offset"], "std": None, "n": s["windows"]}
        per["syncnet_framewise_conf"] = s["framewise_conf"].tolist()

    out: dict[str, Any] = {
        "metrics": metrics,
        "reasons": reasons,
        "frames": counts,
        "frame_size": [int(size[1]), int(size[0])] if size else None,
        "settings": {
            "face_crop": f"reference FaceMesh inference box, {margin_px} px margin, "
            f"resized to {CROP_SIZE}x{CROP_SIZE}",
            "skip_start": int(skip_start),
            "vshift": int(vshift),
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if per_frame:
        out["per_frame"] = per
    return out


def evaluate_video(
    generated_path: str | Path,
    reference_path: str | Path,
    *,
    audio: str | Path | np.ndarray | None = None,
    skip_start: int = 2,
    max_frames: int | None = None,
    fps: float = FPS,
    landmarker=None,
    networks: Networks | None = None,
    vshift: int = SYNCNET_VSHIFT,
    per_frame: bool = False,
) -> dict:
    """:func:`evaluate_frames` on two video files, both read at ``fps`` and aligned by frame index
    (generated frame p against reference frame p, as many pairs as the shorter video has).

    ``skip_start`` (default 2): the first output frames of an IP_LAP dub repeat frame 2's face
    (IPLAP_FACTS.md section 8.7), so pairs 0 and 1 are left out of the per-frame metrics.
    ``audio`` for SyncNet: a file or 16 kHz mono samples; by default the generated video's own
    audio track (no SyncNet, with a reason, when it has none).
    """
    from engine.core.audio import AudioError, load_audio
    from engine.core.video import probe_video

    gen_info, ref_info = probe_video(generated_path), probe_video(reference_path)
    if (gen_info.width, gen_info.height) != (ref_info.width, ref_info.height):
        raise EvaluationError(
            f"{generated_path} is {gen_info.width}x{gen_info.height} but {reference_path} is "
            f"{ref_info.width}x{ref_info.height}; frames must be aligned pixel for pixel"
        )
    wav = None
    if isinstance(audio, np.ndarray):
        wav = audio
    elif audio is not None:
        wav = load_audio(audio)
    elif gen_info.has_audio and networks is not None and networks.syncnet_lip is not None:
        try:
            wav = load_audio(generated_path)
        except AudioError:
            wav = None
    out = evaluate_frames(
        _Reiterable(generated_path, fps, max_frames),
        _Reiterable(reference_path, fps, max_frames),
        landmarker=landmarker,
        networks=networks,
        audio=wav,
        skip_start=skip_start,
        strict=False,
        vshift=vshift,
        per_frame=per_frame,
    )
    out["inputs"] = {
        "generated": str(generated_path),
        "reference": str(reference_path),
        "audio": "array" if isinstance(audio, np.ndarray) else str(audio or generated_path),
        "fps": fps,
    }
    return out

"""Reconstruction evaluation of checkpoints (:func:`evaluate_checkpoints`): the held-out part of a
video is dubbed with its own audio, the avatar being that part itself, and the output is compared
with the original frames by :func:`engine.evaluation.compare.evaluate_frames`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from engine.evaluation.common import FPS, SAMPLES_PER_FRAME, EvaluationError
from engine.evaluation.compare import evaluate_frames
from engine.evaluation.networks import Networks
from engine.evaluation.syncnet import SYNCNET_VSHIFT


def _frame_range(
    held_out: tuple[float, float] | None, held_out_frames: tuple[int, int] | None, fps: float
) -> tuple[int, int | None]:
    if held_out is not None and held_out_frames is not None:
        raise EvaluationError("give held_out (seconds) or held_out_frames, not both")
    if held_out is not None:
        s, e = (float(v) for v in held_out)
        a, b = int(round(s * fps)), int(round(e * fps))
    elif held_out_frames is not None:
        a, b = (int(v) for v in held_out_frames)
    else:
        return 0, None
    if a < 0 or b <= a:
        raise EvaluationError(f"empty or negative held-out range: frames {a}..{b}")
    return a, b


def _sub_avatar(avatar, a: int, b: int):
    """The prepared avatar restricted to template frames ``a .. b-1``, with its references chosen
    again among those frames (the authors' rule, IPLAP_FACTS.md section 8.3)."""
    from engine.core.schedule import reference_indices
    from engine.core.sketch import draw_sketches

    sl = slice(a, b)
    lip = avatar.lip[sl]
    boxes = avatar.boxes[sl]
    cfg = avatar.config
    n = b - a
    lm_idx = reference_indices(lip, cfg.n_landmark_refs)
    ref_idx = reference_indices(lip, cfg.resolved_refs(n))
    hw = np.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], axis=1)
    full = np.concatenate([avatar.pose[sl], avatar.content[sl]], axis=2)
    offsets = avatar.mask_offsets[a : b + 1]
    report = dataclasses.replace(avatar.report, n_frames=n, n_refs=len(ref_idx))
    return dataclasses.replace(
        avatar,
        report=report,
        frames=avatar.frames[sl],
        points=avatar.points[sl],
        detected=avatar.detected[sl],
        boxes=boxes,
        pose=avatar.pose[sl],
        content=avatar.content[sl],
        lip=lip,
        crops=avatar.crops[sl],
        landmark_ref_idx=lm_idx,
        ref_idx=ref_idx,
        ref_imgs=avatar.crops[sl][ref_idx],
        ref_sketches=draw_sketches(full[ref_idx], hw[ref_idx]),
        mask_flat=avatar.mask_flat[offsets[0] : offsets[-1]],
        mask_offsets=offsets - offsets[0],
    )


def evaluate_checkpoints(
    video: str | Path,
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    *,
    held_out: tuple[float, float] | None = None,
    held_out_frames: tuple[int, int] | None = None,
    random_weights: bool = False,
    n_refs: int | str = 25,
    dub_config=None,
    networks: Networks | None = None,
    cache_dir: str | Path | None = None,
    save_video: str | Path | None = None,
    landmarker=None,
    vshift: int = SYNCNET_VSHIFT,
    per_frame: bool = False,
) -> dict:
    """Reconstruction evaluation: dub the held-out part of ``video`` with its own audio, the avatar
    being that part of the video itself, and compare the output with the original frames.

    ``held_out``: ``(start_s, end_s)`` in seconds, or ``held_out_frames``: ``(first, end)`` frame
    indices at 25 fps (end exclusive); neither = the whole video. The video is prepared as an avatar
    (FaceMesh, cached like ``mouthpiece prepare``; ``cache_dir``), restricted to the held-out frames
    with ``n_refs`` renderer references chosen among them; its audio (16 kHz) from
    ``first * 640`` to ``end * 640`` samples drives the dub (:func:`engine.offline.dub.dub_frames`, no
    video encoding in between). Output frame p (p >= 2) shows template frame p, so it is compared
    with original frame ``first + p``; frames 0 and 1 repeat frame 2's face and are skipped.
    ``save_video``: also write the dub as an MP4 (with the held-out audio) to look at.
    """
    from engine.core.audio import load_audio, mel_chunks, melspectrogram
    from engine.core.avatar import AvatarConfig, prepare_avatar
    from engine.offline.dub import dub_frames
    from engine.synth.neural import DubConfig, NeuralSynthesizer, load_models

    fps = FPS
    a, b = _frame_range(held_out, held_out_frames, fps)
    dub_config = dub_config or DubConfig()
    t0 = time.perf_counter()
    avatar_full = prepare_avatar(video, AvatarConfig(n_refs=n_refs, max_frames=b), cache_dir, landmarker)
    total = avatar_full.n_frames
    b = total if b is None else min(b, total)
    if b - a < 6:
        raise EvaluationError(
            f"{video}: the held-out part has {max(0, b - a)} frame(s) (frames {a}..{b} of {total}); "
            f"at least 6 are needed"
        )
    avatar = _sub_avatar(avatar_full, a, b)
    wav = load_audio(video)[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME]
    chunks = mel_chunks(melspectrogram(wav), fps=fps)
    prepare_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lm, net = load_models(landmark_checkpoint, renderer_checkpoint, dub_config.device, random_weights)
    synth = NeuralSynthesizer.from_models(lm, net, dub_config)
    results = list(dub_frames(synth, avatar, chunks, dub_config.batch))
    dub_s = time.perf_counter() - t0
    for r in results:
        if r.index >= 2 and r.template != r.index:  # pragma: no cover - schedule fact
            raise EvaluationError(f"output frame {r.index} shows template frame {r.template}")
    generated = [r.image for r in results]
    reference = [np.asarray(avatar.frames[r.template]) for r in results]

    if save_video is not None:
        from engine.core.video import Mp4Writer

        h, w = avatar.frame_size
        Path(save_video).parent.mkdir(parents=True, exist_ok=True)
        with Mp4Writer(save_video, w, h, fps=fps, audio=wav, audio_rate=16000) as writer:
            for f in generated:
                writer.write(f)

    out = evaluate_frames(
        generated,
        reference,
        landmarker=landmarker,
        networks=networks,
        audio=wav,
        skip_start=2,
        vshift=vshift,
        per_frame=per_frame,
    )
    out["held_out"] = {
        "video": str(video),
        "frames": [a, b],
        "seconds": [a / fps, b / fps],
        "template_frames": b - a,
        "output_frames": len(results),
        "n_refs": int(len(avatar.ref_idx)),
        "note": "frame pair p compares output frame p with original frame first + p",
    }
    out["checkpoints"] = {
        "landmark": None if random_weights else str(getattr(lm, "checkpoint_path", landmark_checkpoint)),
        "renderer": None if random_weights else str(getattr(net, "checkpoint_path", renderer_checkpoint)),
        "random_weights": bool(random_weights),
        "backend": dub_config.backend,
        "dtype": dub_config.dtype,
    }
    out["seconds"] = {"prepare": round(prepare_s, 3), "dub": round(dub_s, 3), "metrics": out["seconds"]}
    if save_video is not None:
        out["saved_video"] = str(save_video)
    return out

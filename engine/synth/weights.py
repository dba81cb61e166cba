"""Finding and loading the two IP_LAP networks: ``checkpoints/`` discovery, explicit paths, stand-ins."""

from __future__ import annotations

import sys
from pathlib import Path

import models

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_NAMES",
    "RANDOM_WEIGHTS_WARNING",
    "DubError",
    "find_checkpoint",
    "load_models",
    "missing_checkpoint",
]

CHECKPOINT_DIR = Path("checkpoints")
#: File names looked for in the checkpoint folder, in order.
CHECKPOINT_NAMES = {
    models.LANDMARK: (
        "landmarkgenerator_checkpoint.pth",
        "landmarkgenerator.safetensors",
        "landmark_generator.safetensors",
    ),
    models.RENDERER: ("renderer_checkpoint.pth", "renderer.safetensors"),
}

RANDOM_WEIGHTS_WARNING = """
**********************************************************************
*  RANDOM WEIGHTS: no trained checkpoints are used. The stand-in      *
*  weights make the whole pipeline run, but the faces are noise and   *
*  the lips do not follow the audio. For tests and demos only.        *
**********************************************************************
"""


class DubError(ValueError):
    """Inputs that cannot be dubbed (too-short audio, missing weights, ...), clearly explained."""


def missing_checkpoint(kind: str, directory: str | Path = CHECKPOINT_DIR) -> str:
    """What is missing, in one sentence: no ``kind`` checkpoint in ``directory`` (the names looked for)."""
    pretty = "landmark transformer" if kind == models.LANDMARK else "renderer"
    names = ", ".join(CHECKPOINT_NAMES[kind])
    return f"no {pretty} checkpoint found in {Path(directory)}/ (looked for {names})"


def find_checkpoint(kind: str, directory: str | Path = CHECKPOINT_DIR) -> Path:
    """The ``kind`` checkpoint in ``directory`` (:data:`CHECKPOINT_NAMES`, in order); :class:`DubError`
    saying what ``mouthpiece dub`` can do instead when there is none."""
    directory = Path(directory)
    for name in CHECKPOINT_NAMES[kind]:
        if (directory / name).is_file():
            return directory / name
    option = "--landmark-checkpoint" if kind == models.LANDMARK else "--renderer-checkpoint"
    raise DubError(
        f"{missing_checkpoint(kind, directory)}: put the authors' file there (README, 'Weights') or give "
        f"it with {option} PATH; to try the pipeline without trained weights add --random-weights "
        f"(noise faces), or use --renderer preview (no weights needed)"
    )


def load_models(
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    device: str = "cpu",
    random_weights: bool = False,
    seed: int = 1,
) -> tuple[models.LandmarkGenerator, models.Renderer]:
    """The two networks from checkpoints (found in ``checkpoints/`` unless given), or stand-in weights."""
    if random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return models.standin_model(models.LANDMARK, seed).to(device), models.standin_model(
            models.RENDERER, seed
        ).to(device)
    lm_path = Path(landmark_checkpoint) if landmark_checkpoint else find_checkpoint(models.LANDMARK)
    r_path = Path(renderer_checkpoint) if renderer_checkpoint else find_checkpoint(models.RENDERER)
    return models.load_landmark_generator(lm_path, device), models.load_renderer(r_path, device)

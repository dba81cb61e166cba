"""Training of the two IP_LAP networks. Contract: a dataset folder made by :mod:`.preprocess`
(``mouthpiece train preprocess``) or :func:`write_synthetic_dataset`, laid out as :mod:`.dataset`
says (docs/training_data.md), is read by the torch datasets of :mod:`.data`; the stages
:mod:`.landmark_stage` and :mod:`.renderer_stage` (``mouthpiece train landmark|renderer``) train on
it with the shared :class:`Trainer` into a run folder of official-layout checkpoints, and
:mod:`.finetune` (``mouthpiece train presenter``) chains preprocessing, both stages and the
evaluation for one presenter's video. Each command module offers ``add_arguments(parser)`` and
``run_from_args(args)`` for ``engine.cli``.
"""

from .config import LandmarkTrainConfig, RendererTrainConfig, TrainConfig, TrainingError
from .data import LandmarkWindows, RendererSamples, write_synthetic_dataset
from .dataset import DataError, read_manifest, split_clips
from .losses import (
    RendererLossWeights,
    discriminator_loss,
    feature_matching_loss,
    landmark_losses,
    lsgan_loss,
    perceptual_terms,
    renderer_generator_loss,
    velocity_loss,
)
from .trainer import Trainer, read_log

__all__ = [
    "DataError",
    "LandmarkTrainConfig",
    "LandmarkWindows",
    "RendererLossWeights",
    "RendererSamples",
    "RendererTrainConfig",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "discriminator_loss",
    "feature_matching_loss",
    "landmark_losses",
    "lsgan_loss",
    "perceptual_terms",
    "read_log",
    "read_manifest",
    "renderer_generator_loss",
    "split_clips",
    "velocity_loss",
    "write_synthetic_dataset",
]

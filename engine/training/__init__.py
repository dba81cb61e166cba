"""Training of the two IP_LAP networks (GitHub issue 8): datasets over the preprocessed data,
the losses, and the two stages (``landmark_stage``, ``renderer_stage``) sharing one trainer.

Each stage module offers ``add_arguments(parser)``, ``run_from_args(args)`` and ``main(argv)``
(``python -m engine.training.landmark_stage DATA OUT ...``).
"""

from .data import (
    DataError,
    LandmarkWindows,
    RendererSamples,
    read_manifest,
    split_clips,
    write_synthetic_dataset,
)
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
from .trainer import (
    LandmarkTrainConfig,
    RendererTrainConfig,
    TrainConfig,
    Trainer,
    TrainingError,
    read_log,
)

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

"""IP_LAP networks and checkpoint handling: pure modules, configs, strict loading."""

from .checkpoint import (
    KINDS,
    LANDMARK,
    RENDERER,
    Checkpoint,
    CheckpointError,
    check_state_dict,
    convert,
    detect_kind,
    load_landmark_generator,
    load_perceptual_loss,
    load_renderer,
    read_checkpoint,
    schema,
    sha256,
)
from .discriminator import DiscriminatorConfig, MultiscaleDiscriminator
from .landmark_generator import LandmarkGenerator, LandmarkGeneratorConfig
from .perceptual import PerceptualLoss
from .renderer import Renderer
from .standin import OFFICIAL_NAMES, standin_model, standin_state_dict, write_standin

__all__ = [
    "KINDS",
    "LANDMARK",
    "RENDERER",
    "OFFICIAL_NAMES",
    "Checkpoint",
    "CheckpointError",
    "DiscriminatorConfig",
    "LandmarkGenerator",
    "LandmarkGeneratorConfig",
    "MultiscaleDiscriminator",
    "PerceptualLoss",
    "Renderer",
    "check_state_dict",
    "convert",
    "detect_kind",
    "load_landmark_generator",
    "load_perceptual_loss",
    "load_renderer",
    "read_checkpoint",
    "schema",
    "sha256",
    "standin_model",
    "standin_state_dict",
    "write_standin",
]

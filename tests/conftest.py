"""Shared fixtures: golden files (in the repo), stand-in weights (made once per run), shared media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / name) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"shared media not present at {MEDIA}")
    return MEDIA


@pytest.fixture(scope="session")
def standin_paths(tmp_path_factory) -> dict[str, Path]:
    """The official-format stand-in checkpoints (seed 1) the golden files were made with."""
    import models

    out = tmp_path_factory.mktemp("standin")
    return {
        "landmark_generator": models.write_standin("landmark_generator", out / "landmark_seed1.pth"),
        "renderer": models.write_standin("renderer", out / "renderer_seed1.pth"),
    }


@pytest.fixture(scope="session")
def landmark_model(standin_paths):
    import models

    return models.load_landmark_generator(standin_paths["landmark_generator"])


@pytest.fixture(scope="session")
def renderer_model(standin_paths):
    import models

    return models.load_renderer(standin_paths["renderer"])

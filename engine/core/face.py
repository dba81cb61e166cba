"""Face landmarks per frame: MediaPipe FaceMesh, the crop box and the normalised landmark sets.

Everything follows IPLAP_FACTS.md sections 2 and 4 (the authors' inference code):

- FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
  min_detection_confidence=0.5) on the RGB version of a BGR frame -> 478 normalised points.
- Crop box from the 131 ORDER points plus a 25-pixel margin, truncated to ints.
- Pose (2, 74) and content (2, 57) landmarks normalised to that integer box, in ORDER order.
- Lip openness: distance between MediaPipe points 0 and 17 in normalised frame coordinates.

Arithmetic is done in float64 on the float32 MediaPipe values, as the authors' Python code did
(protobuf floats are float32 values read as Python floats); landmarks are stored as float32.

The helpers are pure numpy (testable without MediaPipe); :class:`FaceLandmarker` imports
MediaPipe lazily, so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from engine.core.landmark_sets import ALL_MP, CONTENT_MP, LIP_OPENNESS_PAIR, N_ALL, N_CONTENT, N_POSE, POSE_MP

__all__ = [
    "Box",
    "FaceMeshConfig",
    "FaceRecord",
    "FaceLandmarker",
    "crop_box",
    "normalise",
    "split_pose_content",
    "lip_openness",
    "crop_face",
    "record_from_points",
    "records_to_arrays",
    "records_from_arrays",
]

#: A crop box ``(y1, y2, x1, x2)`` in pixels; the crop is ``frame[y1:y2, x1:x2]``.
Box = tuple[int, int, int, int]

#: Number of points FaceMesh returns with ``refine_landmarks=True`` (468 without).
N_MESH_REFINED = 478
N_MESH = 468

_MEDIAPIPE_REQUIRED = (
    "mediapipe 0.10.21 (the last release with the legacy FaceMesh solution, "
    "mediapipe.solutions.face_mesh) is required: pip install 'mediapipe==0.10.21'"
)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _as_points(points: np.ndarray, what: str = "points") -> np.ndarray:
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] == 0:
        raise ValueError(f"{what} must have shape (n, 2) or (n, 3), got {arr.shape}")
    return arr


def _order_points(points: np.ndarray) -> np.ndarray:
    """The 131 ORDER points: given directly, or selected from a raw 468/478-point mesh."""
    arr = _as_points(points)
    if arr.shape[0] in (N_MESH, N_MESH_REFINED):
        return arr[ALL_MP]
    if arr.shape[0] != N_ALL:
        raise ValueError(
            f"expected the {N_ALL} ORDER points or a raw {N_MESH}/{N_MESH_REFINED}-point mesh, "
            f"got {arr.shape[0]} points"
        )
    return arr


def crop_box(points_norm: np.ndarray, h: int, w: int, margin_px: float = 25) -> Box:
    """Face crop box ``(y1, y2, x1, x2)`` (IPLAP_FACTS.md section 4).

    ``points_norm``: the 131 ORDER points (``(131, 2|3)``, MediaPipe's normalised frame
    coordinates), or a raw (468|478, 2|3) mesh from which they are taken. ``h, w``: frame size.
    min/max of x and y, widened by ``margin_px`` pixels and clamped to [0, 1], then ``int(v*size)``.
    The box can be degenerate (zero width or height) for faces at the frame border.
    """
    pts = _order_points(points_norm)[:, :2].astype(np.float64)
    if not np.all(np.isfinite(pts)):
        raise ValueError("points contain NaN or inf")
    h, w = int(h), int(w)
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got (h, w) = ({h}, {w})")
    x_min, y_min = (float(v) for v in pts.min(axis=0))
    x_max, y_max = (float(v) for v in pts.max(axis=0))
    x_min = max(x_min - margin_px / w, 0)
    x_max = min(x_max + margin_px / w, 1)
    y_min = max(y_min - margin_px / h, 0)
    y_max = min(y_max + margin_px / h, 1)
    return int(y_min * h), int(y_max * h), int(x_min * w), int(x_max * w)


def _check_box(box: Sequence[int]) -> Box:
    if len(box) != 4:
        raise ValueError(f"box must be (y1, y2, x1, x2), got {box!r}")
    y1, y2, x1, x2 = (int(v) for v in box)
    if y2 <= y1 or x2 <= x1:
        raise ValueError(f"degenerate box (y1, y2, x1, x2) = {(y1, y2, x1, x2)}")
    return y1, y2, x1, x2


def normalise(points_xy_norm: np.ndarray, box: Sequence[int], h: int, w: int) -> np.ndarray:
    """Landmarks relative to the integer crop box: ``((w*x - x1)/(x2 - x1), (h*y - y1)/(y2 - y1))``.

    ``points_xy_norm``: (n, 2|3) points in MediaPipe's normalised frame coordinates.
    Returns (2, n) float32 (row 0 x, row 1 y). Points outside the box fall outside [0, 1].
    """
    pts = _as_points(points_xy_norm)[:, :2].astype(np.float64)
    y1, y2, x1, x2 = _check_box(box)
    x = (w * pts[:, 0] - x1) / (x2 - x1)
    y = (h * pts[:, 1] - y1) / (y2 - y1)
    return np.stack([x, y]).astype(np.float32)


def split_pose_content(
    points: np.ndarray, box: Sequence[int], h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pose (2, 74) and content (2, 57) landmarks from a raw (468|478, 2|3) mesh.

    Columns follow ``landmark_sets.POSE_MP`` / ``CONTENT_MP`` (sorted by position in ORDER):
    content is 17 jaw points then 40 lip points.
    """
    pts = _as_points(points)
    if pts.shape[0] not in (N_MESH, N_MESH_REFINED):
        raise ValueError(f"expected a raw {N_MESH}/{N_MESH_REFINED}-point mesh, got {pts.shape[0]} points")
    return normalise(pts[POSE_MP], box, h, w), normalise(pts[CONTENT_MP], box, h, w)


def lip_openness(points478: np.ndarray) -> float:
    """Distance between MediaPipe points 0 and 17 (lip midpoints), normalised frame x, y only."""
    pts = _as_points(points478)
    a, b = LIP_OPENNESS_PAIR
    if pts.shape[0] <= max(a, b):
        raise ValueError(f"need a raw mesh with at least {max(a, b) + 1} points, got {pts.shape[0]}")
    dx = float(pts[a, 0]) - float(pts[b, 0])
    dy = float(pts[a, 1]) - float(pts[b, 1])
    return float(np.linalg.norm((dx, dy)))


def crop_face(frame: np.ndarray, box: Sequence[int], size: int = 128) -> np.ndarray:
    """``frame[y1:y2, x1:x2]`` resized to ``size`` x ``size`` (bilinear, cv2 default)."""
    y1, y2, x1, x2 = _check_box(box)
    crop = frame[y1:y2, x1:x2]
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ValueError(f"box {(y1, y2, x1, x2)} lies outside the frame of shape {frame.shape}")
    return cv2.resize(crop, (size, size))


# --------------------------------------------------------------------------------------------
# Per-frame record
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class FaceRecord:
    """What FaceMesh found in one frame (fields are None when ``found`` is False)."""

    index: int
    found: bool
    points: np.ndarray | None = None  # (478, 3) float32, raw normalised MediaPipe points
    box: Box | None = None  # (y1, y2, x1, x2)
    pose: np.ndarray | None = None  # (2, 74) float32
    content: np.ndarray | None = None  # (2, 57) float32
    lip_openness: float | None = None
    reason: str = ""  # why no face was found

    @classmethod
    def no_face(cls, index: int, reason: str) -> FaceRecord:
        return cls(index=int(index), found=False, reason=str(reason))

    @property
    def full(self) -> np.ndarray | None:
        """``[pose | content]`` (2, 131) float32, the array sketches are drawn from."""
        if self.pose is None or self.content is None:
            return None
        return np.concatenate([self.pose, self.content], axis=1)

    @property
    def crop_hw(self) -> tuple[int, int] | None:
        """Crop size ``(h, w) = (y2 - y1, x2 - x1)``."""
        if self.box is None:
            return None
        y1, y2, x1, x2 = self.box
        return y2 - y1, x2 - x1


def records_to_arrays(records: Sequence[FaceRecord]) -> dict[str, np.ndarray]:
    """Stack records into plain arrays (for ``np.savez``; no pickling needed).

    Keys: ``index`` (N,) int64, ``found`` (N,) bool, ``points`` (N, P, 3) float32, ``box`` (N, 4)
    int64, ``pose`` (N, 2, 74) float32, ``content`` (N, 2, 57) float32, ``lip_openness`` (N,)
    float64, ``reason`` (N,) unicode. Rows without a face hold NaN (box: -1).
    """
    n = len(records)
    n_pts = next((r.points.shape[0] for r in records if r.found and r.points is not None), N_MESH_REFINED)
    out = {
        "index": np.array([r.index for r in records], dtype=np.int64).reshape(n),
        "found": np.array([r.found for r in records], dtype=bool).reshape(n),
        "points": np.full((n, n_pts, 3), np.nan, dtype=np.float32),
        "box": np.full((n, 4), -1, dtype=np.int64),
        "pose": np.full((n, 2, N_POSE), np.nan, dtype=np.float32),
        "content": np.full((n, 2, N_CONTENT), np.nan, dtype=np.float32),
        "lip_openness": np.full(n, np.nan, dtype=np.float64),
        "reason": np.array([r.reason for r in records], dtype=np.str_).reshape(n),
    }
    for i, r in enumerate(records):
        if r.points is not None:
            if r.points.shape[0] != n_pts:
                raise ValueError(f"records mix {n_pts}- and {r.points.shape[0]}-point meshes")
            out["points"][i] = r.points
        if r.box is not None:
            out["box"][i] = r.box
        if r.pose is not None:
            out["pose"][i] = r.pose
        if r.content is not None:
            out["content"][i] = r.content
        if r.lip_openness is not None:
            out["lip_openness"][i] = r.lip_openness
    return out


def records_from_arrays(arrays: dict[str, Any] | Any) -> list[FaceRecord]:
    """Inverse of :func:`records_to_arrays` (accepts a dict or an opened ``np.load`` file)."""
    found = np.asarray(arrays["found"], dtype=bool)
    index = np.asarray(arrays["index"])
    points = np.asarray(arrays["points"], dtype=np.float32)
    box = np.asarray(arrays["box"])
    pose = np.asarray(arrays["pose"], dtype=np.float32)
    content = np.asarray(arrays["content"], dtype=np.float32)
    lips = np.asarray(arrays["lip_openness"], dtype=np.float64)
    reason = np.asarray(arrays["reason"])
    records = []
    for i in range(found.shape[0]):
        if not found[i]:
            records.append(FaceRecord.no_face(int(index[i]), str(reason[i])))
            continue
        records.append(
            FaceRecord(
                index=int(index[i]),
                found=True,
                points=points[i].copy(),
                box=tuple(int(v) for v in box[i]),  # type: ignore[arg-type]
                pose=pose[i].copy(),
                content=content[i].copy(),
                lip_openness=float(lips[i]),
                reason=str(reason[i]),
            )
        )
    return records


# --------------------------------------------------------------------------------------------
# MediaPipe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaceMeshConfig:
    """FaceMesh parameters (the authors' values are the defaults) and the crop margin."""

    static_image_mode: bool = True
    max_num_faces: int = 1
    refine_landmarks: bool = True
    min_detection_confidence: float = 0.5
    margin_px: int = 25


def _face_mesh_module() -> Any:
    """``mediapipe.solutions.face_mesh``, imported on first use."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise RuntimeError(_MEDIAPIPE_REQUIRED) from exc
    face_mesh = getattr(getattr(mp, "solutions", None), "face_mesh", None)
    if face_mesh is None or not hasattr(face_mesh, "FaceMesh"):
        raise RuntimeError(_MEDIAPIPE_REQUIRED + f" (found mediapipe {getattr(mp, '__version__', '?')})")
    return face_mesh


def _check_frame(frame: Any) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array (H, W, 3) uint8 BGR, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must have shape (H, W, 3) (BGR), got {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    return frame


class FaceLandmarker:
    """MediaPipe FaceMesh on BGR frames -> :class:`FaceRecord` (one face per frame).

    Use as a context manager (or call :meth:`close`) to release MediaPipe's graph.
    """

    def __init__(self, config: FaceMeshConfig | None = None) -> None:
        self.config = config if config is not None else FaceMeshConfig()
        face_mesh = _face_mesh_module()
        c = self.config
        self._mesh: Any = face_mesh.FaceMesh(
            static_image_mode=c.static_image_mode,
            max_num_faces=c.max_num_faces,
            refine_landmarks=c.refine_landmarks,
            min_detection_confidence=c.min_detection_confidence,
        )

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    @property
    def closed(self) -> bool:
        return self._mesh is None

    def detect(self, frame_bgr: np.ndarray, index: int = 0) -> FaceRecord:
        """Landmarks of the (first) face in one BGR uint8 frame; a no-face record if none."""
        frame = _check_frame(frame_bgr)
        if self._mesh is None:
            raise RuntimeError("FaceLandmarker is closed")
        h, w = frame.shape[:2]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        result = self._mesh.process(rgb)
        faces = result.multi_face_landmarks
        if not faces:
            return FaceRecord.no_face(index, "no face detected")
        points = np.array([(p.x, p.y, p.z) for p in faces[0].landmark], dtype=np.float32)
        return self.record_from_points(points, h, w, index)

    def record_from_points(self, points: np.ndarray, h: int, w: int, index: int = 0) -> FaceRecord:
        """Build the record (box, landmarks, lip openness) from raw normalised mesh points."""
        return record_from_points(points, h, w, index, self.config.margin_px)

    def detect_many(self, frames: Iterable[np.ndarray], start_index: int = 0) -> list[FaceRecord]:
        """:meth:`detect` on each frame; indices count up from ``start_index``."""
        return [self.detect(f, start_index + i) for i, f in enumerate(frames)]


def record_from_points(
    points: np.ndarray, h: int, w: int, index: int = 0, margin_px: float = 25
) -> FaceRecord:
    """A :class:`FaceRecord` from a raw (468|478, 3) normalised mesh of a frame of size (h, w).

    A box of zero width or height (a face at the frame border) gives a no-face record.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] not in (N_MESH, N_MESH_REFINED) or points.shape[1] < 2:
        raise ValueError(f"expected a raw {N_MESH}/{N_MESH_REFINED}-point mesh, got shape {points.shape}")
    if not np.all(np.isfinite(points[:, :2])):
        return FaceRecord.no_face(index, "landmarks are not finite")
    box = crop_box(points, h, w, margin_px)
    y1, y2, x1, x2 = box
    if y2 <= y1 or x2 <= x1:
        return FaceRecord.no_face(index, f"degenerate face box (y1, y2, x1, x2) = {box}")
    pose, content = split_pose_content(points, box, h, w)
    lips = lip_openness(points)
    if not math.isfinite(lips):  # pragma: no cover - points are finite here
        return FaceRecord.no_face(index, "lip openness is not finite")
    return FaceRecord(
        index=int(index),
        found=True,
        points=points,
        box=box,
        pose=pose,
        content=content,
        lip_openness=lips,
    )

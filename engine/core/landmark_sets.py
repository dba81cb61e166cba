"""MediaPipe FaceMesh index and edge sets used by IP_LAP (IPLAP_FACTS.md section 2), as data.

Everything here is derived from two tables: ``ORDER`` (the 131 MediaPipe indices whose position
fixes every ordering) and ``EDGES`` (the drawing edges, per face part). The derived arrays are
plain numpy index arrays so that callers can gather with them directly.
"""

from __future__ import annotations

import numpy as np

# fmt: off
ORDER: tuple[int, ...] = (
    162, 127, 234, 93,
    132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
    323, 454, 356, 389,
    70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
    336, 296, 334, 293, 300, 276, 283, 282, 295, 285,
    168, 6, 197, 195, 5,
    48, 115, 220, 45, 4, 275, 440, 344, 278,
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
    362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382,
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)

EDGES: dict[str, tuple[tuple[int, int], ...]] = {
    "lips": (
        (61, 146), (146, 91), (91, 181), (181, 84), (84, 17), (17, 314), (314, 405), (405, 321),
        (321, 375), (375, 291), (61, 185), (185, 40), (40, 39), (39, 37), (37, 0), (0, 267),
        (267, 269), (269, 270), (270, 409), (409, 291), (78, 95), (95, 88), (88, 178), (178, 87),
        (87, 14), (14, 317), (317, 402), (402, 318), (318, 324), (324, 308), (78, 191), (191, 80),
        (80, 81), (81, 82), (82, 13), (13, 312), (312, 311), (311, 310), (310, 415), (415, 308),
    ),
    "left_eye": (
        (263, 249), (249, 390), (390, 373), (373, 374), (374, 380), (380, 381), (381, 382),
        (382, 362), (263, 466), (466, 388), (388, 387), (387, 386), (386, 385), (385, 384),
        (384, 398), (398, 362),
    ),
    "left_eyebrow": (
        (276, 283), (283, 282), (282, 295), (295, 285), (300, 293), (293, 334), (334, 296), (296, 336),
    ),
    "right_eye": (
        (33, 7), (7, 163), (163, 144), (144, 145), (145, 153), (153, 154), (154, 155), (155, 133),
        (33, 246), (246, 161), (161, 160), (160, 159), (159, 158), (158, 157), (157, 173), (173, 133),
    ),
    "right_eyebrow": (
        (46, 53), (53, 52), (52, 65), (65, 55), (70, 63), (63, 105), (105, 66), (66, 107),
    ),
    "face_oval": (
        (389, 356), (356, 454), (454, 323), (323, 361), (361, 288), (288, 397), (397, 365),
        (365, 379), (379, 378), (378, 400), (400, 377), (377, 152), (152, 148), (148, 176),
        (176, 149), (149, 150), (150, 136), (136, 172), (172, 58), (58, 132), (132, 93), (93, 234),
        (234, 127), (127, 162),
    ),
    "nose": (
        (168, 6), (6, 197), (197, 195), (195, 5), (5, 4), (4, 45), (45, 220), (220, 115), (115, 48),
        (4, 275), (275, 440), (440, 344), (344, 278),
    ),
}
# fmt: on

#: Face-oval points that belong to the pose set (the upper contour, near the temples).
POSE_OVAL_POINTS: frozenset[int] = frozenset({162, 127, 234, 93, 389, 356, 454, 323})

N_ALL = 131
N_POSE = 74
N_CONTENT = 57
N_JAW = 17
N_LIP = 40

_POSITION = {mp: i for i, mp in enumerate(ORDER)}


def _endpoints(parts: tuple[str, ...]) -> set[int]:
    return {p for part in parts for edge in EDGES[part] for p in edge}


def _sorted_by_order(points: set[int]) -> np.ndarray:
    return np.array(sorted(points, key=_POSITION.__getitem__), dtype=np.int64)


ALL_EDGES: tuple[tuple[int, int], ...] = tuple(e for part in EDGES for e in EDGES[part])

#: MediaPipe indices of the pose set (74), content set (57), sorted by their position in ORDER.
POSE_MP: np.ndarray = _sorted_by_order(
    _endpoints(("nose", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow")) | POSE_OVAL_POINTS
)
CONTENT_MP: np.ndarray = _sorted_by_order(set(ORDER) - set(POSE_MP.tolist()))
ALL_MP: np.ndarray = np.array(ORDER, dtype=np.int64)

#: MediaPipe indices of the 131 columns of a "full" array ``[pose(74) | content(57)]``.
FULL_MP: np.ndarray = np.concatenate([POSE_MP, CONTENT_MP])
#: Column c of a full array is ORDER[FULL_TO_ORDER[c]].
FULL_TO_ORDER: np.ndarray = np.array([_POSITION[m] for m in FULL_MP.tolist()], dtype=np.int64)
#: Column of each MediaPipe index inside a full array.
FULL_COLUMN: dict[int, int] = {int(m): c for c, m in enumerate(FULL_MP.tolist())}

#: Drawing edges as pairs of full-array columns, in EDGES order.
FULL_EDGES: np.ndarray = np.array([(FULL_COLUMN[a], FULL_COLUMN[b]) for a, b in ALL_EDGES], dtype=np.int64)

#: Content columns: 17 jaw points, then 40 lip points.
JAW_MP: np.ndarray = CONTENT_MP[:N_JAW]
LIP_MP: np.ndarray = CONTENT_MP[N_JAW:]

#: Points used for lip openness (upper and lower lip midpoints).
LIP_OPENNESS_PAIR: tuple[int, int] = (0, 17)

#: The face-oval contour in drawing order (a closed polygon), for masks.
FACE_OVAL_MP: np.ndarray = np.array([a for a, _ in EDGES["face_oval"]] + [EDGES["face_oval"][-1][1]])


def _self_check() -> None:
    assert len(ORDER) == N_ALL and len(set(ORDER)) == N_ALL
    assert set(ORDER) == {p for e in ALL_EDGES for p in e}
    assert len(POSE_MP) == N_POSE and len(CONTENT_MP) == N_CONTENT
    s = list(range(0, 4)) + list(range(21, 91)) + list(range(4, 21)) + list(range(91, 131))
    assert FULL_TO_ORDER.tolist() == s


_self_check()

"""Finding the input videos of a preprocessing run: a folder searched recursively, or an
LRS2-style file list (``<speaker>/<clip>`` lines); each video's clip id is its path relative to
the input folder without the extension, ``/`` replaced by ``__``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .preprocess_config import VIDEO_EXTENSIONS, PreprocessError

__all__ = ["VideoEntry", "clip_id", "list_videos", "read_filelist", "relative_source"]


@dataclass(frozen=True)
class VideoEntry:
    """One input video: ``source`` is its path relative to the input root (posix)."""

    path: Path
    source: str

    @property
    def id(self) -> str:
        return clip_id(self.source)


def clip_id(source: str) -> str:
    """Clip id of a source path relative to the input root: extension dropped, ``/`` -> ``__``."""
    p = Path(source.replace("\\", "/"))
    return str(p.with_suffix("")).replace(os.sep, "/").replace("/", "__")


def relative_source(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (absolute paths, symbolic links not resolved), posix."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return Path(rel).as_posix()


def list_videos(
    root: str | os.PathLike,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    filelist: str | os.PathLike | None = None,
    exclude: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Videos under ``root``, sorted by relative path.

    Without ``filelist``: every file with one of ``extensions`` (case-insensitive) found
    recursively, skipping hidden files and folders (names starting with ".") and the folders in
    ``exclude``. With ``filelist``: the files that :func:`read_filelist` finds (lines without a
    video are left out here; :func:`read_filelist` returns them).
    """
    root = Path(root)
    if not root.is_dir():
        raise PreprocessError(f"input folder not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    if filelist is not None:
        found, _ = read_filelist(root, filelist, exts)
        return found
    skip = {Path(e).resolve() for e in exclude}
    seen: set[Path] = set()  # real folders already walked (symbolic-link loops)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        real = d.resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in skip)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                out.append(d / name)
    return sorted(out, key=lambda p: relative_source(p, root))


def read_filelist(
    root: str | os.PathLike, filelist: str | os.PathLike, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> tuple[list[Path], list[str]]:
    """Resolve an LRS2-style file list against ``root``: returns ``(videos, missing lines)``.

    A line ``<speaker>/<clip>`` (extension optional; text after the first blank ignored, empty
    lines and ``#`` comments skipped) names ``root/<line><ext>`` for the first of ``extensions``
    (lower or upper case) that exists, else ``root/main/<line><ext>`` (LRS2's own lists are
    relative to ``main``).
    Duplicated lines count once. Videos keep the list's order.
    """
    root = Path(root)
    fl = Path(filelist)
    if not fl.is_file():
        raise PreprocessError(f"file list not found: {fl}")
    exts = [e.lower() if e.startswith(".") else "." + e.lower() for e in extensions]
    found: list[Path] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in fl.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0].replace("\\", "/").lstrip("/")
        if name in seen:
            continue
        seen.add(name)
        hit = None
        for base in (root, root / "main"):
            stem = base / name
            if stem.suffix.lower() in exts and stem.is_file():
                hit = stem
            else:
                cands = (Path(f"{stem}{x}") for e in exts for x in (e, e.upper()))
                hit = next((c for c in cands if c.is_file()), None)
            if hit is not None:
                break
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    return found, missing

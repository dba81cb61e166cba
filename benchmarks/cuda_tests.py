"""The tests that need CUDA (they skip on a CPU), run on their own, with their counts recorded.

    .venv/bin/python benchmarks/cuda_tests.py                 # -> benchmarks/results/cuda_tests_<device>.*

A test needs CUDA when it carries a ``skipif`` marker whose reason names CUDA or a GPU (``@pytest.mark.
skipif(not torch.cuda.is_available(), reason="no CUDA device")``) or a ``gpu`` / ``cuda`` marker. They
are found by collecting the test files that mention CUDA and keeping those items (a pytest plugin,
:class:`SelectCuda`), so a new CUDA test is picked up without a list to maintain. On a CPU they are
all reported as skipped; on a GPU as passed or failed. Writes ``<stem>.json`` (counts, each test's
outcome, the pytest exit status) and ``<stem>.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, run_meta, write_results  # noqa: E402

NEEDS_GPU = re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE)


def needs_cuda(item) -> bool:
    for mark in item.iter_markers():
        if mark.name in ("gpu", "cuda"):
            return True
        if mark.name == "skipif" and NEEDS_GPU.search(str(mark.kwargs.get("reason", ""))):
            return True
    return False


class SelectCuda:
    """pytest plugin: keep only the collected items that need CUDA (:func:`needs_cuda`)."""

    def __init__(self) -> None:
        self.selected: list[str] = []

    def pytest_collection_modifyitems(self, config, items) -> None:
        keep = [i for i in items if needs_cuda(i)]
        config.hook.pytest_deselected(items=[i for i in items if not needs_cuda(i)])
        items[:] = keep
        self.selected = [i.nodeid for i in keep]


def candidate_files(tests: Path) -> list[str]:
    """Test files that mention CUDA at all (the others cannot hold a CUDA test)."""
    return sorted(str(p) for p in tests.glob("test_*.py") if "cuda" in p.read_text().lower())


def junit_outcomes(path: Path) -> list[dict]:
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:300]
        out.append(
            {
                "id": f"{case.get('classname', '')}::{case.get('name', '')}",
                "outcome": outcome,
                "seconds": round(float(case.get("time", 0) or 0), 2),
                "message": message,
            }
        )
    return out


def main(argv=None) -> int:
    import pytest
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--stem", help="result file stem (default cuda_tests_<device>)")
    ap.add_argument("--tests", default=str(ROOT / "tests"), help="the tests folder")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    files = candidate_files(Path(args.tests))
    plugin = SelectCuda()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        status = pytest.main(["-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}", *files], [plugin])
        cases = junit_outcomes(xml) if xml.is_file() else []
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    counts["selected"] = len(plugin.selected)
    meta = run_meta("cuda_tests.py", device, cuda_available=torch.cuda.is_available())
    payload = {"meta": meta, "files": [Path(f).name for f in files], "exit_status": int(status), **counts}
    payload["tests"] = cases
    lines = [
        f"CUDA tests — {meta['device']}, torch {meta['torch']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        "",
        f"{counts['selected']} selected: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['error']} errors, {counts['skipped']} skipped (pytest exit status {int(status)})",
        "",
        "| test | outcome | s |",
        "| --- | --- | ---: |",
        *(f"| {c['id']} | {c['outcome']} | {c['seconds']} |" for c in cases),
    ]
    write_results(args.out, args.stem or f"cuda_tests_{device}", payload, lines)
    # 0: every selected test passed (or skipped, on a CPU); 5: pytest found none (recorded, not an error)
    return 0 if int(status) in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())

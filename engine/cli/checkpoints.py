"""``mouthpiece checkpoints verify|convert|standin``: is a file a usable IP_LAP checkpoint (which
network, names and shapes, one CPU forward pass, sha256: :func:`verify_checkpoint`), convert one to
safetensors, write deterministic stand-in weights. Exit status of ``verify``: 0 when every file is
usable, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["VerifyReport", "add_commands", "verify_checkpoint"]


@dataclass
class VerifyReport:
    path: str
    usable: bool = False
    kind: str | None = None
    file_format: str | None = None
    dtype: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    parameters: int | None = None
    perceptual_tensors: int = 0
    forward_seconds: float | None = None
    problems: list[str] = field(default_factory=list)


def _dummy_inputs(kind: str, generator):
    import torch

    if kind == "landmark_generator":
        return (
            torch.rand(1, 5, 1, 80, 16, generator=generator) * 8 - 4,
            torch.rand(1, 5, 2, 74, generator=generator),
            torch.rand(1, 15, 2, 74, generator=generator),
            torch.rand(1, 15, 2, 57, generator=generator),
        )
    return (
        torch.rand(1, 1, 3, 128, 128, generator=generator),
        torch.rand(1, 5, 3, 128, 128, generator=generator),
        torch.rand(1, 2, 3, 128, 128, generator=generator),
        torch.rand(1, 2, 3, 128, 128, generator=generator),
        torch.rand(1, 1, 1, 80, 16, generator=generator) * 8 - 4,
    )


def verify_checkpoint(path: str | Path, run_forward: bool = True) -> VerifyReport:
    """Check one file: which network, names and shapes, one CPU forward pass, sha256."""
    import torch

    import models
    from models.checkpoint import checkpoint_problems

    report = VerifyReport(path=str(path))
    p = Path(path)
    if not p.is_file():
        report.problems.append("file not found" if not p.exists() else "not a regular file")
        return report
    report.size_bytes = p.stat().st_size
    report.sha256 = models.sha256(p)
    try:
        ckpt = models.read_checkpoint(p)
    except (models.CheckpointError, FileNotFoundError) as e:
        report.problems.append(str(e).removeprefix(f"{p}: "))
        return report
    report.kind, report.file_format = ckpt.kind, ckpt.file_format
    report.dtype = str(ckpt.dtype).removeprefix("torch.")
    report.perceptual_tensors = len(ckpt.perceptual)
    model, problems = checkpoint_problems(ckpt)
    report.parameters = sum(t.numel() for t in model.parameters())
    report.problems += problems
    if report.problems:
        return report
    if run_forward:
        model.load_state_dict(ckpt.state_dict)
        model.eval()
        inputs = _dummy_inputs(ckpt.kind, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(*inputs)
        report.forward_seconds = round(time.perf_counter() - t0, 4)
        outs = out if isinstance(out, tuple) else (out,)
        expected = [(5, 2, 57)] if ckpt.kind == "landmark_generator" else [(1, 3, 128, 128), (1, 3, 128, 128)]
        for o, shape in zip(outs, expected, strict=True):
            if tuple(o.shape) != shape:
                report.problems.append(f"forward pass gave shape {tuple(o.shape)}, expected {shape}")
            if not torch.isfinite(o).all():
                report.problems.append("forward pass produced NaN or infinite values")
    report.usable = not report.problems
    return report


def _print_report(r: VerifyReport) -> None:
    status = "OK  " if r.usable else "FAIL"
    print(f"{status} {r.path}")
    if r.kind:
        print(f"     network:    {r.kind}  ({r.file_format}, {r.dtype})")
        print(f"     parameters: {r.parameters:,}")
        if r.kind == "renderer":
            vgg = f"{r.perceptual_tensors} tensors (kept for training)" if r.perceptual_tensors else "absent"
            print(f"     VGG19:      {vgg}")
    if r.sha256:
        print(f"     sha256:     {r.sha256}  ({r.size_bytes:,} bytes)")
    if r.forward_seconds is not None:
        print(f"     forward:    {r.forward_seconds * 1000:.0f} ms on the CPU")
    for problem in r.problems:
        for i, line in enumerate(problem.splitlines()):
            print(f"     {'problem:   ' if i == 0 else '           '} {line.strip()}")


def cmd_checkpoints_verify(args) -> int:
    reports = [verify_checkpoint(p, run_forward=not args.no_forward) for p in args.paths]
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        for r in reports:
            _print_report(r)
    return 0 if all(r.usable for r in reports) else 1


def cmd_checkpoints_convert(args) -> int:
    import models

    out = models.convert(args.src, args.dst, half=args.half, keep_perceptual=not args.drop_perceptual)
    print(f"wrote {out} ({'float16' if args.half else 'float32'}), sha256 {models.sha256(out)}")
    return 0


def cmd_checkpoints_standin(args) -> int:
    import models

    out = Path(args.out)
    for kind, name in (("landmark_generator", "landmark"), ("renderer", "renderer")):
        path = models.write_standin(kind, out / f"standin_{name}_seed{args.seed}.pth", seed=args.seed)
        print(f"wrote {path}")
    print("These are stand-in weights (a deterministic recipe), NOT trained weights: faces look like noise.")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``checkpoints verify|convert|standin`` on the ``mouthpiece`` subcommands ``sub``."""
    ck = sub.add_parser("checkpoints", help="verify, convert and create checkpoints")
    cks = ck.add_subparsers(dest="action", required=True)

    v = cks.add_parser("verify", help="check that files are usable IP_LAP checkpoints")
    v.add_argument("paths", nargs="+", metavar="PATH")
    v.add_argument("--json", action="store_true", help="print a JSON report")
    v.add_argument("--no-forward", action="store_true", help="skip the test forward pass")
    v.set_defaults(func=cmd_checkpoints_verify)

    c = cks.add_parser("convert", help="convert a checkpoint to safetensors (fast loading)")
    c.add_argument("src", metavar="IN")
    c.add_argument("dst", metavar="OUT", help="output path ending in .safetensors")
    c.add_argument("--half", action="store_true", help="store float16 weights")
    c.add_argument("--drop-perceptual", action="store_true", help="leave out the renderer's VGG19 tensors")
    c.set_defaults(func=cmd_checkpoints_convert)

    s = cks.add_parser("standin", help="write deterministic stand-in weights (for tests and demos)")
    s.add_argument(
        "--out", default="checkpoints/standin", help="output folder (default: checkpoints/standin)"
    )
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=cmd_checkpoints_standin)

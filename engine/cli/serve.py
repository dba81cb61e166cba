"""``mouthpiece serve`` (the live server; its options and run are :mod:`streaming.server`'s
``add_arguments`` and ``serve``) and ``mouthpiece bench latency`` (:mod:`streaming.bench`: a WebRTC
client measures a running server, or one started in a child process with ``--local``). Exit status
of ``bench latency``: 0 when every session was measured, 1 otherwise. The bench options' defaults
come from the bench's configs (:class:`~streaming.bench.config.BenchConfig`,
:class:`~streaming.bench.config.SignalConfig`, :class:`~streaming.bench.config.LocalServer`).
"""

from __future__ import annotations

import argparse
import os

from engine.synth import canonical_renderer
from streaming.bench.config import BenchConfig, LocalServer, SignalConfig
from streaming.config import RENDERERS, TOKEN_ENV
from streaming.delay import delay_arg, describe_delay

__all__ = ["add_bench_commands", "add_serve_command", "bench_config_from_args"]


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    """``serve`` on the ``mouthpiece`` subcommands ``sub``."""
    from streaming.app import port_number
    from streaming.server import add_arguments

    sv = sub.add_parser("serve", help="the live server: browser page, WebRTC, WHIP/WHEP, websocket PCM")
    add_arguments(sv)
    for action in sv._actions:  # --port out of range: argparse's one-line error, before anything starts
        if action.dest == "port":
            action.type = port_number
    sv.set_defaults(func=cmd_serve)


def add_bench_commands(sub: argparse._SubParsersAction) -> None:
    """``bench latency`` on the ``mouthpiece`` subcommands ``sub`` (defaults: the bench's configs)."""
    bc, sc, ls = BenchConfig, SignalConfig, LocalServer
    b = sub.add_parser("bench", help="measure a running server as a user sees and hears it")
    bs = b.add_subparsers(dest="action", required=True)
    lat = bs.add_parser(
        "latency",
        help="audio in -> audio out, -> mouth open, A/V offset, fps, drops (real WebRTC client)",
        description="A WebRTC client sends a test signal (speech onsets and clicks) as its microphone and "
        "measures, per event, audio in -> returned click, audio in -> the first frame whose mouth opens "
        "(FaceMesh), the A/V offset, plus frame jitter and drops; with --load K sessions at once and the "
        "server's CPU and memory from /metrics; --find-max ramps K. Definitions: streaming/bench/.",
    )
    target = lat.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    target.add_argument(
        "--local",
        action="store_true",
        help="start a server here (a child process; 127.0.0.1, loopback ICE)",
    )
    lat.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        metavar="TOKEN",
        help=f"the --url server's token (default: ${TOKEN_ENV}; prefer the variable: options show in the "
        "process list)",
    )
    lat.add_argument("--avatar", metavar="NAME", help="the sessions' avatar (default: the server's)")
    lat.add_argument(
        "--seconds",
        type=float,
        default=sc.seconds,
        help=f"test signal per session, seconds (default {sc.seconds:g})",
    )
    lat.add_argument(
        "--period",
        type=float,
        default=sc.period_s,
        help=f"seconds from one event to the next (default {sc.period_s:g})",
    )
    lat.add_argument(
        "--load", type=int, default=bc.load, metavar="K", help=f"K concurrent sessions (default {bc.load})"
    )
    lat.add_argument(
        "--find-max",
        action="store_true",
        help="ramp K = 1, 2, ...: the largest K that holds --min-fps and --bound-ms",
    )
    lat.add_argument(
        "--max-load",
        type=int,
        default=bc.max_load,
        metavar="K",
        help=f"--find-max stops here (default {bc.max_load})",
    )
    lat.add_argument(
        "--bound-ms",
        type=float,
        help="p95 mouth latency bound of --find-max (default: server delay + 200; 600 with an auto delay)",
    )
    lat.add_argument(
        "--min-fps",
        type=float,
        default=bc.min_fps,
        help=f"received fps --find-max needs (default {bc.min_fps:g})",
    )
    lat.add_argument("--json", metavar="OUT.json", help="write the full report")
    lat.add_argument("--plot", metavar="OUT.png", help="timeline and histograms (needs mouthpiece[bench])")
    lat.add_argument(
        "--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN URL (repeat)"
    )
    lat.add_argument(
        "--loopback",
        action="store_true",
        help="ICE on 127.0.0.1 only (a server here started with --loopback)",
    )
    lat.add_argument(
        "--timeout",
        type=float,
        default=bc.connect_timeout_s,
        help=f"connect time limit per session (default {bc.connect_timeout_s:g} s)",
    )
    loc = lat.add_argument_group("the --local server")
    loc.add_argument(
        "--delay-ms",
        type=delay_arg,
        default=ls.delay_ms,
        metavar="auto|MS",
        help=f"audio in -> lips and audio out: auto or ms (default {describe_delay(ls.delay_ms)})",
    )
    loc.add_argument("--renderer", default=ls.renderer, type=canonical_renderer, choices=RENDERERS)
    loc.add_argument("--device", default=ls.device, help="auto (cuda when available), cpu, cuda, cuda:N")
    loc.add_argument("--avatar-file", metavar="FILE", help="its avatar (default: the bundled portrait)")
    loc.add_argument(
        "--checkpoint-dir",
        default=ls.checkpoint_dir,
        metavar="DIR",
        help=f"its weights (default {ls.checkpoint_dir})",
    )
    loc.add_argument("--cache", default=ls.cache_dir, help="its avatar cache folder")
    lat.set_defaults(func=cmd_bench_latency)


def bench_config_from_args(args) -> BenchConfig:
    """The ``bench latency`` options as a :class:`BenchConfig`."""
    local = None
    if args.local:
        local = LocalServer(
            delay_ms=args.delay_ms,
            renderer=args.renderer,
            device=args.device,
            avatar_file=args.avatar_file,
            checkpoint_dir=args.checkpoint_dir,
            cache_dir=args.cache,
        )
    return BenchConfig(
        url=args.url,
        local=local,
        avatar=args.avatar,
        signal=SignalConfig(seconds=args.seconds, period_s=args.period),
        load=args.load,
        find_max=args.find_max,
        max_load=args.max_load,
        bound_ms=args.bound_ms,
        min_fps=args.min_fps,
        ice_servers=tuple(args.ice_server),
        loopback=args.loopback,
        connect_timeout_s=args.timeout,
        token=getattr(args, "token", None),
    )


def cmd_bench_latency(args) -> int:
    import asyncio

    from streaming import bench

    cfg = bench_config_from_args(args)
    if args.plot:
        bench.require_matplotlib()  # before the run, not after it
    report = asyncio.run(bench.run_bench(cfg, progress=lambda m: print(f"mouthpiece: {m}", flush=True)))
    print(bench.format_report(report))
    if args.json:
        print(f"wrote {bench.write_json(report, args.json)}")
    if args.plot:
        print(f"wrote {bench.write_plot(report, args.plot)}")
    return 0 if report.ok else 1


def cmd_serve(args) -> int:
    from streaming.server import serve

    return serve(args)

"""What a ``mouthpiece bench latency`` run is given: the test signal (:class:`SignalConfig`), each
client session's options (:class:`SessionOptions`), the server to start with ``--local``
(:class:`LocalServer`: ``mouthpiece serve`` in a child process) and the whole run
(:class:`BenchConfig`: a server URL or a local server, the load K or the ``--find-max`` ramp and its
bounds). Plain frozen dataclasses that check their values; the command line
(``engine/cli/serve.py``) takes its option defaults from them. No I/O, no heavy imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BenchConfig", "LocalServer", "SessionOptions", "SignalConfig"]


@dataclass(frozen=True)
class SignalConfig:
    """The test signal (:mod:`streaming.bench.signal`). ``seconds`` is the length; the events that fit in it
    after ``lead_s`` of silence, each ``period_s`` apart, with ``tail_s`` of silence after the last
    speech burst, are made (at least one)."""

    seconds: float = 20.0
    period_s: float = 1.6
    speech_s: float = 0.6
    lead_s: float = 2.0  # the stream settles first (the video encoder's quality ramps up)
    tail_s: float = 1.2
    click_lead_s: float = 0.3
    level: float = 0.3  # speech peak amplitude
    click_level: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.period_s < self.speech_s + 0.6:
            raise ValueError("period_s must leave at least 0.6 s of silence after each speech burst")
        if self.click_lead_s < 0.1 or self.lead_s < 0.2 or self.speech_s < 0.2:
            raise ValueError("click_lead_s >= 0.1, lead_s >= 0.2 and speech_s >= 0.2 are required")

    @property
    def events(self) -> int:
        room = self.seconds - self.lead_s - self.click_lead_s - self.speech_s - self.tail_s
        return max(1, int(math.floor(room / self.period_s + 1e-9)) + 1)


@dataclass(frozen=True)
class SessionOptions:
    """One client session: the avatar it asks for (None: the server's), its STUN / TURN servers, the
    time limit of each of its waits, and how far past the signal's end the returned streams must
    reach before it hangs up."""

    avatar: str | None = None
    ice_servers: tuple[str, ...] = ()
    connect_timeout_s: float = 30.0
    settle_s: float = 0.3  # the returned streams must cover the signal's end plus this
    token: str | None = field(default=None, repr=False)  # the server's --token (docs/security.md)


@dataclass(frozen=True)
class LocalServer:
    """The server ``--local`` starts: ``mouthpiece serve`` in a child process (127.0.0.1, a free
    port, loopback ICE), so that the tool's clients and the server do not share one interpreter
    (and its lock) and the server's CPU and memory figures are its own."""

    delay_ms: float | str = "auto"  # "auto" or ms (the server's --delay-ms)
    renderer: str = "auto"
    device: str = "auto"
    avatar_file: str | None = None
    checkpoint_dir: str = "checkpoints"
    cache_dir: str | None = None
    max_sessions: int = 4

    def command(self, port: int) -> list[str]:
        """The child's command line (``python -m engine serve ...``)."""
        import sys

        cmd = [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--loopback", "--renderer", self.renderer, "--device", self.device]
        delay = self.delay_ms if isinstance(self.delay_ms, str) else f"{self.delay_ms:g}"
        cmd += ["--delay-ms", delay, "--max-sessions", str(self.max_sessions)]
        cmd += ["--checkpoint-dir", self.checkpoint_dir]
        if self.avatar_file:
            cmd += ["--avatar", self.avatar_file]
        if self.cache_dir:
            cmd += ["--cache", self.cache_dir]
        return cmd


@dataclass(frozen=True)
class BenchConfig:
    url: str | None = None  # a running server; or
    local: LocalServer | None = None  # start one here
    avatar: str | None = None
    signal: SignalConfig = field(default_factory=SignalConfig)
    load: int = 1
    find_max: bool = False
    max_load: int = 16
    bound_ms: float | None = None  # default: the server's delay + 200
    min_fps: float = 24.5
    ice_servers: tuple[str, ...] = ()
    loopback: bool = False  # ICE on 127.0.0.1 only (a server on this machine started with --loopback)
    connect_timeout_s: float = 30.0
    token: str | None = field(default=None, repr=False)  # the --url server's token (the local one needs none)

    def __post_init__(self) -> None:
        if (self.url is None) == (self.local is None):
            raise ValueError("give a server URL or a local server, not both")
        if self.load < 1 or self.max_load < 1:
            raise ValueError("the load is at least one session")

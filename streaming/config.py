"""The server's settings: :class:`ServerConfig`, its command-line options (:func:`add_arguments`,
used by ``mouthpiece serve``) and :func:`config_from_args`; also where the page and the bundled
portrait live. Plain data: nothing here starts or loads anything.

ICE servers (``--ice-server URL``, repeatable) are STUN or TURN URLs in the forms of RFC 7064 /
RFC 7065 that both aiortc and browsers use (``stun:HOST[:PORT]``, ``turn:HOST[:PORT][?transport=udp|tcp]``,
``turns:HOST[:PORT]?transport=tcp``); a TURN server needs ``--ice-username`` and ``--ice-credential``
(the credential may come from ``MOUTHPIECE_ICE_CREDENTIAL`` instead, to keep it off the command line).
:meth:`ServerConfig.ice_server_entries` gives them in the W3C ``RTCIceServer`` shape: what the page
gets from ``/api/info`` and what the server's own peer connections use (docs/deploy.md)."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from engine.core.options import whole_number
from engine.live.session import LiveConfig
from engine.synth import canonical_renderer
from engine.synth.backends import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION, DTYPES
from streaming.delay import delay_arg, describe_delay
from streaming.session import StreamConfig

__all__ = [
    "DEFAULT_AVATAR",
    "ICE_CREDENTIAL_ENV",
    "ROOT",
    "TOKEN_ENV",
    "WEB_CLIENT",
    "ServerConfig",
    "add_arguments",
    "config_from_args",
    "origin",
    "ice_url",
    "public_host",
    "split_host",
]

ROOT = Path(__file__).resolve().parent.parent
WEB_CLIENT = ROOT / "web_client"
DEFAULT_AVATAR = ROOT / "assets" / "portrait.png"


RENDERERS = ("auto", "neural", "preview", "none")  # --renderer

ICE_CREDENTIAL_ENV = "MOUTHPIECE_ICE_CREDENTIAL"  # --ice-credential's default
TOKEN_ENV = "MOUTHPIECE_TOKEN"  # --token's default (docs/security.md)
MIN_TOKEN_CHARS = 16
# RFC 6750's b64token (what fits in ``Authorization: Bearer``), also safe in a URL query
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 7064 (stun:) and RFC 7065 (turn:, turns:) URLs: no user part, an optional port and transport
# (not stuns:, which aiortc ignores, nor IPv6 literals, which it cannot parse)
_ICE_URL = re.compile(
    r"(?P<scheme>stun|turns?):(?P<host>[A-Za-z0-9.\-]+)(:(?P<port>[0-9]{1,5}))?"
    r"(\?transport=(?P<transport>udp|tcp))?"
)


def ice_url(text: str) -> str:
    """``text`` if it is a STUN or TURN URL aiortc and browsers accept; ValueError saying why not
    (also argparse's ``type`` for ``--ice-server``)."""
    m = _ICE_URL.fullmatch(text.strip())
    example = "e.g. stun:stun.example.org:3478 or turn:turn.example.org:3478?transport=udp"
    if m is None:
        raise ValueError(
            f"not a STUN or TURN URL: {text!r} ({example}; credentials go in --ice-username "
            "and --ice-credential)"
        )
    if m["port"] is not None and not 0 < int(m["port"]) < 65536:
        raise ValueError(f"bad port in the ICE server URL {text!r}")
    if m["scheme"] == "stun" and m["transport"]:
        raise ValueError(f"a STUN URL takes no transport: {text!r}")
    if m["scheme"] == "turns" and m["transport"] == "udp":
        raise ValueError(f"turns: (TURN over TLS) runs over tcp, not udp: {text!r}")
    return text.strip()


def _ice_url_arg(text: str) -> str:
    try:
        return ice_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    avatars: tuple[str, ...] = ()  # video or image files; the bundled portrait is always offered
    avatar_dir: str | None = None  # every video / image file in this folder
    default_avatar: str | None = None  # name; default: the first of --avatar, else the portrait
    refs: int | str = 5
    cache_dir: str | None = None
    landmark_checkpoint: str | None = None
    renderer_checkpoint: str | None = None
    checkpoint_dir: str = "checkpoints"
    random_weights: bool = False
    renderer: str = "auto"  # auto | neural | preview | none (ModelEngine.from_config)
    device: str = "auto"
    backend: str = DEFAULT_BACKEND
    precision: str = DEFAULT_PRECISION
    max_sessions: int = 4
    max_batch: int = 16  # windows per model call, across sessions
    max_viewers: int = 16
    ice_servers: tuple[str, ...] = ()  # stun: / turn: URLs; none by default (no outside traffic)
    # origins whose pages may call WHIP / WHEP (CORS); none by default: no CORS headers; "*": any
    allow_origins: tuple[str, ...] = ()
    ice_username: str | None = None  # of the TURN servers (long-term credentials, RFC 8489)
    ice_credential: str | None = None
    loopback: bool = False  # ICE on 127.0.0.1 only (local demos, tests)
    connect_timeout_s: float = 20.0  # a peer that has not connected by then is dropped
    # 20 ms packets aiortc buffers before decoding a microphone (its default: 4); 0: none, each packet
    # decoded as it comes (the playout delay, which measures the arrival jitter, covers it)
    mic_prefetch: int = 0
    stream: StreamConfig = field(default_factory=StreamConfig)
    # docs/security.md: the clients' shared secret (None: no token asked); serving a non-loopback
    # --host without one (refused unless insecure); the names a reverse proxy reaches it by
    token: str | None = None
    insecure: bool = False
    public_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        self.public_hosts = tuple(public_host(h) for h in self.public_hosts)
        self.ice_servers = tuple(ice_url(u) for u in self.ice_servers)
        if any(u.startswith("turn") for u in self.ice_servers) and not (
            self.ice_username and self.ice_credential
        ):
            raise ValueError(
                f"a TURN server needs credentials: give --ice-username and --ice-credential "
                f"(or set {ICE_CREDENTIAL_ENV})"
            )

    def ice_server_entries(self) -> list[dict]:
        """The ICE servers as W3C ``RTCIceServer`` dictionaries (``urls``, and for TURN
        ``username`` and ``credential``): one for the STUN URLs, one for the TURN URLs; empty when
        none is configured. The page passes them to ``new RTCPeerConnection({iceServers})`` and
        aiortc takes them as ``RTCIceServer(**entry)``."""
        stun = [u for u in self.ice_servers if u.startswith("stun")]
        turn = [u for u in self.ice_servers if u.startswith("turn")]
        entries: list[dict] = [{"urls": stun}] if stun else []
        if turn:
            entries.append({"urls": turn, "username": self.ice_username, "credential": self.ice_credential})
        return entries


def origin(text: str) -> str:
    """An ``--allow-origin`` value as browsers send it in ``Origin`` (``scheme://host[:port]``,
    lower case, no default port) or ``*``; argparse.ArgumentTypeError otherwise."""
    text = text.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin like https://example.com or http://host:8081"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def check_token(token: str) -> str:
    """``token`` if it can be a server token (what ``Authorization: Bearer`` carries, at least
    :data:`MIN_TOKEN_CHARS` characters); ValueError saying why not."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(
            "the token may hold only letters, digits and - . _ ~ + / = (make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"the token is too short to be safe ({len(token)} characters, at least {MIN_TOKEN_CHARS}; make "
            "one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header or ``--public-host`` value as (lower-case name, IPv6 without brackets; port
    or None); None when it is not ``NAME[:PORT]``."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/?#@ \t\\"):
        return None
    try:
        parts = urlsplit(f"http://{value}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.netloc != value:
        return None
    return name, port


def public_host(text: str) -> str:
    """A ``--public-host`` value (``NAME`` or ``NAME:PORT``, lower case); ValueError otherwise (an
    argparse.ArgumentTypeError is one)."""
    if split_host(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name like example.org or example.org:8443")
    return text.strip().lower()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's options; their defaults are those of :class:`ServerConfig` and the stream settings."""
    sc, st, lc = ServerConfig(), StreamConfig(), LiveConfig()
    p.add_argument("--host", default=sc.host, help=f"address to listen on (default {sc.host})")
    p.add_argument("--port", type=int, default=sc.port, help=f"port (default {sc.port})")
    p.add_argument(
        "--avatar", action="append", default=[], metavar="FILE", help="an avatar video or image (repeat)"
    )
    p.add_argument("--avatar-dir", metavar="DIR", help="offer every video / image in this folder")
    p.add_argument("--default-avatar", metavar="NAME", help="avatar of new sessions (default: the first)")
    p.add_argument(
        "--refs",
        default=str(sc.refs),
        metavar="N|auto",
        help=f"renderer references per avatar (default {sc.refs})",
    )
    p.add_argument("--cache", default=sc.cache_dir, help="avatar cache folder")
    p.add_argument(
        "--landmark-checkpoint", metavar="P", help="default: checkpoints/landmarkgenerator_checkpoint.pth"
    )
    p.add_argument("--renderer-checkpoint", metavar="P", help="default: checkpoints/renderer_checkpoint.pth")
    p.add_argument(
        "--checkpoint-dir",
        default=sc.checkpoint_dir,
        metavar="DIR",
        help="where to look for both checkpoints (e.g. the output of mouthpiece train presenter)",
    )
    p.add_argument(
        "--random-weights", action="store_true", help="stand-in weights (noise faces; demos, tests)"
    )
    p.add_argument(
        "--renderer",
        default=sc.renderer,
        type=canonical_renderer,
        choices=RENDERERS,
        help="auto (neural on a GPU with both weights, else the preview renderer), neural, preview, none",
    )
    p.add_argument("--device", default=sc.device, help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--backend", default=sc.backend, choices=BACKENDS)
    p.add_argument("--precision", default=sc.precision, choices=tuple(DTYPES))
    p.add_argument(
        "--batch",
        type=whole_number(1),
        default=lc.batch,
        help=f"max windows a session sends per request (default {lc.batch})",
    )
    p.add_argument(
        "--max-batch",
        type=whole_number(1),
        default=sc.max_batch,
        help=f"max windows per model call, across sessions (default {sc.max_batch})",
    )
    p.add_argument(
        "--delay-ms",
        type=delay_arg,
        default=st.delay_ms,
        metavar="auto|MS",
        help="audio in -> lips and audio out: auto (the renderer's look-ahead + measured compute, encode and"
        f" arrival jitter + a margin, changed only in silence) or a fixed number of ms (default"
        f" {describe_delay(st.delay_ms)})",
    )
    p.add_argument(
        "--max-sessions",
        type=whole_number(1),
        default=sc.max_sessions,
        help=f"concurrent sessions (default {sc.max_sessions})",
    )
    p.add_argument(
        "--max-viewers",
        type=whole_number(1),
        default=sc.max_viewers,
        metavar="N",
        help=f"WHEP viewers per session; one more is answered 503 (default {sc.max_viewers})",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        type=_ice_url_arg,
        metavar="URL",
        help="a STUN or TURN server for the server and the page, e.g. turn:turn.example.org:3478 (repeat; "
        "docs/deploy.md)",
    )
    p.add_argument("--ice-username", metavar="NAME", help="the TURN servers' username")
    p.add_argument(
        "--ice-credential",
        default=os.environ.get(ICE_CREDENTIAL_ENV),
        metavar="SECRET",
        help=f"the TURN servers' password (default: ${ICE_CREDENTIAL_ENV}); the page gets it from /api/info",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        type=origin,
        metavar="ORIGIN",
        help="let pages from ORIGIN (scheme://host[:port], or * for any) use WHIP / WHEP (CORS; repeat)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        metavar="TOKEN",
        help=f"clients must send it (Authorization: Bearer TOKEN) to use anything but the page and /healthz "
        f"(default: ${TOKEN_ENV}; prefer the variable: options show in the process list; docs/security.md)",
    )
    p.add_argument(
        "--public-host",
        action="append",
        default=[],
        type=public_host,
        metavar="NAME[:PORT]",
        help="a name clients reach the server by besides --host (a reverse proxy's; repeat); other Host "
        "headers are refused",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without a token (anyone who reaches it can use it)",
    )
    p.add_argument("--loopback", action="store_true", help="ICE on 127.0.0.1 only (local demos and tests)")
    p.add_argument(
        "--mic-prefetch",
        type=whole_number(0),
        default=sc.mic_prefetch,
        metavar="N",
        help=f"20 ms microphone packets buffered before decoding (default {sc.mic_prefetch}: none, the delay "
        "covers the network's jitter; 1-4 with a fixed --delay-ms on a jittery network)",
    )
    p.add_argument("--no-speech-gate", action="store_true", help="animate silence too (as the authors)")
    p.add_argument("-v", "--verbose", action="store_true")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    refs = args.refs if args.refs == "auto" else int(args.refs)
    live = LiveConfig(batch=args.batch, speech_gate=not args.no_speech_gate)
    return ServerConfig(
        host=args.host,
        port=args.port,
        avatars=tuple(args.avatar),
        avatar_dir=args.avatar_dir,
        default_avatar=args.default_avatar,
        refs=refs,
        cache_dir=args.cache,
        landmark_checkpoint=args.landmark_checkpoint,
        renderer_checkpoint=args.renderer_checkpoint,
        checkpoint_dir=getattr(args, "checkpoint_dir", None) or ServerConfig.checkpoint_dir,
        random_weights=args.random_weights,
        renderer=args.renderer,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        max_sessions=args.max_sessions,
        max_batch=args.max_batch,
        max_viewers=args.max_viewers,
        ice_servers=tuple(args.ice_server),
        allow_origins=tuple(getattr(args, "allow_origin", None) or ()),
        ice_username=getattr(args, "ice_username", None),
        ice_credential=getattr(args, "ice_credential", None),
        loopback=args.loopback,
        token=getattr(args, "token", None) or None,
        insecure=getattr(args, "insecure", False),
        public_hosts=tuple(getattr(args, "public_host", None) or ()),
        mic_prefetch=args.mic_prefetch,
        stream=StreamConfig(delay_ms=args.delay_ms, live=live),
    )

"""The HTTP / WebRTC / websocket server (``mouthpiece serve``), re-exported from the modules it is
made of, so ``from streaming.server import ...`` keeps working: :mod:`streaming.config` (settings,
command-line options), :mod:`streaming.avatars`, :mod:`streaming.registry` (sessions and limits),
:mod:`streaming.control` (control messages), :mod:`streaming.webrtc` (/offer, WHIP, WHEP),
:mod:`streaming.websocket` (PCM ingest), :mod:`streaming.metrics` and :mod:`streaming.app` (the
application and its routes). The endpoints, control messages and errors are in docs/api.md."""

from __future__ import annotations

from engine.synth.choice import ModelEngine
from streaming.app import create_app, serve, serve_app
from streaming.avatars import AvatarLibrary
from streaming.config import ServerConfig, add_arguments, config_from_args
from streaming.registry import SERVER, Server

__all__ = [
    "SERVER",
    "AvatarLibrary",
    "ModelEngine",
    "Server",
    "ServerConfig",
    "add_arguments",
    "config_from_args",
    "create_app",
    "serve",
    "serve_app",
]

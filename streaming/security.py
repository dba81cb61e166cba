"""Who may talk to the server (docs/security.md): :func:`security_middleware` checks every request,
in this order, before any handler runs:

1. **Host** (DNS rebinding): the ``Host`` header must name this server: a loopback name
   (``localhost``, ``127.0.0.1``, ``[::1]``) or the address the connection came to, with the port it
   came to; the ``--host`` name with that port; or a ``--public-host NAME[:PORT]`` (a reverse proxy's
   name; without a port, any port). Otherwise 421 ``unknown_host``.
2. **Origin** (cross-site requests): a websocket upgrade or a state-changing request (POST, PUT,
   PATCH, DELETE) that carries an ``Origin`` must come from the server's own origin (``http`` or
   ``https`` with the ``Host`` it was sent to, or a public host), or from one given with
   ``--allow-origin`` (``*``: any). Otherwise 403 ``forbidden_origin``. Requests without ``Origin``
   (curl, aiortc, GStreamer, ffmpeg, OBS) are not browsers' cross-site requests and pass.
3. **Token** (``--token`` / ``MOUTHPIECE_TOKEN``): when one is set, every path but the page (``/``),
   its files (``/static/...``), the call demo's page (``/call``) and ``/healthz`` needs
   ``Authorization: Bearer TOKEN`` (RFC 6750, as WHIP and WHEP specify); the websockets (``/ws``,
   ``/call/ws``) also take ``?token=TOKEN``, since browsers cannot set headers on a websocket. CORS
   preflights (``OPTIONS`` with ``Access-Control-Request-Method``) need none (browsers send them
   without credentials); a plain ``OPTIONS`` does (its ``Link``
   headers carry the TURN credentials). Otherwise 401 with ``WWW-Authenticate: Bearer``. The
   comparison takes constant time.

Each refusal is one line of JSON (``{"error": CODE, "message": SENTENCE}``) that names no path or
value of the server; the log has the detail. :func:`is_loopback` also decides whether ``mouthpiece
serve`` may start without a token (:func:`exposure_problem`)."""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from streaming.config import TOKEN_ENV, ServerConfig, origin, split_host
from streaming.registry import json_error

__all__ = ["OPEN_PATHS", "AccessLogger", "exposure_problem", "is_loopback", "security_middleware"]

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/", "/call", "/healthz")  # and everything under /static/
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUERY_TOKEN_PATHS = ("/ws", "/call/ws")  # websockets: browsers cannot set Authorization on them


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listening address or name) reaches this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(cfg: ServerConfig) -> str | None:
    """Why ``cfg`` must not start (a non-loopback ``--host`` without a token and without
    ``--insecure``), as one sentence; None when it may."""
    if is_loopback(cfg.host) or cfg.token or cfg.insecure:
        return None
    return (
        f"--host {cfg.host} lets other machines reach the server, and it has no token: give --token "
        f"(better: set {TOKEN_ENV}), or --insecure to serve without one"
    )


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without the query string: a websocket's ``?token=`` stays out of it."""

    def log(self, request, response, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


def _public_hosts(values: tuple[str, ...]) -> list[tuple[str, int | None]]:
    return [split_host(v) for v in values]  # checked by ServerConfig


def _reply(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    response = json_error(status, code, message)
    if headers:
        response.headers.update(headers)
    return response


def security_middleware(cfg: ServerConfig):
    """The aiohttp middleware that applies the Host, Origin and token checks of this module."""
    public = _public_hosts(cfg.public_hosts)
    allowed_origins = {origin(o) for o in cfg.allow_origins}
    any_origin = "*" in allowed_origins
    own_name = cfg.host.strip().strip("[]").lower()
    wildcard = own_name in ("", "0.0.0.0", "::")
    token = cfg.token.encode() if cfg.token else None

    def host_ok(request: web.Request, name: str, port: int | None) -> bool:
        if any(name == p and (pp is None or port == pp) for p, pp in public):
            return True
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        if not sock:
            return False
        local_ip, local_port = str(sock[0]).split("%")[0].lower(), sock[1]
        with contextlib.suppress(ValueError):  # an IPv4 client of a dual-stack socket: ::ffff:a.b.c.d
            mapped = ipaddress.ip_address(local_ip)
            if mapped.version == 6 and mapped.ipv4_mapped is not None:
                local_ip = str(mapped.ipv4_mapped)
        if (port or 80) != local_port:
            return False
        if name in LOOPBACK_NAMES or name == local_ip:
            return True
        return not wildcard and name == own_name

    def origin_ok(request: web.Request, sent: str, host: tuple[str, int | None]) -> bool:
        try:
            o = origin(sent)
        except argparse.ArgumentTypeError:
            return False  # "null" (sandboxed frames, file: pages) and anything malformed
        if any_origin or o in allowed_origins:
            return True
        name, port = host
        hostport = (f"[{name}]" if ":" in name else name) + ("" if port is None else f":{port}")
        own = {origin(f"{scheme}://{hostport}") for scheme in ("http", "https")}
        if o in own:
            return True
        parts = urlsplit(o)
        return any(parts.hostname == p and (pp is None or parts.port == pp) for p, pp in public)

    def token_ok(request: web.Request) -> bool | None:
        """True: the right token; False: a wrong one; None: none given."""
        given = None
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.strip().partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else ""
        elif request.path in QUERY_TOKEN_PATHS and "token" in request.query:
            given = request.query["token"]
        if given is None:
            return None
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token)

    @web.middleware
    async def security(request: web.Request, handler):
        host = split_host(request.headers.get("Host", ""))
        if host is None or not host_ok(request, *host):
            log.warning("refused a request for host %r from %s", request.headers.get("Host"), request.remote)
            return _reply(
                421,
                "unknown_host",
                "this server does not answer to that host name (its operator can add one with --public-host)",
            )
        sent = request.headers.get("Origin")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if (
            sent is not None
            and (upgrade or request.method in STATE_CHANGING)
            and not origin_ok(request, sent, host)
        ):
            log.warning("refused %s %s from origin %r", request.method, request.path, sent)
            return _reply(
                403, "forbidden_origin", "pages from other sites may not use this server (see --allow-origin)"
            )
        if (
            token is not None
            and not (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers)
            and request.path not in OPEN_PATHS
            and not request.path.startswith("/static/")
        ):
            ok = token_ok(request)
            if ok is None:
                return _reply(
                    401,
                    "unauthorized",
                    "this server needs a token: send Authorization: Bearer TOKEN",
                    {"WWW-Authenticate": 'Bearer realm="mouthpiece"'},
                )
            if not ok:
                log.warning("wrong token for %s %s from %s", request.method, request.path, request.remote)
                return _reply(
                    401,
                    "invalid_token",
                    "the token is wrong",
                    {"WWW-Authenticate": 'Bearer realm="mouthpiece", error="invalid_token"'},
                )
        return await handler(request)

    return security

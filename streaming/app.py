"""The aiohttp application: :func:`create_app` loads the models and avatars (unless given), makes
the :class:`~streaming.registry.Server` and adds every route (docs/api.md): the page and its
static files, the JSON API (info, avatars and posters, sessions), WebRTC / WHIP / WHEP
(:mod:`streaming.webrtc`), the websocket ingest (:mod:`streaming.websocket`), ``/healthz`` and
``/metrics`` (:mod:`streaming.metrics`), and, with ``--allow-origin``, CORS for the configured
origins (:func:`cors_middleware`); every request passes the Host, Origin and token checks of
:mod:`streaming.security` first. :func:`serve_app` runs an application on a free port for
a block (tests, benchmarks, the bench tool); :func:`serve` is ``mouthpiece serve``, which binds its
listening sockets (:func:`listen_sockets`) before it loads anything or says where to open it."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import socket
import sys
import time
from pathlib import Path

from aiohttp import web

from engine.synth.choice import ModelEngine
from streaming import call, webrtc, websocket
from streaming.avatars import AvatarLibrary, AvatarUnavailable
from streaming.config import WEB_CLIENT, ServerConfig, config_from_args, origin
from streaming.control import BadInput, shown
from streaming.registry import SERVER, Server, json_error, server_of
from streaming.security import AccessLogger, exposure_problem, security_middleware

__all__ = [
    "ListenError",
    "cors_middleware",
    "create_app",
    "error_middleware",
    "listen_sockets",
    "port_number",
    "routes",
    "serve",
    "serve_app",
]

log = logging.getLogger("mouthpiece.server")

routes = web.RouteTableDef()  # the page and the JSON API
health_routes = web.RouteTableDef()  # /healthz and /metrics (added after the others)


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_CLIENT / "index.html"
    if not page.is_file():
        return web.Response(status=404, text="web_client/index.html is missing")
    return web.FileResponse(page)


@routes.get("/api/info")
async def info(request: web.Request) -> web.Response:
    srv = server_of(request)
    eng = srv.engine
    return web.json_response(
        {
            "name": "mouthpiece",
            "mode": eng.mode,
            # the weights' file names (never their folders)
            "weights": {k: Path(v).name if isinstance(v, str) else v for k, v in eng.weights.items()},
            "message": eng.message,
            "device": eng.device,
            "renderer": eng.renderer_name,
            "avatars": srv.library.describe(),
            "default_avatar": srv.library.default,
            "sessions": len(srv.sessions),
            "max_sessions": srv.cfg.max_sessions,
            "delay_ms": srv.cfg.stream.delay_ms,
            # the microphone packets (20 ms) aiortc holds before decoding (latency figures of the page)
            "mic_prefetch": srv.cfg.mic_prefetch,
            # the STUN / TURN servers the page should use (RTCIceServer dictionaries; docs/deploy.md)
            "ice_servers": srv.cfg.ice_server_entries(),
        }
    )


@routes.get("/api/avatars")
async def avatars(request: web.Request) -> web.Response:
    srv = server_of(request)
    return web.json_response({"default": srv.library.default, "avatars": srv.library.describe()})


@routes.get("/api/avatars/{name}/poster.jpg")
async def poster(request: web.Request) -> web.Response:
    srv = server_of(request)
    name = request.match_info["name"]
    if name not in srv.library.sources:
        return json_error(404, "unknown_avatar", f"no avatar named {shown(name)}")
    try:
        data = await srv.library.poster_jpeg(name)  # prepared and encoded in a worker thread
    except AvatarUnavailable as e:
        return json_error(422, e.code, e.message)
    return web.Response(body=data, content_type="image/jpeg")


@routes.get("/api/sessions")
async def sessions(request: web.Request) -> web.Response:
    srv = server_of(request)
    return web.json_response(
        {
            "sessions": [
                dict(h.stream.stats(), kind=h.kind, viewers=len(h.viewers)) for h in srv.sessions.values()
            ]
        }
    )


@routes.get("/api/sessions/{sid}")
async def session_stats(request: web.Request) -> web.Response:
    hosted = server_of(request).sessions.get(request.match_info["sid"])
    if hosted is None:
        return json_error(404, "unknown_session", "no such session")
    return web.json_response(dict(hosted.stream.stats(), kind=hosted.kind, viewers=len(hosted.viewers)))


@routes.delete("/api/sessions/{sid}")
async def session_delete(request: web.Request) -> web.Response:
    if not await server_of(request).close_session(request.match_info["sid"]):
        return json_error(404, "unknown_session", "no such session")
    return web.json_response({"closed": request.match_info["sid"]})


@health_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    srv = server_of(request)
    return web.json_response(
        {
            "status": "ok",
            "mode": srv.engine.mode,
            "sessions": len(srv.sessions),
            "max_sessions": srv.cfg.max_sessions,
            "uptime_s": time.time() - srv.started_at,
        }
    )


@health_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (0.0.4), or OpenMetrics when asked for (:mod:`streaming.metrics`)."""
    return await server_of(request).metrics.handler(request)


# CORS (the Fetch standard) as the WHIP (RFC 9725) and WHEP specs use it
CORS_METHODS = "POST, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Content-Type, Authorization, If-Match"
CORS_EXPOSE = "Location, Link, ETag, Retry-After"  # what players read from the answers
CORS_MAX_AGE_S = 600


def cors_middleware(allowed: tuple[str, ...]):
    """CORS for pages from the ``allowed`` origins (``--allow-origin``; ``*``: any): their requests
    get ``Access-Control-Allow-Origin`` (their own origin) and the exposed headers, their
    preflights (``OPTIONS`` with ``Access-Control-Request-Method``) the methods and headers the
    WHIP and WHEP specs use. Requests from any other origin get no CORS headers (the browser
    refuses the answer); requests without ``Origin`` are untouched."""
    origins = {origin(o) for o in allowed}
    any_origin = "*" in origins

    def add(headers, request: web.Request) -> None:
        headers.add("Vary", "Origin")
        sent = request.headers.get("Origin")
        if sent is None or not (any_origin or sent.lower() in origins):
            return
        headers["Access-Control-Allow-Origin"] = sent
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers["Access-Control-Allow-Methods"] = CORS_METHODS
            headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        else:
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSE

    @web.middleware
    async def cors(request: web.Request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as e:
            add(e.headers, request)
            raise
        if not response.prepared:  # a websocket has sent its headers already (and needs no CORS)
            add(response.headers, request)
        return response

    return cors


@web.middleware
async def error_middleware(request: web.Request, handler):
    """The backstop of every route: :class:`~streaming.control.BadInput` is its 4xx with the
    one plain sentence; an unexpected exception is a 500 with a plain line (no exception text)
    and its traceback goes to the log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BadInput as e:
        return json_error(e.status, e.code, e.message)
    except ConnectionError:  # the client left: nothing to answer
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal", "the server could not handle this request (see its log)")


def create_app(cfg: ServerConfig, engine: ModelEngine | None = None, library: AvatarLibrary | None = None):
    """The aiohttp application (models and avatars loaded from ``cfg`` unless given)."""
    # The live front end makes a small numpy matmul every 20 ms; an idle multi-threaded OpenBLAS
    # pool spins between them and burns most of a core. One BLAS thread is faster for these sizes.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    engine = engine or ModelEngine.from_config(cfg)
    library = library or AvatarLibrary.from_config(cfg)
    server = Server(cfg, engine, library)
    # CORS outermost, so that a refusal to an allowed origin's page is readable there
    middlewares = [cors_middleware(cfg.allow_origins)] if cfg.allow_origins else []
    middlewares.append(security_middleware(cfg))
    middlewares.append(error_middleware)  # innermost: its answers get the CORS headers too
    app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=middlewares)
    app[SERVER] = server
    for table in (routes, webrtc.routes, websocket.routes, health_routes):
        app.add_routes(table)
    call.setup(app)  # the call demo: /call and its signalling /call/ws
    if WEB_CLIENT.is_dir():
        app.router.add_static("/static/", WEB_CLIENT)
    app.on_startup.append(server.startup)
    app.on_shutdown.append(server.shutdown)
    return app


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str = "127.0.0.1"):
    """Run ``app`` on ``host`` at a free port for the block (tests, benchmarks, the bench tool's
    local mode); yields its base URL (no trailing slash)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        h, port = runner.addresses[0][:2]
        yield f"http://{h}:{port}"
    finally:
        await runner.cleanup()


class ListenError(ValueError):
    """``mouthpiece serve`` cannot listen where it was asked to: a port out of range or in use, a host
    that is not an address of this machine. The message is one line that says what to change."""


def port_number(text: str) -> int:
    """``--port``: an integer 0-65535 (0: any free port); ``argparse.ArgumentTypeError`` otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening TCP sockets for every address of ``host`` at ``port`` (as aiohttp would make
    them), made before the server says where to open it; :class:`ListenError` (one line, nothing left
    open) when the port is out of range or in use, or ``host`` is not an address of this machine."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ListenError(f"--port {port} is not a port number (1-65535)")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise ListenError(f"--host {host}: not a host name or address this machine knows") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart in TIME_WAIT works
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(128)
            except OSError as e:
                raise ListenError(_listen_problem(e, host, port)) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listen_problem(e: OSError, host: str, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (choose another with --port, or stop the other server)"
    if e.errno == errno.EACCES:
        return f"port {port} on {host} is not allowed for this user (choose one above 1023 with --port)"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine"
    return f"cannot listen on {host} port {port}: {e.strerror or e}"


def _url(host: str, sockets: list[socket.socket]) -> str:
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    return f"http://{shown}:{port}/"


def _prepare_given_avatars(cfg: ServerConfig, lib: AvatarLibrary) -> str | None:
    """Prepare the ``--avatar`` files and the default now (a worker thread), before serving; the line
    to print for the first broken one, None when all are ready."""
    given = {str(Path(a)): a for a in cfg.avatars}  # name -> what the user typed
    wanted = {n: given[str(p)] for n, p in lib.sources.items() if str(p) in given}
    for problem in lib.prepare_now([*wanted, lib.default]):
        return f"mouthpiece: avatar {wanted.get(problem.name, problem.name)}: {problem.reason}"
    return None


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    cfg = config_from_args(args)
    problem = exposure_problem(cfg)
    if problem is not None:
        print(f"mouthpiece: error: {problem}", file=sys.stderr)
        return 2
    if cfg.insecure and not cfg.token:
        print(
            f"mouthpiece: WARNING: --insecure: serving {cfg.host} without a token; anyone who can reach it "
            "can start, watch and end sessions",
            file=sys.stderr,
            flush=True,
        )
    sockets = listen_sockets(cfg.host, cfg.port)  # a busy or bad port: one line, before anything starts
    with contextlib.ExitStack() as closing:  # the sockets are closed unless the app gets to serve
        for sock in sockets:
            closing.callback(sock.close)
        app = create_app(cfg)
        problem = _prepare_given_avatars(cfg, app[SERVER].library)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        closing.pop_all()  # web.run_app owns them now
    server: Server = app[SERVER]
    print(
        f"mouthpiece: mode {server.engine.mode} on {server.engine.device}; avatars {server.library.names()}"
    )
    if server.engine.message:
        print(f"mouthpiece: {server.engine.message}")
    print(f"mouthpiece: open {_url(cfg.host, sockets)} (Ctrl+C to stop)", flush=True)
    web.run_app(app, sock=sockets, print=None, handle_signals=True, access_log_class=AccessLogger)
    return 0

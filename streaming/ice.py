"""Loopback-only ICE for tests and local demos.

aioice gathers host candidates from :func:`aioice.ice.get_host_addresses`, which skips 127.0.0.1
and returns the machine's interface addresses. :func:`loopback_ice` replaces it, for the duration
of a ``with`` block, by a function that returns only ``127.0.0.1``; :func:`loopback_configuration`
gives an :class:`aiortc.RTCConfiguration` with no ICE servers (aiortc otherwise adds a public STUN
server), so no server-reflexive or relay candidates are gathered either. Together the only
candidates a peer connection created and negotiated inside the block can offer are
``127.0.0.1`` host candidates. :func:`selected_pairs` reports the addresses ICE actually chose, so
callers can verify it. (The aioice functions replaced and the private attributes read are
reached through :mod:`streaming.aiortc_compat`.)

A remote peer may still offer (or send checks from) other addresses: a browser offers its
interface addresses and aioice would learn them as peer-reflexive candidates. Inside the block,
remote candidates and STUN datagrams that are not loopback are therefore ignored, and nothing is
sent to a non-loopback address (such attempts are recorded: :func:`stray_sends`). A browser then
connects only if it offers 127.0.0.1 itself (Chromium: ``--allow-loopback-in-peer-connection``).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection

from streaming.aiortc_compat import ice_connection, nominated_pairs, require_aioice_hooks

__all__ = [
    "LOOPBACK",
    "local_candidate_hosts",
    "loopback_configuration",
    "loopback_ice",
    "selected_pairs",
    "stray_sends",
]

LOOPBACK = "127.0.0.1"


def _loopback_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    return [LOOPBACK] if use_ipv4 else []


_strays: list[tuple] = []
_depth = 0


def stray_sends() -> list[tuple]:
    """Addresses that were not loopback and that aioice tried to send to inside a block."""
    return list(_strays)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guards() -> dict:
    require_aioice_hooks()
    conn, proto = aioice.ice.Connection, aioice.ice.StunProtocol
    add_remote, received = conn.add_remote_candidate, proto.datagram_received
    send_stun, send_data = proto.send_stun, proto.send_data

    async def add_remote_candidate(self, candidate):
        if candidate is not None and not _is_loopback(candidate.host):
            return None
        return await add_remote(self, candidate)

    def datagram_received(self, data, addr):
        if _is_loopback(addr[0]):
            received(self, data, addr)

    def guarded_send_stun(self, message, addr):
        if not _is_loopback(addr[0]):
            _strays.append(addr)
            return None
        return send_stun(self, message, addr)

    async def guarded_send_data(self, data, addr):
        if not _is_loopback(addr[0]):
            _strays.append(addr)
            return None
        return await send_data(self, data, addr)

    return {
        (conn, "add_remote_candidate"): (add_remote, add_remote_candidate),
        (proto, "datagram_received"): (received, datagram_received),
        (proto, "send_stun"): (send_stun, guarded_send_stun),
        (proto, "send_data"): (send_data, guarded_send_data),
        (aioice.ice, "get_host_addresses"): (aioice.ice.get_host_addresses, _loopback_addresses),
    }


@contextlib.contextmanager
def loopback_ice() -> Iterator[RTCConfiguration]:
    """Keep ICE on 127.0.0.1 while the block runs (module docstring); yields the configuration
    (no STUN / TURN servers) to create the peer connections with. Gathering happens in
    ``setLocalDescription``, so negotiate inside the block. Blocks may nest (a server and a
    client in one process); the patches are undone when the outermost one ends."""
    global _depth
    patches = _guards() if _depth == 0 else {}
    for (owner, name), (_, new) in patches.items():
        setattr(owner, name, new)
    if _depth == 0:
        _strays.clear()
    _depth += 1
    try:
        yield loopback_configuration()
    finally:
        _depth -= 1
        for (owner, name), (old, _) in patches.items():
            setattr(owner, name, old)


def loopback_configuration() -> RTCConfiguration:
    """An RTCConfiguration with no ICE servers: host candidates only, no STUN or TURN traffic."""
    return RTCConfiguration(iceServers=[])


def _ice_connections(pc: RTCPeerConnection) -> list[aioice.ice.Connection]:
    conns = []
    for t in pc.getTransceivers():
        for side in (t.sender, t.receiver):
            dtls = side.transport
            if dtls is not None:
                conn = ice_connection(dtls.transport.iceGatherer)
                if all(conn is not c for c in conns):
                    conns.append(conn)
    return conns


def selected_pairs(pc: RTCPeerConnection) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """``(local_addr, remote_addr)`` of every nominated ICE candidate pair of ``pc``."""
    return [
        (pair.local_addr, pair.remote_addr) for conn in _ice_connections(pc) for pair in nominated_pairs(conn)
    ]


def local_candidate_hosts(pc: RTCPeerConnection) -> set[str]:
    """The host addresses of every local ICE candidate ``pc`` gathered."""
    return {c.host for conn in _ice_connections(pc) for c in conn.local_candidates}

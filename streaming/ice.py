"""Loopback-only ICE for tests and local demos.

aioice gathers host candidates from :func:`aioice.ice.get_host_addresses`, which skips 127.0.0.1
and returns the machine's interface addresses. :func:`loopback_ice` replaces it, for the duration
of a ``with`` block, by a function that returns only ``127.0.0.1``; :func:`loopback_configuration`
gives an :class:`aiortc.RTCConfiguration` with no ICE servers (aiortc otherwise adds a public STUN
server), so no server-reflexive or relay candidates are gathered either. Together the only
candidates a peer connection created and negotiated inside the block can offer are
``127.0.0.1`` host candidates. :func:`selected_pairs` reports the addresses ICE actually chose, so
callers can verify it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection

__all__ = ["LOOPBACK", "local_candidate_hosts", "loopback_configuration", "loopback_ice", "selected_pairs"]

LOOPBACK = "127.0.0.1"


def _loopback_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
    return [LOOPBACK] if use_ipv4 else []


@contextlib.contextmanager
def loopback_ice() -> Iterator[RTCConfiguration]:
    """Restrict ICE host candidates to 127.0.0.1 while the block runs; yields the configuration
    (no STUN / TURN servers) to create the peer connections with. Gathering happens in
    ``setLocalDescription``, so negotiate inside the block."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = _loopback_addresses
    try:
        yield loopback_configuration()
    finally:
        aioice.ice.get_host_addresses = original


def loopback_configuration() -> RTCConfiguration:
    """An RTCConfiguration with no ICE servers: host candidates only, no STUN or TURN traffic."""
    return RTCConfiguration(iceServers=[])


def _ice_connections(pc: RTCPeerConnection) -> list[aioice.ice.Connection]:
    conns = []
    for t in pc.getTransceivers():
        for side in (t.sender, t.receiver):
            dtls = side.transport
            if dtls is not None:
                conn = dtls.transport.iceGatherer._connection
                if all(conn is not c for c in conns):
                    conns.append(conn)
    return conns


def selected_pairs(pc: RTCPeerConnection) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """``(local_addr, remote_addr)`` of every nominated ICE candidate pair of ``pc``."""
    return [
        (pair.local_addr, pair.remote_addr)
        for conn in _ice_connections(pc)
        for pair in conn._nominated.values()
    ]


def local_candidate_hosts(pc: RTCPeerConnection) -> set[str]:
    """The host addresses of every local ICE candidate ``pc`` gathered."""
    return {c.host for conn in _ice_connections(pc) for c in conn.local_candidates}

"""A WHIP publisher and a WHEP player made of GStreamer's ``webrtcbin``, for tests/test_gstreamer.py.

Run with Debian's Python and its PyGObject (``/usr/bin/python3``; the project's virtual
environment has no ``gi``), never imported by the tests: it uses only the standard library and
GStreamer (gstreamer1.0-plugins-bad: webrtcbin, dtls, srtp; gstreamer1.0-nice: the ICE agent;
gstreamer1.0-plugins-good: VP8, RTP; gstreamer1.0-plugins-base: Opus, decodebin; the gir1.2-gst-*
typelibs)::

    python3 tests/gst_webrtc.py probe
    python3 tests/gst_webrtc.py whip URL --wav FILE [--pem FILE] [--seconds S] [--hold]
    python3 tests/gst_webrtc.py whep URL [--pem FILE] [--seconds S] [--frames N]

``whip`` sends a WAV file (paced in real time, Opus) to a WHIP endpoint (RFC 9725); ``whep`` plays
a WHEP endpoint (recvonly VP8 video and Opus audio), decodes both and counts the frames and audio
samples. Each does the HTTP exchange itself: a complete offer (candidates gathered, no trickle)
POSTed as ``application/sdp``, the answer set as remote description, the resource in ``Location``
deleted at the end. The result is one JSON line on stdout; exit status 0 when the peer connected
and media flowed, 1 otherwise (with the reason in the JSON and on stderr).

``--pem``: the DTLS certificate and private key (PEM) webrtcbin uses instead of its own. GStreamer
1.22 generates an RSA certificate, which aiortc (whose certificate is ECDSA P-256, the one RFC 8827
requires every WebRTC endpoint to support) refuses with "no shared cipher"; with an ECDSA P-256
certificate the handshake works. It is set on each ``dtlssrtpdec`` as webrtcbin creates it (before
the offer, whose fingerprint is computed from it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

NEEDED = (
    "webrtcbin",
    "nicesrc",
    "nicesink",
    "dtlssrtpenc",
    "dtlssrtpdec",
    "srtpenc",
    "rtpopuspay",
    "rtpopusdepay",
    "rtpvp8depay",
    "opusenc",
    "opusdec",
    "vp8dec",
    "wavparse",
    "decodebin",
    "audioconvert",
    "audioresample",
    "videoconvert",
    "fakesink",
)
LIMIT = 20.0  # seconds: gathering, the HTTP exchange, connecting


class Failed(Exception):
    pass


def missing_elements() -> list[str]:
    return [name for name in NEEDED if Gst.ElementFactory.find(name) is None]


def _fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def descendants(bin_: Gst.Bin) -> list[Gst.Element]:
    """Every element inside ``bin_``, recursively (Gst.Iterator without gst-python's overrides)."""
    found: list[Gst.Element] = []
    it = bin_.iterate_recurse()
    while True:
        result, element = it.next()
        if result == Gst.IteratorResult.OK:
            found.append(element)
        elif result == Gst.IteratorResult.RESYNC:
            it.resync()
            found.clear()
        else:
            return found


def wait_promise(promise: Gst.Promise) -> Gst.Structure | None:
    if promise.wait() != Gst.PromiseResult.REPLIED:
        raise Failed("a webrtcbin operation was interrupted")
    return promise.get_reply()


class Peer:
    """A pipeline with one webrtcbin that offers, POSTs the offer and applies the answer."""

    def __init__(self, pipeline: Gst.Pipeline, pem: str | None) -> None:
        self.pipe = pipeline
        self.webrtc = pipeline.get_by_name("webrtc")
        self.candidates: list[tuple[int, str]] = []
        self.location: str | None = None
        self.pem = pem
        if pem is not None:
            # a transport's elements are made inside a bin that is then added to webrtcbin
            self.webrtc.connect("element-added", lambda _bin, element: self._use_pem(element))
            self.webrtc.connect("deep-element-added", lambda _bin, _sub, element: self._use_pem(element))

    def _use_pem(self, element: Gst.Element) -> None:
        """Give ``element`` (or, for a bin, every dtlssrtpdec inside it) our certificate."""
        for e in descendants(element) if isinstance(element, Gst.Bin) else [element]:
            factory = e.get_factory()
            if (
                factory is not None
                and factory.get_name() == "dtlssrtpdec"
                and e.get_property("pem") != self.pem
            ):
                e.set_property("pem", self.pem)

    def _fix_fingerprint(self, sdp: str) -> str:
        """The offer with our certificate's SHA-256 fingerprint. webrtcbin 1.22 hashes every
        base64 line of the PEM it was given, the private key's too, so the fingerprint it writes
        for a PEM with a key is not the certificate's: the one it wrote is checked (that webrtcbin
        took our PEM), then replaced by the certificate's own."""
        blocks = re.findall(r"-----BEGIN [A-Z ]+-----(.*?)-----END", self.pem, re.S)
        taken = _fingerprint(b"".join(base64.b64decode("".join(b.split())) for b in blocks))
        if f"a=fingerprint:sha-256 {taken}" not in sdp:
            raise Failed(
                "webrtcbin did not take the given certificate (its offer's fingerprint is another's)"
            )
        cert = _fingerprint(
            base64.b64decode(self.pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----")[0])
        )
        return sdp.replace(f"a=fingerprint:sha-256 {taken}", f"a=fingerprint:sha-256 {cert}")

    def _candidate(self, _webrtc, mline: int, candidate: str) -> None:
        self.candidates.append((mline, candidate))

    def negotiate(self, url: str) -> None:
        self.webrtc.connect("on-ice-candidate", self._candidate)
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise Failed("the pipeline did not start")
        if self.pem is not None:
            self._use_pem(self.webrtc)  # transports made before the signals were connected
        reply = wait_promise(self._emit("create-offer", None))
        offer = reply.get_value("offer")
        wait_promise(self._emit("set-local-description", offer))
        deadline = time.monotonic() + LIMIT
        while self.webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.check_bus()
            if time.monotonic() > deadline:
                break  # send what was gathered (as the page does)
            time.sleep(0.02)
        sdp = self._with_candidates(self.webrtc.get_property("local-description").sdp.as_text())
        if self.pem is not None:
            sdp = self._fix_fingerprint(sdp)
        request = urllib.request.Request(
            url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp"}
        )
        try:
            with urllib.request.urlopen(request, timeout=LIMIT) as res:
                status, answer = res.status, res.read().decode()
                location = res.headers.get("Location")
        except urllib.error.HTTPError as e:
            raise Failed(f"POST {url} answered {e.code}: {e.read().decode(errors='replace')[:200]}") from None
        if status != 201 or not location:
            raise Failed(f"POST {url} answered {status} without a Location")
        self.location = urllib.parse.urljoin(url, location)
        ok, msg = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            raise Failed("the answer is not SDP")
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        wait_promise(self._emit("set-remote-description", desc))

    def _emit(self, signal: str, arg) -> Gst.Promise:
        promise = Gst.Promise.new()
        self.webrtc.emit(signal, arg, promise)
        return promise

    def _with_candidates(self, sdp: str) -> str:
        """The offer with the gathered candidates in its media sections (webrtcbin reports them
        as events and may leave them out of the local description)."""
        if "a=candidate:" in sdp or not self.candidates:
            return sdp
        head, *sections = sdp.split("\r\nm=")
        for index in range(len(sections)):
            lines = [f"a={c}" for m, c in self.candidates if m == index]
            if lines:
                body = sections[index].rstrip("\r\n")
                sections[index] = body + "\r\n" + "\r\n".join([*lines, "a=end-of-candidates"]) + "\r\n"
        return "\r\nm=".join([head, *sections])

    def wait_connected(self) -> None:
        deadline = time.monotonic() + LIMIT
        want = GstWebRTC.WebRTCPeerConnectionState.CONNECTED
        while self.webrtc.get_property("connection-state") != want:
            self.check_bus()
            state = self.webrtc.get_property("connection-state")
            if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
                raise Failed("the peer connection failed (ICE or DTLS)")
            if time.monotonic() > deadline:
                ice = self.webrtc.get_property("ice-connection-state")
                raise Failed(
                    f"not connected within {LIMIT:g} s (connection {state.value_nick}, ICE {ice.value_nick})"
                )
            time.sleep(0.02)

    def check_bus(self) -> None:
        bus = self.pipe.get_bus()
        while (msg := bus.pop_filtered(Gst.MessageType.ERROR)) is not None:
            err, debug = msg.parse_error()
            raise Failed(f"GStreamer error from {msg.src.get_name()}: {err.message}")

    def run_for(self, seconds: float, done=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not done():
            self.check_bus()
            state = self.webrtc.get_property("connection-state")
            if state in (
                GstWebRTC.WebRTCPeerConnectionState.FAILED,
                GstWebRTC.WebRTCPeerConnectionState.CLOSED,
            ):
                raise Failed(f"the peer connection ended ({state.value_nick})")
            time.sleep(0.05)

    def close(self) -> int | None:
        """DELETE the resource (as a WHIP / WHEP client ends a session), then stop the pipeline.
        The DELETE's status, or None without a resource."""
        status = None
        if self.location is not None:
            request = urllib.request.Request(self.location, method="DELETE")
            try:
                with urllib.request.urlopen(request, timeout=LIMIT) as res:
                    status = res.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = None
        self.pipe.set_state(Gst.State.NULL)
        return status


def whip(url: str, wav: str, seconds: float, pem: str | None, hold: bool = False) -> dict:
    """Publish ``wav``; end after ``seconds`` or when the file has been sent (with ``hold``: once
    it has been sent and stdin is closed, so a caller decides when the session ends)."""
    pipe = Gst.parse_launch(
        "webrtcbin name=webrtc bundle-policy=max-bundle "
        f'filesrc location="{wav}" ! wavparse ! identity sync=true ! audioconvert ! audioresample '
        "! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 frame-size=20 "
        "! rtpopuspay name=pay pt=111 "
        "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc."
    )
    peer = Peer(pipe, pem)
    sent = {"buffers": 0}
    eos = threading.Event()  # the whole file went through the payloader

    def payloaded(_pad, info) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER:
            sent["buffers"] += 1
        elif info.get_event() is not None and info.get_event().type == Gst.EventType.EOS:
            eos.set()
        return Gst.PadProbeReturn.OK

    kinds = Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM
    pipe.get_by_name("pay").get_static_pad("src").add_probe(kinds, payloaded)
    try:
        peer.negotiate(url)
        peer.wait_connected()
        released = threading.Event()
        if hold:
            threading.Thread(target=lambda: (sys.stdin.read(), released.set()), daemon=True).start()
        else:
            released.set()
        peer.run_for(seconds, lambda: eos.is_set() and released.is_set())
        return {
            "connected": True,
            "rtp_packets": sent["buffers"],
            "eos": eos.is_set(),
            "location": peer.location,
            "delete": peer.close(),
        }
    except BaseException:
        peer.close()
        raise


def whep(url: str, seconds: float, pem: str | None, frames: int | None = None) -> dict:
    """Play ``url`` for ``seconds`` (with ``frames``: until that many video frames were decoded,
    at most ``seconds``). The result counts the decoded video frames (their size, the frame rate
    between the first and the last) and the audio samples (per channel)."""
    pipe = Gst.Pipeline.new("whep")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipe.add(webrtc)
    recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
    for caps in (
        "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2",
    ):
        webrtc.emit("add-transceiver", recv, Gst.Caps.from_string(caps))
    got = {"video_frames": 0, "audio_buffers": 0, "audio_samples": 0, "width": None, "height": None}
    lock = threading.Lock()

    def on_video(_sink, buf, pad) -> None:
        with lock:
            got["video_frames"] += 1
            now = time.monotonic()
            got["first_frame_t"] = got.get("first_frame_t", now)
            got["last_frame_t"] = now
            if got["width"] is None:
                s = pad.get_current_caps().get_structure(0)
                got["width"], got["height"] = s.get_value("width"), s.get_value("height")

    def on_audio(_sink, buf, pad) -> None:
        s = pad.get_current_caps().get_structure(0)
        with lock:
            got["audio_buffers"] += 1
            got["audio_samples"] += buf.get_size() // (2 * s.get_value("channels"))

    def decoded(_decodebin, pad) -> None:
        kind = pad.get_current_caps().get_structure(0).get_name()
        if kind.startswith("video/"):
            chain = (
                "videoconvert ! video/x-raw,format=I420 ! fakesink name=sink signal-handoffs=true sync=false"
            )
        elif kind.startswith("audio/"):
            chain = (
                "audioconvert ! audio/x-raw,format=S16LE ! fakesink name=sink signal-handoffs=true sync=false"
            )
        else:
            return
        sink_bin = Gst.parse_bin_from_description(chain, True)
        pipe.add(sink_bin)
        sink_bin.sync_state_with_parent()
        sink = sink_bin.get_by_name("sink")
        sink.connect("handoff", on_video if kind.startswith("video/") else on_audio)
        pad.link(sink_bin.get_static_pad("sink"))

    def incoming(_webrtc, pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        dec = Gst.ElementFactory.make("decodebin")
        dec.connect("pad-added", decoded)
        pipe.add(dec)
        dec.sync_state_with_parent()
        pad.link(dec.get_static_pad("sink"))

    webrtc.connect("pad-added", incoming)
    peer = Peer(pipe, pem)
    try:
        peer.negotiate(url)
        peer.wait_connected()
        started = time.monotonic()
        peer.run_for(seconds, lambda: frames is not None and got["video_frames"] >= frames)
        with lock:
            result = dict(got)
        first, last = result.pop("first_frame_t", None), result.pop("last_frame_t", None)
        n = result["video_frames"]
        result["fps"] = (n - 1) / (last - first) if n > 1 and last > first else 0.0
        result.update(connected=True, seconds=time.monotonic() - started, location=peer.location)
        result["delete"] = peer.close()
        return result
    except BaseException:
        peer.close()
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gst_webrtc.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="the GStreamer version and the elements that are missing")
    for name in ("whip", "whep"):
        c = sub.add_parser(name)
        c.add_argument("url")
        c.add_argument("--pem", help="DTLS certificate and private key (PEM file) instead of webrtcbin's own")
        c.add_argument("--seconds", type=float, default=5.0)
        if name == "whip":
            c.add_argument("--wav", required=True)
            c.add_argument("--hold", action="store_true", help="after the file, wait for stdin to close")
        else:
            c.add_argument("--frames", type=int, help="stop once this many video frames were decoded")
    args = p.parse_args(argv)
    Gst.init(None)
    if args.cmd == "probe":
        print(json.dumps({"version": Gst.version_string(), "missing": missing_elements()}))
        return 0
    pem = open(args.pem).read() if args.pem else None
    try:
        if args.cmd == "whip":
            result = whip(args.url, args.wav, args.seconds, pem, args.hold)
        else:
            result = whep(args.url, args.seconds, pem, args.frames)
    except Failed as e:
        print(json.dumps({"connected": False, "error": str(e)}), flush=True)
        print(f"gst_webrtc.py {args.cmd}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

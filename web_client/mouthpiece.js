// mouthpiece.js: the embeddable client of a mouthpiece server (an ES module, no build step).
//
//   import { connect } from "https://avatar.example/static/mouthpiece.js";
//   const avatar = await connect("https://avatar.example", { avatar: "presenter", token, microphone: true });
//   video.srcObject = avatar.stream;          // the avatar's video and the voice delayed to match it
//   avatar.addEventListener("stats", (e) => console.log(e.detail.fps));
//   await avatar.switchAvatar("other");  avatar.flush();  await avatar.close();
//
// One session is one RTCPeerConnection to the server (POST /offer, docs/api.md): the microphone goes
// up on an audio transceiver (sendrecv: the delayed voice comes back on it), the avatar comes back on
// a recvonly video transceiver, and a data channel "control" carries JSON control messages (flush,
// switch_avatar, stats; the server pushes stats every 0.5 s). aiortc does not trickle ICE, so the
// offer is sent once candidate gathering is complete (or after `gatherLimitMs`).
//
// Every message the server sends on the data channel is dispatched on the session (an EventTarget)
// as a CustomEvent whose type is the message's `type` and whose `detail` is the message: "stats",
// "avatar", "flush", "error", "playback_started", "playback_finished", ... (a type the server adds
// later arrives the same way); "message" is dispatched for every one of them too, and "closed" once
// when the session ends (closed here, by the server, or the network path failed).
//
// installCamera() makes the avatar a camera for pages that know nothing of mouthpiece (docs/calls.md).
//
// Served as is by the server (/static/mouthpiece.js); VERSION is the server's version (a test
// compares them).

/** The version of the mouthpiece server this module belongs to. */
export const VERSION = "0.1.0";

/** The `deviceId` and label of the avatar's camera and voice (installCamera). */
export const CAMERA_ID = "mouthpiece-avatar";
export const VOICE_ID = "mouthpiece-voice";
export const CAMERA_LABEL = "mouthpiece avatar";
export const VOICE_LABEL = "mouthpiece voice";

const GATHER_LIMIT_MS = 3000;
const CONNECT_LIMIT_MS = 20000;
const REPLY_LIMIT_MS = 20000;
const TYPE_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;

/** An error whose message is meant for people: `code` is the server's error code (or the module's). */
export class MouthpieceError extends Error {
  /**
   * @param {string} message one plain sentence
   * @param {string} [code] e.g. "busy", "unknown_avatar", "network", "microphone"
   * @param {number} [status] the HTTP status, when the server answered one
   */
  constructor(message, code = "error", status = 0) {
    super(message);
    this.name = "MouthpieceError";
    this.code = code;
    this.status = status;
  }
}

/** The server wants a token (none was given, or it refused the one given: `code` says which). */
export class AuthError extends MouthpieceError {
  constructor(message, code, status = 401) {
    super(message, code, status);
    this.name = "AuthError";
  }
}

/** `base` (absolute, or relative to this page) + `path`, as a string URL. */
function endpoint(base, path) {
  const root = new URL(base || "/", globalThis.location ? globalThis.location.href : undefined);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  return new URL(path.replace(/^\//, ""), root).toString();
}

/**
 * fetch() with `Authorization: Bearer TOKEN` when a token is given; a 401 throws an AuthError.
 * @param {string} url
 * @param {RequestInit} [init]
 * @param {string|null} [token]
 * @returns {Promise<Response>}
 */
export async function request(url, init = {}, token = null) {
  const headers = { ...(init.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { ...init, headers });
  if (res.status === 401) {
    throw token
      ? new AuthError("The server did not accept that access token.", "invalid_token")
      : new AuthError(
          "This server needs an access token (the one it was started with: --token or MOUTHPIECE_TOKEN).",
          "unauthorized",
        );
  }
  return res;
}

/** The microphone track `option` names (a track, a stream's first audio track, or true: a new one). */
async function microphoneTrack(option) {
  if (option && typeof option === "object" && option.kind === "audio") return { track: option, own: null };
  if (option && typeof option.getAudioTracks === "function") {
    const track = option.getAudioTracks()[0];
    if (!track) throw new MouthpieceError("The microphone stream has no audio track.", "microphone");
    return { track, own: null };
  }
  if (option !== true && option !== undefined) {
    throw new MouthpieceError(
      "microphone must be a MediaStreamTrack, a MediaStream or true (ask the browser for one).",
      "microphone",
    );
  }
  const media = globalThis.navigator && navigator.mediaDevices;
  const gum = media && (media.__mouthpieceRealGetUserMedia || media.getUserMedia);
  if (!gum) {
    throw new MouthpieceError(
      "This browser gives no microphone access here: open the page over https or as http://localhost.",
      "microphone",
    );
  }
  let stream;
  try {
    stream = await gum.call(media, {
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      video: false,
    });
  } catch (err) {
    throw microphoneError(err);
  }
  const track = stream.getAudioTracks()[0];
  return { track, own: stream };
}

/** A getUserMedia failure as a MouthpieceError with a sentence for people. */
export function microphoneError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new MouthpieceError(
      "Microphone permission was denied. Allow the microphone for this page (the icon in the address bar).",
      "microphone_denied",
    );
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new MouthpieceError("No microphone was found. Connect one.", "microphone_missing");
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return new MouthpieceError(
      "The microphone could not be opened: another application may be using it.",
      "microphone_busy",
    );
  }
  return new MouthpieceError(
    `The microphone could not be opened: ${err && err.message ? err.message : err}`,
    "microphone",
  );
}

function gatheringComplete(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, limitMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function connectedOrFailed(pc, limitMs, signal) {
  if (pc.connectionState === "connected") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (err) => {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      if (signal) signal.removeEventListener("abort", check);
      if (err) reject(err);
      else resolve();
    };
    const check = () => {
      if (signal && signal.aborted) finish(aborted());
      else if (pc.connectionState === "connected") finish(null);
      else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        finish(new MouthpieceError("Could not connect to the server: the network path failed (ICE / DTLS).", "network"));
      }
    };
    const timer = setTimeout(
      () => finish(new MouthpieceError("Could not connect to the server: no network path was found in time.", "network")),
      limitMs,
    );
    pc.addEventListener("connectionstatechange", check);
    if (signal) signal.addEventListener("abort", check);
  });
}

function channelOpen(dc, limitMs, signal) {
  if (dc.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (err) => {
      clearTimeout(timer);
      dc.removeEventListener("open", check);
      dc.removeEventListener("close", check);
      if (signal) signal.removeEventListener("abort", check);
      if (err) reject(err);
      else resolve();
    };
    const check = () => {
      if (signal && signal.aborted) finish(aborted());
      else if (dc.readyState === "open") finish(null);
      else if (dc.readyState === "closed") finish(new MouthpieceError("The server closed the control channel.", "network"));
    };
    const timer = setTimeout(
      () => finish(new MouthpieceError("The server did not open the control channel in time.", "network")),
      limitMs,
    );
    dc.addEventListener("open", check);
    dc.addEventListener("close", check);
    if (signal) signal.addEventListener("abort", check);
  });
}

function aborted() {
  return new DOMException("The session was abandoned before it was up.", "AbortError");
}

/**
 * A live session with the avatar: `stream` (its video and the delayed voice), its controls and its
 * events. Made by connect().
 */
export class Session extends EventTarget {
  constructor(base, token, pc, dc, sender, ownMic) {
    super();
    /** The server's base URL. */
    this.url = base;
    /** The session's id on the server (GET/DELETE /api/sessions/{id}). */
    this.id = null;
    /** The avatar asked for (or switched to, once the server confirmed it). */
    this.avatar = null;
    /** @type {RTCPeerConnection} */
    this.pc = pc;
    /** @type {RTCDataChannel} the control channel */
    this.channel = dc;
    /** @type {RTCRtpSender} the sender of the microphone (replaceMicrophone changes its track) */
    this.sender = sender;
    /** @type {MediaStream} the avatar's video track and the delayed voice (one track each) */
    this.stream = new MediaStream();
    /** The latest "stats" message. */
    this.lastStats = null;
    /** Whether the session has ended. */
    this.closed = false;
    this._token = token;
    this._ownMic = ownMic;
    this._pending = [];
    pc.addEventListener("track", (e) => {
      for (const t of this.stream.getTracks()) if (t.kind === e.track.kind) this.stream.removeTrack(t);
      this.stream.addTrack(e.track);
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") this._end("the network path to the server failed");
    });
    dc.addEventListener("close", () => this._end("the server ended the session"));
    dc.addEventListener("message", (e) => this._onMessage(e.data));
  }

  /** The avatar's video track. @type {MediaStreamTrack|null} */
  get videoTrack() {
    return this.stream.getVideoTracks()[0] || null;
  }

  /** The delayed voice (in time with the avatar's lips). @type {MediaStreamTrack|null} */
  get audioTrack() {
    return this.stream.getAudioTracks()[0] || null;
  }

  _onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string" || !TYPE_PATTERN.test(msg.type)) return;
    if (msg.type === "stats") this.lastStats = msg;
    if (msg.type === "avatar") this.avatar = msg.avatar;
    const waiter = this._pending.find((p) => p.accepts(msg));
    if (waiter) {
      this._pending.splice(this._pending.indexOf(waiter), 1);
      waiter.settle(msg);
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
  }

  /**
   * Send one control message (docs/api.md); false when the channel is not open.
   * @param {object} msg e.g. {type: "stats"}
   */
  send(msg) {
    if (this.closed || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(msg));
    return true;
  }

  /** Send `msg` and resolve with the reply `accepts` picks (an "error" reply rejects). */
  _ask(msg, accepts) {
    return new Promise((resolve, reject) => {
      const entry = {
        accepts: (m) => accepts(m) || m.type === "error",
        settle: (m) => {
          clearTimeout(entry.timer);
          if (m.type === "error") reject(new MouthpieceError(m.message || m.error, m.error));
          else resolve(m);
        },
      };
      entry.timer = setTimeout(() => {
        const i = this._pending.indexOf(entry);
        if (i >= 0) this._pending.splice(i, 1);
        reject(new MouthpieceError("The server did not answer in time.", "timeout"));
      }, REPLY_LIMIT_MS);
      this._pending.push(entry);
      if (!this.send(msg)) {
        this._pending.splice(this._pending.indexOf(entry), 1);
        clearTimeout(entry.timer);
        reject(new MouthpieceError("The session's control channel is not open.", "closed"));
      }
    });
  }

  /** Drop the queued audio and frames at once (an interruption); resolves at the server's reply. */
  flush() {
    return this._ask({ type: "flush" }, (m) => m.type === "flush");
  }

  /** Switch to the avatar `name`; resolves with its name once the server switched (an error rejects). */
  async switchAvatar(name) {
    const reply = await this._ask({ type: "switch_avatar", avatar: name }, (m) => m.type === "avatar");
    return reply.avatar;
  }

  /** The server's stats now (also pushed every 0.5 s as "stats" events). */
  stats() {
    return this._ask({ type: "stats" }, (m) => m.type === "stats");
  }

  /** Feed the avatar from another audio track (a file, another microphone) in the same session. */
  async replaceMicrophone(track) {
    await this.sender.replaceTrack(track);
  }

  _end(why) {
    if (this.closed) return false;
    this.closed = true;
    for (const p of this._pending.splice(0)) p.settle({ type: "error", error: "closed", message: why });
    this.dispatchEvent(new CustomEvent("closed", { detail: { reason: why } }));
    return true;
  }

  /** End the session (the server's side at once, DELETE), stop its tracks and a microphone it opened. */
  async close() {
    this._end("closed");
    const { pc, channel } = this;
    try {
      channel.close();
    } catch {
      // already closed
    }
    for (const t of pc.getTransceivers()) {
      try {
        t.stop();
      } catch {
        // already stopped
      }
    }
    pc.close();
    for (const t of this.stream.getTracks()) t.stop();
    if (this._ownMic) for (const t of this._ownMic.getTracks()) t.stop();
    this._ownMic = null;
    if (this.id) {
      const id = this.id;
      this.id = null;
      await request(endpoint(this.url, `api/sessions/${encodeURIComponent(id)}`), { method: "DELETE", keepalive: true }, this._token)
        .then(() => {})
        .catch(() => {});
    }
  }
}

/**
 * Start a session with the avatar on the server at `url`.
 *
 * @param {string} url the server's base URL ("" or "/": this page's server)
 * @param {object} [options]
 * @param {string} [options.avatar] the avatar's name (default: the server's default)
 * @param {string} [options.token] the server's access token (sent as Authorization: Bearer)
 * @param {MediaStreamTrack|MediaStream|true} [options.microphone] the voice that drives the avatar
 *   (true, the default: ask the browser for the microphone; closed with the session)
 * @param {RTCIceServer[]} [options.iceServers] STUN / TURN (default: the server's, from /api/info)
 * @param {RTCIceTransportPolicy} [options.iceTransportPolicy] "relay" for TURN only
 * @param {AbortSignal} [options.signal] abandon the session while it is being set up
 * @param {boolean} [options.turns] the turn-taking events "playback_started" / "playback_finished"
 *   (default true: the module asks the server for them once the control channel is open)
 * @returns {Promise<Session>} once the media path and the control channel are up
 */
export async function connect(url, options = {}) {
  const token = options.token || null;
  const signal = options.signal || null;
  const { track, own } = await microphoneTrack(options.microphone === undefined ? true : options.microphone);
  let pc = null;
  try {
    let iceServers = options.iceServers;
    if (!iceServers) {
      const res = await request(endpoint(url, "api/info"), { headers: { Accept: "application/json" } }, token);
      if (!res.ok) throw new MouthpieceError(`The server answered ${res.status} to /api/info.`, "server", res.status);
      const info = await res.json();
      iceServers = Array.isArray(info.ice_servers) ? info.ice_servers : [];
    }
    const config = { iceServers: iceServers.map((s) => (typeof s === "string" ? { urls: s } : s)) };
    if (options.iceTransportPolicy) config.iceTransportPolicy = options.iceTransportPolicy;
    if (signal && signal.aborted) throw aborted();
    pc = new RTCPeerConnection(config);
    const audio = pc.addTransceiver(track, { direction: "sendrecv", streams: [new MediaStream([track])] });
    pc.addTransceiver("video", { direction: "recvonly" });
    const dc = pc.createDataChannel("control");
    const session = new Session(url, token, pc, dc, audio.sender, own);
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, options.gatherLimitMs || GATHER_LIMIT_MS);
    if (signal && signal.aborted) throw aborted();
    session.avatar = options.avatar || null;
    const res = await request(
      endpoint(url, "offer"),
      {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", avatar: session.avatar || undefined }),
        signal: signal || undefined,
      },
      token,
    );
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok || !body || body.type !== "answer") {
      const code = body && typeof body.error === "string" ? body.error : "refused";
      if (code === "busy") throw new MouthpieceError(body.message || "The server is busy.", code, res.status);
      const why = body && body.message ? body.message : `the server answered ${res.status} ${res.statusText}`;
      throw new MouthpieceError(`The server refused the session: ${why}`, code, res.status);
    }
    session.id = body.session;
    if (signal && signal.aborted) {
      await session.close();
      throw aborted();
    }
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    try {
      await connectedOrFailed(pc, options.connectLimitMs || CONNECT_LIMIT_MS, signal);
      await channelOpen(dc, options.connectLimitMs || CONNECT_LIMIT_MS, signal);
      if (options.turns !== false) session.send({ type: "events", turns: true });
    } catch (err) {
      await session.close();
      throw err;
    }
    return session;
  } catch (err) {
    if (pc && pc.connectionState !== "closed") pc.close();
    if (own) for (const t of own.getTracks()) t.stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// the drop-in camera
// ---------------------------------------------------------------------------------------------

function device(deviceId, kind, label) {
  const info = { deviceId, kind, label, groupId: "mouthpiece" };
  return { ...info, toJSON: () => info };
}

/** Whether a getUserMedia constraint (true, {deviceId: ...}, {deviceId: {exact|ideal}}) names `id`. */
function names(constraint, id) {
  if (!constraint || typeof constraint !== "object") return false;
  const d = constraint.deviceId;
  if (d === undefined || d === null) return false;
  const values = typeof d === "object" && !Array.isArray(d) ? [].concat(d.exact ?? [], d.ideal ?? []) : [].concat(d);
  return values.includes(id);
}

/** A clone of `track` whose stop() also tells `release` (a page's stop() fires no event). */
function handedOut(track, release) {
  const t = track.clone();
  const stop = t.stop.bind(t);
  let done = false;
  t.stop = () => {
    stop();
    if (!done) {
      done = true;
      release();
    }
  };
  return t;
}

/**
 * Offer the avatar as a camera ("mouthpiece avatar") and its delayed voice as a microphone
 * ("mouthpiece voice") to the pages' own getUserMedia / enumerateDevices, so a call app that knows
 * nothing of mouthpiece can pick them. A request for those devices (or, with `options.default`, any
 * video request) gets the avatar: the real microphone (the request's audio constraints, else the
 * default one) drives it, and a request for audio and video gets the delayed voice as its audio so
 * that lips and voice stay together. Every other request goes to the real devices. One session is
 * shared by the tracks handed out; it ends when the last of them is stopped.
 *
 * @param {string} url the server's base URL
 * @param {object} [options] connect()'s options (avatar, token, iceServers) and:
 * @param {boolean} [options.default] give the avatar to every request for video
 * @returns {{uninstall: () => void, session: () => Session|null}}
 */
export function installCamera(url, options = {}) {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) {
    throw new MouthpieceError("This browser gives no camera access here: open the page over https.", "camera");
  }
  if (media.__mouthpieceRealGetUserMedia) throw new MouthpieceError("The avatar camera is installed already.", "camera");
  const realGetUserMedia = media.getUserMedia;
  const realEnumerate = media.enumerateDevices;
  media.__mouthpieceRealGetUserMedia = realGetUserMedia;
  let current = null; // {session: Promise<Session>, users}

  const acquire = (audio) => {
    if (!current) {
      const entry = { users: 0, mic: null, audio };
      entry.session = (async () => {
        const mic = await realGetUserMedia.call(media, { audio: entry.audio || true, video: false });
        entry.mic = mic;
        try {
          return await connect(url, { ...options, microphone: mic.getAudioTracks()[0] });
        } catch (err) {
          for (const t of mic.getTracks()) t.stop();
          throw err;
        }
      })();
      entry.session.then((s) => s.addEventListener("closed", () => {
        if (current === entry) current = null;
      }), () => {
        if (current === entry) current = null;
      });
      current = entry;
    }
    return current;
  };
  const release = (entry) => {
    entry.users -= 1;
    if (entry.users > 0) return;
    if (current === entry) current = null;
    entry.session.then(async (s) => {
      await s.close();
      if (entry.mic) for (const t of entry.mic.getTracks()) t.stop();
    }, () => {});
  };

  media.getUserMedia = async function getUserMedia(constraints = {}) {
    const wantsCamera = names(constraints.video, CAMERA_ID) || (options.default && !!constraints.video);
    const wantsVoice = names(constraints.audio, VOICE_ID);
    if (!wantsCamera && !wantsVoice) return realGetUserMedia.call(media, constraints);
    const audio = constraints.audio && typeof constraints.audio === "object" && !wantsVoice ? constraints.audio : null;
    const entry = acquire(audio);
    const session = await entry.session;
    const tracks = [];
    if (wantsCamera || constraints.video) tracks.push(session.videoTrack);
    if (wantsVoice || constraints.audio) tracks.push(session.audioTrack);
    const out = tracks.filter(Boolean).map((t) => {
      entry.users += 1;
      return handedOut(t, () => release(entry));
    });
    return new MediaStream(out);
  };

  media.enumerateDevices = async function enumerateDevices() {
    const list = await realEnumerate.call(media);
    return [...list, device(CAMERA_ID, "videoinput", CAMERA_LABEL), device(VOICE_ID, "audioinput", VOICE_LABEL)];
  };

  return {
    uninstall() {
      media.getUserMedia = realGetUserMedia;
      media.enumerateDevices = realEnumerate;
      delete media.__mouthpieceRealGetUserMedia;
    },
    session: () => current && current.session,
  };
}

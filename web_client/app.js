// mouthpiece web client: one page, vanilla JS, no build step, no outside URLs.
//
// A session is made by the embeddable client, mouthpiece.js (connect(): one RTCPeerConnection to
// the server, POST /offer: the microphone or an audio file goes up, the avatar's video and delayed
// audio come back, and the data channel "control" carries flush, switch_avatar and stats, whose
// messages arrive as events of the session). This page adds the controls, the file source and the
// figures.
//
// ICE servers: the page uses the STUN / TURN servers the server lists in /api/info (`ice_servers`,
// RTCIceServer dictionaries; none for a local or LAN server). With `?relay=1` in the page's address
// ICE is relay-only (iceTransportPolicy "relay": every packet goes through the TURN server), for
// networks that allow nothing else and to check a TURN deployment (docs/deploy.md).
//
// Access token: a server started with --token (or MOUTHPIECE_TOKEN) answers 401 to the API without
// it. The page then asks for the token in a small form, keeps it in sessionStorage (this tab only,
// gone when the tab closes) and sends it as `Authorization: Bearer` on every request (api()); a
// token the server refuses is forgotten and asked for again (docs/security.md).

import { AuthError as ClientAuthError, MouthpieceError, connect as connectSession, request } from "./mouthpiece.js";

const FILE_LOAD_LIMIT_MS = 15000;
const FPS_WINDOW_MS = 2000;
const TOKEN_KEY = "mouthpiece.token";
const RELAY_ONLY = ["1", "true", "yes"].includes(new URLSearchParams(location.search).get("relay"));

const $ = (id) => document.getElementById(id);
const ui = {
  mode: $("mode"),
  banner: $("banner"),
  bannerTitle: $("banner-title"),
  bannerText: $("banner-text"),
  video: $("video"),
  screen: document.querySelector(".screen"),
  placeholder: $("placeholder"),
  overlay: $("overlay"),
  statFps: $("stat-fps"),
  statShown: $("stat-shown"),
  statLatency: $("stat-latency"),
  statDropped: $("stat-dropped"),
  statLate: $("stat-late"),
  statSpeaking: $("stat-speaking"),
  status: $("status"),
  error: $("error"),
  avatar: $("avatar"),
  poster: $("poster"),
  start: $("start"),
  stop: $("stop"),
  hear: $("hear"),
  file: $("file"),
  playFile: $("play-file"),
  useMic: $("use-mic"),
  flush: $("flush"),
  auth: $("auth"),
  authMessage: $("auth-message"),
  token: $("token"),
  sessionInfo: $("session-info"),
  stagesBody: document.querySelector("#stages tbody"),
  pathBody: document.querySelector("#path tbody"),
};

/** An error whose message is meant for the person using the page. */
class UserError extends Error {}

/** The server wants a token (none was given, or it refused the one given). */
class AuthError extends UserError {}

// ---------------------------------------------------------------------------------------------
// the access token
// ---------------------------------------------------------------------------------------------

let token = readToken();
let posterURL = null; // the object URL of the poster shown
let posterGen = 0;

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage disabled: the token lasts as long as the page
  }
}

function keepToken(value) {
  token = value;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: keep it in memory only
  }
}

/** fetch() with the token (when there is one); a 401 forgets it and throws an AuthError. */
async function api(url, options = {}) {
  const headers = { ...(options.headers || {}) };
  const sent = token;
  try {
    return await request(url, { ...options, headers }, sent);
  } catch (err) {
    if (err instanceof ClientAuthError) throw authError(sent);
    throw err;
  }
}

/** The page's AuthError for a 401 to a request sent with ``sent`` (forgets a refused token). */
function authError(sent) {
  if (sent && token === sent) keepToken(null);
  return new AuthError(
    sent
      ? "The server did not accept that access token. Check it and enter it again."
      : "This server needs an access token (the one it was started with: --token or MOUTHPIECE_TOKEN).",
  );
}

/** Show the token form with ``message``; resolves once a token was entered (and kept). */
function askToken(message) {
  ui.authMessage.textContent = message;
  ui.auth.hidden = false;
  ui.token.value = "";
  ui.token.focus();
  return new Promise((resolve) => {
    ui.auth.onsubmit = (event) => {
      event.preventDefault();
      const value = ui.token.value.trim();
      if (!value) {
        ui.authMessage.textContent = "Enter the access token first.";
        ui.token.focus();
        return;
      }
      keepToken(value);
      ui.token.value = "";
      ui.auth.hidden = true;
      ui.auth.onsubmit = null;
      resolve(value);
    };
  });
}

const state = {
  info: null, // GET /api/info
  phase: "idle", // "idle" | "starting" | "live"
  gen: 0, // incremented by every start and stop: stale async work checks it and gives up
  client: null, // the mouthpiece.js Session
  abort: null, // the AbortController of a session being set up
  pc: null,
  dc: null,
  sender: null, // the RTCRtpSender of the audio transceiver
  session: null,
  avatar: null, // the avatar the session was asked for (or switched to)
  source: null, // "microphone" | "file"
  mic: null, // MediaStream from getUserMedia
  file: null, // { name, url, audio, ctx, track }
  remote: null, // MediaStream shown by the video element
  statsTimer: null,
  frameMarks: [], // requestVideoFrameCallback times (ms) of the last FPS_WINDOW_MS
  framesShown: 0,
  rvfc: null,
  browserFps: null,
  serverStats: null, // the latest stats message
  rtcPrev: null, // the previous getStats() sample (for rates over the last interval)
  path: null, // the browser's side of the latency (see collectPath)
};

// ---------------------------------------------------------------------------------------------
// status, errors, controls
// ---------------------------------------------------------------------------------------------

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text || "";
  ui.error.hidden = !text;
}

function describe(err) {
  if (err instanceof UserError || err instanceof MouthpieceError) return err.message;
  return `Something went wrong: ${err && err.message ? err.message : err}`;
}

function refreshControls() {
  const idle = state.phase === "idle";
  const live = state.phase === "live";
  const channelOpen = !!state.dc && state.dc.readyState === "open";
  const loaded = !!state.info; // not before the server answered (nor while it waits for the token)
  ui.start.disabled = !idle || !loaded || ui.avatar.options.length === 0;
  ui.stop.disabled = idle;
  ui.playFile.disabled =
    !loaded || state.phase === "starting" || !ui.file.files || ui.file.files.length === 0;
  ui.useMic.disabled = !live || state.source !== "file";
  ui.flush.disabled = !live || !channelOpen;
  ui.overlay.hidden = idle;
}

// ---------------------------------------------------------------------------------------------
// server info and avatars
// ---------------------------------------------------------------------------------------------

async function getJSON(url) {
  const res = await api(url, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new UserError(`${url} answered ${res.status} ${res.statusText}`);
  return res.json();
}

async function loadInfo() {
  const info = await getJSON("/api/info");
  const labels = {
    neural: "neural",
    preview: "preview renderer",
    passthrough: "passthrough (no renderer)",
  };
  ui.mode.textContent = labels[info.mode] || info.mode;
  ui.mode.dataset.mode = info.mode;
  if (info.message) {
    const titles = {
      passthrough: "Running without a renderer",
      preview: "Preview: the mouth is drawn from the avatar's own frames",
    };
    ui.bannerTitle.textContent = titles[info.mode] || "Note";
    ui.bannerText.textContent = info.message;
    ui.banner.dataset.mode = info.mode;
    ui.banner.hidden = false;
  } else {
    ui.banner.hidden = true;
  }
  return info;
}

async function loadAvatars() {
  const data = await getJSON("/api/avatars");
  const chosen = ui.avatar.value;
  ui.avatar.replaceChildren();
  for (const a of data.avatars) {
    const opt = document.createElement("option");
    opt.value = a.name;
    let text = a.name;
    if (a.default) text += " (default)";
    if (a.error) text += " (could not be prepared)";
    opt.textContent = text;
    opt.title = a.error ? `${a.source}: ${a.message || a.error}` : a.source;
    opt.disabled = !!a.error;
    ui.avatar.append(opt);
  }
  const names = data.avatars.map((a) => a.name);
  ui.avatar.value = names.includes(chosen) ? chosen : data.default;
  ui.avatar.disabled = names.length === 0;
  showPoster(ui.avatar.value);
}

async function showPoster(name) {
  const gen = ++posterGen;
  if (!name) {
    ui.poster.hidden = true;
    return;
  }
  const url = `/api/avatars/${encodeURIComponent(name)}/poster.jpg`;
  let src = url;
  if (token) {
    // an <img src> cannot carry the token: fetch the image with it and show it from a blob
    let blob = null;
    try {
      const res = await api(url);
      if (res.ok) blob = await res.blob();
    } catch {
      blob = null; // no poster is no error of the session
    }
    if (gen !== posterGen) return;
    src = blob ? URL.createObjectURL(blob) : null;
  }
  if (posterURL) URL.revokeObjectURL(posterURL);
  posterURL = src && src !== url ? src : null;
  if (!src) {
    ui.poster.hidden = true;
    return;
  }
  ui.poster.alt = `Poster of the avatar ${name}`;
  ui.poster.onload = () => (ui.poster.hidden = false);
  ui.poster.onerror = () => (ui.poster.hidden = true);
  ui.poster.src = src;
}

function onAvatarChange() {
  const name = ui.avatar.value;
  showPoster(name);
  if (state.phase === "live" && state.dc && state.dc.readyState === "open") {
    setStatus(`Switching to the avatar ${name}…`);
    sendControl({ type: "switch_avatar", avatar: name });
  }
}

// ---------------------------------------------------------------------------------------------
// audio sources: microphone and file
// ---------------------------------------------------------------------------------------------

/** The microphone stream (state.mic, or a new one the caller keeps or stops). */
async function getMicrophone() {
  if (state.mic) return state.mic;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new UserError(
      "This browser gives no microphone access here: open the page over https or as http://localhost."
    );
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
        channelCount: 1,
      },
      video: false,
    });
  } catch (err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      throw new UserError(
        "Microphone permission was denied. Allow the microphone for this page (the icon in the " +
          "address bar) and press Start again, or stream an audio file instead."
      );
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      throw new UserError("No microphone was found. Connect one, or stream an audio file instead.");
    }
    if (name === "NotReadableError" || name === "AbortError") {
      throw new UserError(
        "The microphone could not be opened: another application may be using it."
      );
    }
    throw new UserError(`The microphone could not be opened: ${err && err.message ? err.message : err}`);
  }
  const track = stream.getAudioTracks()[0];
  track.addEventListener("ended", () => {
    if (state.mic === stream && state.phase !== "idle" && state.source === "microphone") {
      showError("The microphone stopped (unplugged or taken by another application).");
    }
  });
  return stream;
}

/** Keep a stream from getMicrophone() when the work that asked for it is still current. */
function keepMicrophone(stream, current) {
  if (stream === state.mic) return current;
  if (!current) {
    for (const t of stream.getTracks()) t.stop();
    return false;
  }
  state.mic = stream;
  return true;
}

function releaseMicrophone() {
  if (state.mic) {
    for (const t of state.mic.getTracks()) t.stop();
    state.mic = null;
  }
}

/** Load an audio (or video) file into an <audio> element routed through WebAudio into a
 * MediaStream track; playback starts with playFile(). Nothing is played locally: the avatar's
 * audio comes back from the server, in time with the lips. */
async function openFile(file) {
  const url = URL.createObjectURL(file);
  const audio = new Audio();
  audio.preload = "auto";
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new UserError(`Reading “${file.name}” took too long.`)),
        FILE_LOAD_LIMIT_MS
      );
      audio.addEventListener(
        "canplay",
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true }
      );
      audio.addEventListener(
        "error",
        () => {
          clearTimeout(timer);
          reject(new UserError(`“${file.name}” could not be decoded as audio by this browser.`));
        },
        { once: true }
      );
      audio.src = url;
    });
  } catch (err) {
    URL.revokeObjectURL(url);
    throw err;
  }
  const ctx = new AudioContext();
  const source = ctx.createMediaElementSource(audio);
  const dest = ctx.createMediaStreamDestination();
  source.connect(dest);
  const handle = { name: file.name, url, audio, ctx, track: dest.stream.getAudioTracks()[0] };
  audio.addEventListener("ended", () => onFileEnded(handle));
  return handle;
}

async function playFile(handle) {
  await handle.ctx.resume();
  try {
    await handle.audio.play();
  } catch (err) {
    const why = err && err.message ? err.message : err;
    throw new UserError(`“${handle.name}” could not be played: ${why}`);
  }
}

function closeFile(handle) {
  if (!handle) return;
  handle.audio.pause();
  handle.audio.removeAttribute("src");
  handle.audio.load();
  handle.track.stop();
  handle.ctx.close().catch(() => {});
  URL.revokeObjectURL(handle.url);
}

async function onFileEnded(handle) {
  if (handle !== state.file || state.phase !== "live") return;
  if (state.mic) {
    await state.sender.replaceTrack(state.mic.getAudioTracks()[0]);
    state.source = "microphone";
    state.file = null;
    closeFile(handle);
    setStatus(`“${handle.name}” has finished: back to the microphone.`);
  } else {
    setStatus(`“${handle.name}” has finished. Stream another file, go back to the microphone, or Stop.`);
  }
  refreshControls();
}

// ---------------------------------------------------------------------------------------------
// the session
// ---------------------------------------------------------------------------------------------

/** The RTCPeerConnection settings: the server's ICE servers, relay-only with ?relay=1. */
function rtcConfiguration() {
  const listed = (state.info && Array.isArray(state.info.ice_servers)) ? state.info.ice_servers : [];
  const iceServers = listed.map((s) => (typeof s === "string" ? { urls: s } : s));
  if (!RELAY_ONLY) return { iceServers };
  const turn = iceServers.some((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)));
  if (!turn) {
    throw new UserError(
      "Relay-only ICE (?relay=1 in the address) needs a TURN server, and this server lists none: " +
        "start it with --ice-server turn:… (docs/deploy.md), or open the page without ?relay=1."
    );
  }
  return { iceServers, iceTransportPolicy: "relay" };
}

async function start(source, file) {
  if (state.phase !== "idle") return;
  const gen = ++state.gen;
  state.phase = "starting";
  state.source = source;
  showError(null);
  refreshControls();
  const stale = () => gen !== state.gen;
  try {
    let track;
    if (source === "microphone") {
      setStatus("Asking for the microphone…");
      const mic = await getMicrophone();
      if (!keepMicrophone(mic, !stale())) return;
      track = mic.getAudioTracks()[0];
    } else {
      setStatus(`Opening “${file.name}”…`);
      const handle = await openFile(file);
      if (stale()) {
        closeFile(handle);
        return;
      }
      state.file = handle;
      track = handle.track;
    }

    setStatus(RELAY_ONLY ? "Connecting (relay only, through the TURN server)…" : "Connecting…");
    // No STUN / TURN unless the server lists some (a local or LAN server needs none).
    const { iceServers, iceTransportPolicy } = rtcConfiguration();
    state.avatar = ui.avatar.value || null;
    state.abort = new AbortController();
    const client = await connectSession("/", {
      avatar: state.avatar || undefined,
      token: token || undefined,
      microphone: track,
      iceServers,
      iceTransportPolicy,
      signal: state.abort.signal,
    }).catch((err) => {
      if (err instanceof ClientAuthError) throw authError(token);
      throw err;
    });
    if (stale()) {
      client.close();
      return;
    }
    state.abort = null;
    state.client = client;
    state.pc = client.pc;
    state.dc = client.channel;
    state.sender = client.sender;
    state.session = client.id;
    wireSession(client, gen);
    state.remote = client.stream;
    ui.video.srcObject = client.stream;
    ui.video.muted = !ui.hear.checked;
    ui.video.play().catch(() => {
      // autoplay was refused: the page needs a click to start sound
      setStatus("Click the video to start playback (the browser blocked autoplay).");
    });
    client.pc.addEventListener("connectionstatechange", () => onConnectionState(client.pc, gen));
    refreshControls();

    state.phase = "live";
    if (source === "file") await playFile(state.file);
    if (stale()) return;
    startTimers();
    setStatus(liveStatus());
  } catch (err) {
    if (stale()) return;
    await stop();
    if (err instanceof AuthError) {
      // the server now wants a (different) token: ask, then the person starts again
      setStatus("Waiting for the access token.");
      askToken(err.message).then(() => setStatus("Token saved. Press Start microphone to go again."));
      return;
    }
    showError(describe(err));
    setStatus("Stopped.");
  } finally {
    if (!stale()) refreshControls();
  }
}

function liveStatus() {
  const what =
    state.source === "file" && state.file ? `the file “${state.file.name}”` : "your microphone";
  return `Live: the avatar ${ui.avatar.value} follows ${what}.`;
}

function onConnectionState(pc, gen) {
  if (gen !== state.gen || pc !== state.pc) return;
  switch (pc.connectionState) {
    case "connected":
      if (state.phase === "live") setStatus(liveStatus());
      break;
    case "disconnected":
      setStatus("The connection was interrupted; waiting for it to recover…");
      break;
    case "failed":
      if (state.phase === "live") {
        stop().then(() => {
          showError("The connection to the server was lost.");
          setStatus("Stopped.");
        });
      }
      break;
    default:
      break;
  }
}

/** The session's events: its control messages, and its end. */
function wireSession(client, gen) {
  // the avatar was changed while the session was being set up: switch to it now
  if (state.avatar && ui.avatar.value && ui.avatar.value !== state.avatar) {
    sendControl({ type: "switch_avatar", avatar: ui.avatar.value });
  }
  client.addEventListener("closed", (e) => {
    if (gen !== state.gen || e.detail.reason === "closed") return;
    if (state.phase === "live" && e.detail.reason.includes("network")) {
      stop().then(() => {
        showError("The connection to the server was lost.");
        setStatus("Stopped.");
      });
    } else if (state.phase === "live") {
      stop().then(() => setStatus("The server ended the session."));
    } else {
      refreshControls();
    }
  });
  client.addEventListener("message", (e) => {
    if (gen === state.gen) onControlMessage(e.detail);
  });
}

function sendControl(msg) {
  return !!state.client && state.client.send(msg);
}

function onControlMessage(msg) {
  switch (msg.type) {
    case "stats":
      renderStats(msg);
      break;
    case "avatar":
      state.avatar = msg.avatar;
      if (ui.avatar.value !== msg.avatar) ui.avatar.value = msg.avatar;
      showPoster(msg.avatar);
      setStatus(`Live: switched to the avatar ${msg.avatar}.`);
      break;
    case "flush":
      setStatus("Flushed: the queued audio and frames were dropped.");
      break;
    case "ended":
      setStatus("The server ended the input of this session.");
      break;
    case "error":
      showError(msg.message || msg.error || "The server reported an error.");
      break;
    default:
      break;
  }
}

function ms(v) {
  return `${Math.round(v)} ms`;
}

function renderStats(s) {
  ui.statFps.textContent = typeof s.fps === "number" ? s.fps.toFixed(1) : "–";
  const total = s.latency_ms && s.latency_ms.total;
  ui.statLatency.textContent = total ? `${ms(total.p50)} / ${ms(total.p95)}` : "–";
  ui.statLatency.title = total
    ? `audio in -> frame sent, over ${total.n} frames (max ${ms(total.max)})`
    : "no lip-synced frames yet (the avatar is at rest)";
  ui.statDropped.textContent = String(s.dropped ?? "–");
  ui.statLate.textContent = s.video ? String(s.video.late) : "–";
  const unknown = s.speaking === null || s.speaking === undefined;
  ui.statSpeaking.textContent = unknown ? "–" : s.speaking ? "speaking" : "silent";
  ui.statSpeaking.dataset.speaking = s.speaking ? "yes" : "no";
  const heard = s.session_frames && typeof s.session_frames.audio_seconds === "number"
    ? `, ${s.session_frames.audio_seconds.toFixed(1)} s of audio received`
    : "";
  ui.sessionInfo.textContent =
    `Session ${s.session}: avatar ${s.avatar}, ${s.mode}, delay ${ms(s.delay_ms)}` +
    `, ${s.video ? s.video.sent : 0} frames sent${heard}.`;
  state.serverStats = s;
  renderStages(s.latency_ms || {}, s);
  renderPath();
}

const STAGES = [
  ["ingest", "audio arrival -> resampled and through the voice gate"],
  ["mel", "mel spectrogram and window forming"],
  ["window_wait", "waiting for the audio after the frame that the renderer needs (its look-ahead)"],
  ["queue", "window ready -> the model runs (worker, batching with other sessions)"],
  ["transformer", "landmark transformer"],
  ["sketch", "drawing the sketches"],
  ["renderer", "renderer"],
  ["composite", "pasting the face into the avatar frame"],
  ["hold", "ready -> due (the playout buffer that keeps the delay constant)"],
  ["encode", "handed to the sender -> encoded"],
  ["send", "encoded -> its packets handed to the network"],
  ["total", "audio arrival at the server -> frame on the wire"],
];

const DELAY_PARTS = [
  ["lookahead_ms", "look-ahead"],
  ["compute_ms", "compute"],
  ["encode_ms", "encode"],
  ["jitter_ms", "jitter"],
  ["margin_ms", "margin"],
];

/** The delay in use now (a row of the stage table): fixed, or the automatic one and its parts. */
function delayRow(s) {
  if (typeof s.delay_ms !== "number") return null;
  const tr = document.createElement("tr");
  tr.dataset.stage = "delay";
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = "delay";
  th.title = "audio in -> lips and audio out, now (auto: chosen from these parts, changed only in silence)";
  const td = document.createElement("td");
  td.colSpan = 4;
  const parts = s.delay_parts
    ? DELAY_PARTS.map(([key, label]) => `${label} ${Math.round(s.delay_parts[key])}`).join(" + ")
    : "";
  td.textContent = `${Math.round(s.delay_ms)} (${s.delay_mode === "auto" ? "auto" : "fixed"})` +
    (parts ? ` = ${parts}` : "");
  tr.append(th, td);
  return tr;
}

function renderStages(latency, s = {}) {
  const rows = STAGES.filter(([key]) => latency[key]).map(([key, label]) => {
    const v = latency[key];
    const tr = document.createElement("tr");
    tr.dataset.stage = key;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = key;
    th.title = label;
    tr.append(th);
    for (const q of ["p50", "p95", "p99", "max"]) {
      const td = document.createElement("td");
      td.textContent = Math.round(v[q]).toString();
      tr.append(td);
    }
    return tr;
  });
  const delay = delayRow(s);
  if (delay) rows.push(delay);
  if (rows.length) ui.stagesBody.replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------
// the browser's own frame rate
// ---------------------------------------------------------------------------------------------

function onVideoFrame(now) {
  state.framesShown += 1;
  state.frameMarks.push(now);
  while (state.frameMarks.length && now - state.frameMarks[0] > FPS_WINDOW_MS) state.frameMarks.shift();
  state.rvfc = ui.video.requestVideoFrameCallback(onVideoFrame);
}

/** The browser's side of the path from getStats(), over the last interval (deltas of totals). */
async function collectPath() {
  const pc = state.pc;
  if (!pc) return;
  const report = await pc.getStats();
  const now = {};
  let pairId = null;
  report.forEach((r) => {
    if (r.type === "candidate-pair" && r.nominated && typeof r.currentRoundTripTime === "number") {
      now.rtt = r.currentRoundTripTime;
    }
    if (r.type === "inbound-rtp" && (r.kind === "video" || r.kind === "audio")) now[r.kind] = r;
    if (r.type === "transport" && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  // the network route ICE chose: this side's candidate type -> the server's (relay: through TURN)
  const pair = pairId && report.get(pairId);
  const local = pair && report.get(pair.localCandidateId);
  const remote = pair && report.get(pair.remoteCandidateId);
  const prev = state.rtcPrev;
  state.rtcPrev = now;
  const delta = (kind, key) => {
    const a = prev && prev[kind];
    const b = now[kind];
    if (!b || typeof b[key] !== "number") return null;
    return b[key] - (a && typeof a[key] === "number" ? a[key] : 0);
  };
  const per = (kind, key, count) => {
    const d = delta(kind, key);
    const n = delta(kind, count);
    return d === null || !n ? null : (1000 * d) / n;
  };
  const v = now.video || {};
  const path = {
    rtt_half: typeof now.rtt === "number" ? (1000 * now.rtt) / 2 : null,
    video_buffer: per("video", "jitterBufferDelay", "jitterBufferEmittedCount"),
    video_decode: per("video", "totalDecodeTime", "framesDecoded"),
    audio_buffer: per("audio", "jitterBufferDelay", "jitterBufferEmittedCount"),
    frames_dropped: typeof v.framesDropped === "number" ? v.framesDropped : null,
    packets_lost: (v.packetsLost || 0) + ((now.audio || {}).packetsLost || 0),
    freezes: typeof v.freezeCount === "number" ? v.freezeCount : null,
    route: local && remote ? `${local.candidateType} -> ${remote.candidateType}` : null,
  };
  // frame interval jitter: the standard deviation of the intervals between decoded frames
  const n = delta("video", "framesDecoded");
  const sum = delta("video", "totalInterFrameDelay");
  const sq = delta("video", "totalSquaredInterFrameDelay");
  path.interval_jitter = n > 1 && sum !== null && sq !== null
    ? 1000 * Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2))
    : null;
  path.av_offset = path.video_buffer !== null && path.audio_buffer !== null
    ? path.video_buffer + (path.video_decode || 0) - path.audio_buffer
    : null;
  state.path = path;
  renderPath();
}

function renderPath() {
  const p = state.path;
  if (!p) return;
  const total = state.serverStats && state.serverStats.latency_ms && state.serverStats.latency_ms.total;
  // the microphone hands over 20 ms Opus packets, and the server's receiver holds mic_prefetch of them
  const prefetch = state.info && typeof state.info.mic_prefetch === "number" ? state.info.mic_prefetch : 0;
  const capture = 20 * (1 + prefetch);
  const parts = [capture, p.rtt_half, total ? total.p50 : null, p.rtt_half, p.video_buffer, p.video_decode];
  const lips = parts.every((x) => typeof x === "number") ? parts.reduce((a, b) => a + b, 0) : null;
  const rows = [
    ["capture", `one 20 ms Opus packet, and ${prefetch} held by the server's receiver`, capture, "ms"],
    ["uplink", "network to the server: half the round trip", p.rtt_half, "ms"],
    ["server", "the server's total (p50, the table above)", total ? total.p50 : null, "ms"],
    ["downlink", "network back: half the round trip", p.rtt_half, "ms"],
    ["video_buffer", "the browser's video jitter buffer", p.video_buffer, "ms"],
    ["video_decode", "video decoding", p.video_decode, "ms"],
    ["voice_to_lips", "your voice -> the avatar's lips on screen (sum of the above)", lips, "ms"],
    ["audio_buffer", "the browser's audio jitter buffer", p.audio_buffer, "ms"],
    ["av_offset", "video behind audio in this browser's buffers (positive: video later)", p.av_offset, "ms"],
    ["interval_jitter", "standard deviation of the intervals between decoded frames", p.interval_jitter, "ms"],
    ["frames_dropped", "frames the browser dropped", p.frames_dropped, ""],
    ["packets_lost", "RTP packets lost (audio and video)", p.packets_lost, ""],
    ["freezes", "video freezes seen by the browser", p.freezes, ""],
    ["route", "ICE candidate types, this browser -> the server (relay: through the TURN server)", p.route, ""],
  ];
  ui.pathBody.replaceChildren(
    ...rows.map(([key, label, value, unit]) => {
      const tr = document.createElement("tr");
      tr.dataset.figure = key;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = key.replaceAll("_", " ");
      th.title = label;
      const td = document.createElement("td");
      if (typeof value === "number") td.textContent = `${Math.round(value)}${unit ? ` ${unit}` : ""}`;
      else td.textContent = typeof value === "string" ? value : "–";
      tr.append(th, td);
      return tr;
    }),
  );
}

async function measureBrowserFps() {
  const marks = state.frameMarks;
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const now = performance.now();
    while (marks.length && now - marks[0] > FPS_WINDOW_MS) marks.shift();
    const span = marks.length > 1 ? marks[marks.length - 1] - marks[0] : 0;
    state.browserFps = span > 0 ? ((marks.length - 1) * 1000) / span : 0;
  } else if (state.pc) {
    // fallback: the decoder's frame rate from getStats
    const report = await state.pc.getStats();
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video" && typeof r.framesPerSecond === "number") {
        state.browserFps = r.framesPerSecond;
      }
    });
  }
  ui.statShown.textContent = state.browserFps === null ? "–" : state.browserFps.toFixed(1);
}

function startTimers() {
  stopTimers();
  state.frameMarks = [];
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    state.rvfc = ui.video.requestVideoFrameCallback(onVideoFrame);
  }
  state.rtcPrev = null;
  state.path = null;
  state.statsTimer = setInterval(() => {
    measureBrowserFps().catch(() => {});
    collectPath().catch(() => {});
  }, 1000);
}

function stopTimers() {
  if (state.statsTimer !== null) clearInterval(state.statsTimer);
  state.statsTimer = null;
  if (state.rvfc !== null && "cancelVideoFrameCallback" in HTMLVideoElement.prototype) {
    ui.video.cancelVideoFrameCallback(state.rvfc);
  }
  state.rvfc = null;
  state.browserFps = null;
}

// ---------------------------------------------------------------------------------------------
// stop
// ---------------------------------------------------------------------------------------------

function deleteSession(id) {
  // The server also ends a session when the peer connection closes; this makes it immediate.
  if (!id) return Promise.resolve();
  return api(`/api/sessions/${encodeURIComponent(id)}`, { method: "DELETE", keepalive: true })
    .then(() => {})
    .catch(() => {});
}

/** End the session (if any) and release the microphone, the file and the timers. */
async function stop() {
  state.gen += 1;
  const { client, session } = state;
  if (state.abort) state.abort.abort();
  state.abort = null;
  state.client = state.pc = state.dc = state.sender = state.session = null;
  state.phase = "idle";
  stopTimers();
  state.serverStats = state.path = state.rtcPrev = null;
  const none = document.createElement("tr");
  none.innerHTML = '<td colspan="2">No session.</td>';
  ui.pathBody.replaceChildren(none);
  const deleted = client ? client.close() : deleteSession(session);
  releaseMicrophone();
  closeFile(state.file);
  state.file = null;
  state.source = null;
  if (state.remote) for (const t of state.remote.getTracks()) t.stop();
  state.remote = null;
  ui.video.srcObject = null;
  ui.placeholder.hidden = false;
  for (const el of [ui.statFps, ui.statShown, ui.statLatency, ui.statDropped, ui.statLate, ui.statSpeaking]) {
    el.textContent = "–";
  }
  ui.sessionInfo.textContent = session ? `Session ${session} ended.` : "No session.";
  refreshControls();
  await deleted;
}

// ---------------------------------------------------------------------------------------------
// wiring
// ---------------------------------------------------------------------------------------------

async function onStreamFile() {
  const file = ui.file.files && ui.file.files[0];
  if (!file) return;
  showError(null);
  if (state.phase === "idle") {
    await start("file", file);
    return;
  }
  if (state.phase !== "live") return;
  const gen = state.gen;
  let handle = null;
  try {
    setStatus(`Opening “${file.name}”…`);
    handle = await openFile(file);
    if (gen !== state.gen) {
      closeFile(handle);
      return;
    }
    await state.sender.replaceTrack(handle.track);
    await playFile(handle);
    const old = state.file;
    state.file = handle;
    state.source = "file";
    closeFile(old);
    setStatus(liveStatus());
  } catch (err) {
    if (handle && handle !== state.file) closeFile(handle);
    showError(describe(err));
  }
  refreshControls();
}

async function onUseMicrophone() {
  if (state.phase !== "live") return;
  const gen = state.gen;
  showError(null);
  try {
    const mic = await getMicrophone();
    if (!keepMicrophone(mic, gen === state.gen)) return;
    await state.sender.replaceTrack(mic.getAudioTracks()[0]);
    closeFile(state.file);
    state.file = null;
    state.source = "microphone";
    setStatus(liveStatus());
  } catch (err) {
    showError(describe(err));
  }
  refreshControls();
}

function onVideoResize() {
  const { videoWidth: w, videoHeight: h } = ui.video;
  if (w && h) ui.screen.style.setProperty("--aspect", `${w} / ${h}`);
}

function wire() {
  ui.start.addEventListener("click", () => start("microphone"));
  ui.stop.addEventListener("click", async () => {
    showError(null);
    await stop();
    setStatus("Stopped. Press Start microphone to go again.");
  });
  ui.avatar.addEventListener("change", onAvatarChange);
  ui.file.addEventListener("change", refreshControls);
  ui.playFile.addEventListener("click", onStreamFile);
  ui.useMic.addEventListener("click", onUseMicrophone);
  ui.flush.addEventListener("click", () => {
    if (sendControl({ type: "flush" })) setStatus("Flushing…");
  });
  ui.hear.addEventListener("change", () => (ui.video.muted = !ui.hear.checked));
  ui.video.addEventListener("resize", onVideoResize);
  ui.video.addEventListener("playing", () => (ui.placeholder.hidden = true));
  ui.video.addEventListener("click", () => ui.video.play().catch(() => {}));
  window.addEventListener("pagehide", () => {
    if (state.phase !== "idle") stop();
  });
}

/** Info and avatars, asking for the access token (again) while the server refuses. */
async function connect() {
  for (;;) {
    try {
      const [info] = await Promise.all([loadInfo(), loadAvatars()]);
      return info;
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      ui.mode.textContent = "locked";
      setStatus("Waiting for the access token.");
      await askToken(err.message);
      setStatus("Loading…");
    }
  }
}

async function init() {
  wire();
  refreshControls();
  try {
    const info = await connect();
    state.info = info;
    refreshControls();
    const full = info.sessions >= info.max_sessions;
    const busy = full ? ` (all ${info.max_sessions} sessions are in use right now)` : "";
    setStatus(`Ready${busy}. Press Start microphone, or choose an audio file.`);
  } catch (err) {
    ui.mode.textContent = "offline";
    showError(`The server could not be reached: ${describe(err)}`);
    setStatus("Not connected to the server. Reload the page to try again.");
  }
}

// A small handle for debugging in the console (and for the page's tests).
window.mouthpiece = {
  get state() {
    return state;
  },
  get framesShown() {
    return state.framesShown;
  },
  stop,
};

init();

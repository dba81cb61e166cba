// The call demo (/call): two people in a call through this server. The server's websocket
// /call/ws?room=NAME relays the offer, the answer and the ICE candidates (streaming/call.py); the
// media goes peer to peer. Either person can switch their camera to the avatar: mouthpiece.js starts
// a session fed by their microphone, and replaceTrack() puts the avatar's video on the video sender
// and the delayed voice on the audio sender, so the far end gets lips and voice together (no new
// negotiation). "Back to my camera" puts the camera and the microphone back and ends the session.
//
// The page's address may carry ?room=NAME (and ?token=TOKEN, kept for the tab like the main page's).

import { AuthError, MouthpieceError, VERSION, connect, request } from "./mouthpiece.js";

const TOKEN_KEY = "mouthpiece.token";
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const ui = {
  mode: $("mode"),
  status: $("status"),
  error: $("error"),
  remote: $("remote"),
  local: $("local"),
  placeholder: $("placeholder"),
  remoteState: $("remote-state"),
  room: $("room"),
  join: $("join"),
  hangup: $("hangup"),
  link: $("link"),
  avatar: $("avatar"),
  useAvatar: $("use-avatar"),
  useCamera: $("use-camera"),
  auth: $("auth"),
  authMessage: $("auth-message"),
  token: $("token"),
};

const call = {
  info: null,
  token: params.get("token") || readToken(),
  ws: null,
  pc: null,
  polite: false,
  local: null, // the camera and microphone (getUserMedia)
  audio: null, // RTCRtpTransceiver of the voice
  video: null, // RTCRtpTransceiver of the picture
  avatar: null, // the mouthpiece.js Session while the avatar is the camera
  camera: "camera", // "camera" | "avatar" | "off"
  remote: null, // the MediaStream from the other person
  busy: false,
};

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function keepToken(value) {
  call.token = value;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: in memory only
  }
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text || "";
  ui.error.hidden = !text;
}

function describe(err) {
  if (err instanceof MouthpieceError) return err.message;
  return `Something went wrong: ${err && err.message ? err.message : err}`;
}

function refresh() {
  const inCall = !!call.ws;
  ui.join.disabled = inCall || !call.info;
  ui.hangup.disabled = !inCall;
  ui.room.disabled = inCall;
  ui.useAvatar.disabled = !inCall || call.busy || call.camera === "avatar" || !ui.avatar.value;
  ui.useCamera.disabled = !inCall || call.busy || call.camera !== "avatar";
}

function askToken(message) {
  ui.authMessage.textContent = message;
  ui.auth.hidden = false;
  ui.token.focus();
  return new Promise((resolve) => {
    ui.auth.onsubmit = (event) => {
      event.preventDefault();
      const value = ui.token.value.trim();
      if (!value) return;
      keepToken(value);
      ui.token.value = "";
      ui.auth.hidden = true;
      resolve();
    };
  });
}

async function loadInfo() {
  for (;;) {
    try {
      const res = await request("/api/info", { headers: { Accept: "application/json" } }, call.token);
      if (!res.ok) throw new MouthpieceError(`The server answered ${res.status} to /api/info.`);
      return await res.json();
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      keepToken(null);
      ui.mode.textContent = "locked";
      await askToken(err.message);
    }
  }
}

function iceServers() {
  const listed = call.info && Array.isArray(call.info.ice_servers) ? call.info.ice_servers : [];
  return listed.map((s) => (typeof s === "string" ? { urls: s } : s));
}

// ---------------------------------------------------------------------------------------------
// signalling and the peer connection
// ---------------------------------------------------------------------------------------------

function signal(msg) {
  if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(msg));
}

function sendState() {
  signal({ type: "state", camera: call.camera, microphone: true });
}

/** A new peer connection; the offerer adds the audio and video transceivers (the answerer takes
 * those of the offer: attach()). */
function newPeer(offerer) {
  closePeer();
  const pc = new RTCPeerConnection({ iceServers: iceServers() });
  call.pc = pc;
  if (offerer) {
    call.audio = pc.addTransceiver("audio", { direction: "sendrecv", streams: [call.local] });
    call.video = pc.addTransceiver("video", { direction: "sendrecv", streams: [call.local] });
  }
  call.remote = new MediaStream();
  pc.addEventListener("track", (e) => {
    call.remote.addTrack(e.track);
    ui.remote.srcObject = call.remote;
    ui.remote.play().catch(() => setStatus("Click the video to start playback (the browser blocked autoplay)."));
  });
  pc.addEventListener("icecandidate", (e) => signal({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null }));
  pc.addEventListener("connectionstatechange", () => {
    if (pc !== call.pc) return;
    if (pc.connectionState === "connected") setStatus(`In the call (room ${ui.room.value}).`);
    if (pc.connectionState === "failed") setStatus("The connection to the other person failed.");
  });
  return pc;
}

/** Put this side's voice and picture (the avatar's when it is the camera) on the transceivers. */
async function attach(pc) {
  if (!call.audio || !call.video) {
    // the answerer: the offer's transceivers, by kind
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (kind === "audio" && !call.audio) call.audio = t;
      if (kind === "video" && !call.video) call.video = t;
    }
  }
  const voice = call.avatar ? call.avatar.audioTrack : call.local.getAudioTracks()[0];
  const picture = call.avatar ? call.avatar.videoTrack : call.local.getVideoTracks()[0];
  for (const [t, track] of [[call.audio, voice], [call.video, picture]]) {
    if (!t) continue;
    t.direction = "sendrecv";
    if (t.sender.setStreams) t.sender.setStreams(call.local);
    await t.sender.replaceTrack(track || null);
  }
}

function closePeer() {
  call.audio = call.video = null;
  if (!call.pc) return;
  call.pc.close();
  call.pc = null;
  if (call.remote) for (const t of call.remote.getTracks()) t.stop();
  call.remote = null;
  ui.remote.srcObject = null;
  ui.placeholder.hidden = false;
  ui.remoteState.textContent = "–";
}

async function onSignal(msg) {
  switch (msg.type) {
    case "joined":
      call.polite = msg.polite;
      setStatus(msg.peers ? "Joining the call…" : `Waiting for the other person in room ${msg.room}…`);
      if (msg.peers) newPeer(false); // the other person offers
      break;
    case "peer_joined": {
      const pc = newPeer(true);
      await attach(pc);
      await pc.setLocalDescription(await pc.createOffer());
      signal({ type: "description", description: pc.localDescription.toJSON() });
      sendState();
      break;
    }
    case "description": {
      const pc = call.pc || newPeer(false);
      await pc.setRemoteDescription(msg.description);
      if (msg.description.type === "offer") {
        await attach(pc);
        await pc.setLocalDescription(await pc.createAnswer());
        signal({ type: "description", description: pc.localDescription.toJSON() });
        sendState();
      }
      break;
    }
    case "candidate":
      if (call.pc) await call.pc.addIceCandidate(msg.candidate || undefined).catch(() => {});
      break;
    case "state":
      ui.remoteState.textContent = msg.camera === "avatar" ? "The other person shows the avatar." : "The other person shows their camera.";
      ui.placeholder.hidden = true;
      break;
    case "peer_left":
      closePeer();
      setStatus("The other person left. Waiting for someone to join…");
      break;
    case "error":
      showError(msg.message || msg.error);
      break;
    default:
      break;
  }
}

async function join() {
  const room = ui.room.value.trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(room)) {
    showError("A room name is 1 to 64 letters, digits, - or _.");
    return;
  }
  showError(null);
  setStatus("Asking for the camera and the microphone…");
  try {
    call.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true }).catch(() =>
      navigator.mediaDevices.getUserMedia({ audio: true, video: false }),
    );
  } catch (err) {
    showError(`The microphone could not be opened: ${err && err.message ? err.message : err}`);
    setStatus("Not in a call.");
    return;
  }
  ui.local.srcObject = call.local;
  const url = new URL("/call/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("room", room);
  if (call.token) url.searchParams.set("token", call.token);
  const ws = new WebSocket(url);
  call.ws = ws;
  let chain = Promise.resolve();
  ws.addEventListener("message", (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    chain = chain.then(() => onSignal(msg)).catch((err) => showError(describe(err)));
  });
  ws.addEventListener("close", () => {
    if (call.ws !== ws) return;
    hangup();
    showError("The server closed the call (the room is full, the token is wrong, or the server stopped).");
  });
  ui.link.textContent = `Others join with ${location.origin}/call?room=${room}`;
  refresh();
}

async function hangup() {
  const ws = call.ws;
  call.ws = null;
  if (ws) ws.close();
  closePeer();
  if (call.avatar) await call.avatar.close();
  call.avatar = null;
  call.camera = "camera";
  if (call.local) for (const t of call.local.getTracks()) t.stop();
  call.local = null;
  ui.local.srcObject = null;
  setStatus("Not in a call.");
  refresh();
}

// ---------------------------------------------------------------------------------------------
// the avatar as the camera
// ---------------------------------------------------------------------------------------------

async function useAvatar() {
  call.busy = true;
  refresh();
  showError(null);
  setStatus("Starting the avatar…");
  try {
    const avatar = await connect("/", {
      avatar: ui.avatar.value,
      token: call.token || undefined,
      microphone: call.local.getAudioTracks()[0],
      iceServers: iceServers(),
    });
    if (!call.ws) {
      await avatar.close();
      return;
    }
    call.avatar = avatar;
    avatar.addEventListener("closed", () => {
      if (call.avatar === avatar) useCamera("The avatar's session ended: back to your camera.");
    });
    if (call.video) await call.video.sender.replaceTrack(avatar.videoTrack);
    if (call.audio) await call.audio.sender.replaceTrack(avatar.audioTrack);
    ui.local.srcObject = avatar.stream;
    call.camera = "avatar";
    sendState();
    setStatus(`The other person sees the avatar ${ui.avatar.value} speaking with your voice.`);
  } catch (err) {
    showError(describe(err));
  } finally {
    call.busy = false;
    refresh();
  }
}

async function useCamera(message) {
  const avatar = call.avatar;
  call.avatar = null;
  call.camera = "camera";
  if (call.local) {
    if (call.video) await call.video.sender.replaceTrack(call.local.getVideoTracks()[0] || null);
    if (call.audio) await call.audio.sender.replaceTrack(call.local.getAudioTracks()[0] || null);
    ui.local.srcObject = call.local;
  }
  sendState();
  if (avatar) await avatar.close();
  setStatus(typeof message === "string" ? message : "Back to your camera.");
  refresh();
}

async function init() {
  ui.room.value = params.get("room") || Math.random().toString(36).slice(2, 8);
  ui.join.addEventListener("click", join);
  ui.hangup.addEventListener("click", hangup);
  ui.useAvatar.addEventListener("click", useAvatar);
  ui.useCamera.addEventListener("click", useCamera);
  ui.remote.addEventListener("playing", () => (ui.placeholder.hidden = true));
  ui.remote.addEventListener("click", () => ui.remote.play().catch(() => {}));
  ui.avatar.addEventListener("change", async () => {
    if (call.avatar) {
      try {
        await call.avatar.switchAvatar(ui.avatar.value);
      } catch (err) {
        showError(describe(err));
      }
    }
  });
  window.addEventListener("pagehide", () => hangup());
  try {
    call.info = await loadInfo();
    ui.mode.textContent = call.info.mode;
    ui.mode.dataset.mode = call.info.mode;
    ui.avatar.replaceChildren(
      ...call.info.avatars
        .filter((a) => !a.error)
        .map((a) => {
          const opt = document.createElement("option");
          opt.value = opt.textContent = a.name;
          return opt;
        }),
    );
    ui.avatar.value = call.info.default_avatar || "";
    ui.avatar.disabled = false;
    setStatus(`Ready (mouthpiece ${VERSION}). Join a room.`);
  } catch (err) {
    ui.mode.textContent = "offline";
    showError(`The server could not be reached: ${describe(err)}`);
  }
  refresh();
}

// for the console and the tests
window.mouthpieceCall = call;

init();

// dpkit's reference page: the unmodified Web SDK (window.Scene, window.Persona) against dpkit.
// Everything the page knows is also on window.dpkitPage, so tests can read what a user sees.
"use strict";

// The seed's advice for each connection error name.
const ADVICE = {
  noUserMedia: "Allow this page to use your microphone and camera (unblock the devices in the " +
    "browser's site settings), then connect again.",
  noScene: "Every Digital Person is busy right now. Please retry in a little while.",
  serverConnectionFailed: "The server could not be reached. Check your connection, or try " +
    "connecting from a different network.",
  notSupported: "This browser cannot use a camera or microphone. Try a current Chrome, Edge, " +
    "Firefox or Safari.",
  mediaStreamFailed: "The audio/video stream failed. Try another network (UDP may be blocked).",
  sessionTimeout: "The Digital Person took too long to start. Please try again.",
  controlFailed: "The conversation server could not be reached. Please try again later.",
  noSessionToResume: "Your previous session has ended. Connect again to start a new one.",
  assetsFailed: "The Digital Person's assets could not be loaded. Please try again later.",
  tooManySockets: "Too many sessions are open from here. Close one, then connect again.",
  frameTooLarge: "A message was too long for the server. Send something shorter.",
  protocolError: "The server could not use what this browser sent. Please try again, or tell " +
    "the site's operator.",
  notInstalled: "This page cannot connect until the server has the Web SDK. Reload the page in " +
    "a little while, or tell the site's operator what the message says.",
};

// What the page says when the server refused the API key at its token endpoint, by HTTP status.
const KEY_REFUSED = {
  401: ["The server refused the API key",
        "Check the key: the server's operator can list its keys with 'dpkit keys list'."],
  403: ["The server refused the API key for this page",
        "The key does not allow this page's origin: use a key made for this site " +
        "(dpkit keys add --origin ...)."],
  429: ["The server is getting too many requests from this address",
        "Wait a moment, then connect again."],
};
const KEY_BROKEN = "The API key is not a valid key: it must be the base64-encoded JSON the " +
  "server hands out (with an authServer). Copy it again from the server.";

// Each disconnect reason in words: the seed's (sessionTimeout, conversationEnded,
// controlDisconnected, normal) and dpkit's (docs/protocol.md).
const REASONS = {
  sessionTimeout: "the session ended after a period of inactivity",
  conversationEnded: "the conversation ended the session",
  controlDisconnected: "the orchestration server disconnected, so the conversation could not go on",
  normal: "the session was closed",
  connectionLost: "the connection to the server was lost",
  mediaStreamFailed: "the audio/video connection failed",
  protocolError: "the server could not use what this browser sent",
  frameTooLarge: "a message was over the server's size limit",
  tooManySockets: "too many sessions were open with this key or from this address",
  serverRestart: "the server restarted",
  controlFailed: "the orchestration server could not be reached",
  assetsFailed: "the Digital Person's assets could not be loaded",
  noScene: "no Digital Person was free",
};
function reasonInWords(reason) {
  return Object.prototype.hasOwnProperty.call(REASONS, reason) ? REASONS[reason] : null;
}

// What the page itself ended, and says so.
const USER_DISCONNECT = "you ended the session";
const USER_CANCEL = "you cancelled the connection";

// Off loopback, plain http is not a secure context: the browser gives the page no devices.
const INSECURE = "This page is not served over https, so the browser gives it no microphone or " +
  "camera. Open it at its https:// address, or connect with no devices.";

const $ = (id) => document.getElementById(id);

const page = {
  scene: null,
  persona: null,
  states: [],
  sessionId: null,
  error: null,
  disconnects: [],
  conversation: [],
  // What the persona is hearing right now (the last interim transcript; "" between utterances),
  // and the Web SDK's conversation state (idle, userSpeaking, dpProcessing, dpSpeaking) as seen.
  interim: "",
  conversationStates: [],
  connectPromise: null,
  // "idle", "connecting" or "connected": what the buttons and the sidebar show.
  phase: "idle",
  // Bumped by each connect and each cancel: a connect() that settles for an older attempt is stale.
  attempt: 0,
  // The last dpkit/queue frame while waiting ({position, size, etaMs}), and every one seen.
  queue: null,
  queueUpdates: [],
  // What the token endpoint answered the Web SDK ({status, error}; status 0: no answer).
  tokenAnswer: null,
  // The last ending: {reason, words, by: "server" | "user"}.
  lastDisconnect: null,
};
window.dpkitPage = page;
window.dpkitDisconnectReasons = REASONS;

// The Web SDK fetches its token from the key's authServer and never looks at the HTTP status,
// so a refused key and an unreachable server fail alike. The page watches that one request.
const realFetch = window.fetch.bind(window);
let tokenUrl = null;
window.fetch = async (input, init) => {
  const url = typeof input === "string" ? input : (input && input.url) || String(input);
  const isToken = tokenUrl !== null && url.split("?")[0] === tokenUrl;
  let response;
  try {
    response = await realFetch(input, init);
  } catch (error) {
    if (isToken) page.tokenAnswer = { status: 0, error: String(error).slice(0, 300) };
    throw error;
  }
  if (isToken) {
    page.tokenAnswer = { status: response.status, error: null };
    if (!response.ok) {
      try {
        const body = await response.clone().json();
        if (body && typeof body.error === "string") page.tokenAnswer.error = body.error.slice(0, 300);
      } catch (_error) {
        // Not JSON: the status says enough.
      }
    }
  }
  return response;
};

function authServerOf(apiKey) {
  try {
    const decoded = JSON.parse(atob(apiKey));
    return decoded && typeof decoded.authServer === "string" ? decoded.authServer : null;
  } catch (_error) {
    return null;
  }
}

function devices(prefix) {
  const chosen = {};
  if ($(`${prefix}-microphone`).checked) chosen.microphone = true;
  if ($(`${prefix}-camera`).checked) chosen.camera = true;
  return chosen;
}

function showState(data) {
  page.states.push({ ...data });
  $("state-name").textContent = data.name;
  $("state-percent").textContent = Math.round(data.percentageLoaded);
  $("state-step").textContent = data.currentStep;
  $("progress-bar").style.transform = `scaleX(${data.percentageLoaded / 100})`;
  document.body.dataset.state = data.name;
}

function adviceFor(error) {
  const noDevices = !window.isSecureContext && !navigator.mediaDevices;
  const deviceError = ["noUserMedia", "notSupported", "TypeError"].includes(error.name);
  if (noDevices && deviceError) return INSECURE;
  if (error.name === "serverConnectionFailed") {
    if (authServerOf($("api-key").value.trim()) === null) return KEY_BROKEN;
    const answer = page.tokenAnswer;
    const refused = answer && KEY_REFUSED[answer.status];
    if (refused) {
      const said = answer.error ? ` (it said: ${answer.error})` : "";
      return `${refused[0]}${said}. ${refused[1]}`;
    }
  }
  return ADVICE[error.name] || "Something went wrong. Please try again.";
}

function showError(error) {
  page.error = error ? { name: error.name, message: error.message } : null;
  $("error-panel").hidden = !error;
  if (!error) return;
  $("error-name").textContent = error.name;
  $("error-message").textContent = error.message;
  $("error-advice").textContent = adviceFor(error);
}

function isCount(value, low, high) {
  return Number.isInteger(value) && value >= low && value <= high;
}

// dpkit's queue frame (category dpkit, ignored by the Web SDK): where this page waits.
function showQueue(body) {
  if (!body || !isCount(body.position, 1, 1e6) || !isCount(body.size, body.position, 1e6) ||
      !isCount(body.etaMs, 0, 1e9)) {
    return;
  }
  page.queue = { position: body.position, size: body.size, etaMs: body.etaMs };
  page.queueUpdates.push({ ...page.queue });
  const seconds = Math.max(1, Math.round(body.etaMs / 1000));
  $("queue-text").textContent =
    `Waiting for a Digital Person: position ${body.position} of ${body.size}, about ${seconds} s`;
  $("queue-status").hidden = false;
  $("video-placeholder").textContent = "Waiting for a Digital Person…";
}

function clearQueue() {
  const wasQueued = page.queue !== null;
  page.queue = null;
  $("queue-status").hidden = true;
  $("queue-text").textContent = "";
  if (wasQueued && page.phase === "connecting") $("video-placeholder").textContent = "Connecting…";
}

function showLastDisconnect(reason, by) {
  const words = by === "user" ? (reason === "cancelled" ? USER_CANCEL : USER_DISCONNECT)
    : reasonInWords(reason) || "the session ended";
  const raw = String(reason).slice(0, 60);
  page.lastDisconnect = { reason: raw, words, by };
  $("disconnect-words").textContent = words;
  $("disconnect-reason").textContent = raw;
  $("disconnect-reason").hidden = false;
  const sentence = words.charAt(0).toUpperCase() + words.slice(1);
  $("video-placeholder").textContent = by === "user" ? "Not connected" : `${sentence}.`;
}

function showDevices() {
  const scene = page.scene;
  // The SDK still says its socket is open while it reports a disconnect: the page's own phase
  // decides, so a session that ended never shows a device as on.
  const connected = page.phase === "connected" && Boolean(scene);
  const mic = connected && scene.isMicrophoneActive();
  const cam = connected && scene.isCameraActive();
  $("microphone-state").textContent = mic ? "on" : "off";
  $("camera-state").textContent = cam ? "on" : "off";
  $("toggle-microphone").textContent = mic ? "Microphone on" : "Microphone off";
  $("toggle-camera").textContent = cam ? "Camera on" : "Camera off";
  $("toggle-microphone").setAttribute("aria-pressed", String(mic));
  $("toggle-camera").setAttribute("aria-pressed", String(cam));
}

function setPhase(phase) {
  page.phase = phase;
  const connected = phase === "connected";
  const connecting = phase === "connecting";
  document.body.dataset.phase = phase;
  // Cancel takes Connect's place while connecting or queued.
  $("connect").disabled = phase !== "idle";
  $("connect").hidden = connecting;
  $("cancel").hidden = !connecting;
  $("cancel").disabled = !connecting;
  $("disconnect").disabled = !connected;
  $("toggle-microphone").disabled = !connected;
  $("toggle-camera").disabled = !connected;
  $("chat-text").disabled = !connected;
  $("chat-send").disabled = !connected;
  $("video-placeholder").hidden = connected;
  if (!connected) $("video-placeholder").textContent = connecting ? "Connecting…" : "Not connected";
  $("session-id").textContent = connected ? page.sessionId : "—";
  if (!connected) {
    showInterim("");
    $("conversation-state").textContent = "—";
  }
  if (!connecting) clearQueue();
  showDevices();
}

// Who said a line, as the log labels it; "heard" is the user's speech as the persona heard it.
const SPEAKERS = { user: "you", heard: "you (heard)", persona: "persona" };

function addLine(who, text) {
  page.conversation.push({ who, text });
  const item = document.createElement("li");
  item.className = who;
  if (SPEAKERS[who]) {
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = SPEAKERS[who];
    item.append(label, " ", text);
  } else {
    item.textContent = text;
  }
  const log = $("conversation");
  log.appendChild(item);
  log.scrollTop = log.scrollHeight;
}

function showInterim(text) {
  page.interim = text;
  $("heard-interim-text").textContent = text;
  $("heard-interim").hidden = !text;
}

// recognizeResults: interim text while the user speaks, then each final transcript as a line,
// so the user sees what the persona heard (and so what it answers).
function showRecognized(status, _errorMessage, results) {
  if (status !== 0 || !Array.isArray(results) || results.length === 0) return;
  const result = results[0];
  const best = result && Array.isArray(result.alternatives) ? result.alternatives[0] : null;
  const transcript = best && typeof best.transcript === "string" ? best.transcript.trim() : "";
  if (!result.final) {
    showInterim(transcript.slice(0, 500));
    return;
  }
  showInterim("");
  if (transcript) addLine("heard", transcript.slice(0, 500));
}

function showConversationState(state) {
  page.conversationStates.push(state);
  $("conversation-state").textContent = CONVERSATION_STATES[state] || String(state).slice(0, 40);
}
const CONVERSATION_STATES = {
  idle: "idle",
  userSpeaking: "you are speaking",
  dpProcessing: "thinking",
  dpSpeaking: "persona speaking",
};

async function connect() {
  if (window.dpkitSdkMissing || typeof window.Scene !== "function") {
    const message = window.dpkitSdkMissing || "The Web SDK did not load (/sdk/smwebsdk.js).";
    showError({ name: "notInstalled", message: String(message).slice(0, 2000) });
    return;
  }
  showError(null);
  const attempt = ++page.attempt;
  const apiKey = $("api-key").value.trim();
  const authServer = authServerOf(apiKey);
  tokenUrl = authServer === null ? null : authServer.split("?")[0];
  page.tokenAnswer = null;
  page.queueUpdates = [];
  setPhase("connecting");
  const video = $("persona-video");
  let scene;
  try {
    scene = new window.Scene({
      apiKey,
      videoElement: video,
      requestedMediaDevices: devices("request"),
      requiredMediaDevices: devices("require"),
    });
  } catch (error) {
    showError(error);
    setPhase("idle");
    return;
  }
  page.scene = scene;
  page.states = [];
  page.conversationStates = [];
  showInterim("");
  const current = () => page.scene === scene && page.attempt === attempt;
  // The Web SDK hands every frame that is not webrtc to scene.onMessage (bound at connect):
  // dpkit's queue frames arrive there while the state stays SearchingForDigitalPerson.
  const sdkOnMessage = scene.onMessage.bind(scene);
  scene.onMessage = (message) => {
    if (current() && message && message.category === "dpkit" && message.name === "queue" &&
        page.phase === "connecting") {
      showQueue(message.body);
    }
    sdkOnMessage(message);
  };
  scene.connectionState.onConnectionStateUpdated.addListener((data) => {
    if (!current()) return;
    showState(data);
    if (data.name !== "SearchingForDigitalPerson") clearQueue();
  });
  scene.onDisconnectedEvent.addListener((_scene, sessionId, reason) => {
    if (!current()) return;
    page.disconnects.push({ sessionId, reason });
    setPhase("idle");
    showLastDisconnect(reason, "server");
  });
  scene.onRecognizeResultsEvent.addListener((_scene, status, errorMessage, results) => {
    if (current()) showRecognized(status, errorMessage, results);
  });
  scene.conversation.onConversationStateUpdated.addListener((state) => {
    if (current()) showConversationState(state);
  });
  scene.onMicrophoneActive.addListener(showDevices);
  scene.onCameraActive.addListener(showDevices);
  const retryOptions = { maxRetries: Number(params.get("maxRetries")) || 50,
                         delayMs: Number(params.get("delayMs")) || 200 };
  page.connectPromise = scene.connect({ retryOptions });
  try {
    const sessionId = await page.connectPromise;
    if (!current()) {
      // Cancelled while the SDK was between steps: end what it just opened.
      scene.disconnect();
      return;
    }
    page.sessionId = sessionId;
    page.persona = new window.Persona(scene, scene.currentPersonaId || 1);
    page.persona.onConversationResultEvent.addListener((_persona, result) => {
      const text = result && result.output && result.output.text;
      if (text) addLine("persona", text);
    });
    setPhase("connected");
  } catch (error) {
    if (!current()) return; // cancelled: not an error
    showError(error);
    setPhase("idle");
  }
}

// Cancel while connecting or queued: the SDK closes its socket (the server drops the queued
// place) and leaves connect() pending for ever, so this attempt is simply no longer current.
function cancel() {
  if (page.phase !== "connecting") return;
  endByUser("cancelled");
}

function disconnect() {
  if (page.phase !== "connected") return;
  endByUser("normal");
}

function endByUser(reason) {
  // disconnect() resets the SDK's state to Disconnected (shown by the listener), then this
  // attempt stops being current, so nothing it still reports changes the page.
  if (page.scene) page.scene.disconnect();
  page.attempt++;
  setPhase("idle");
  showLastDisconnect(reason, "user");
}

async function toggle(device) {
  const scene = page.scene;
  const active = device === "microphone" ? scene.isMicrophoneActive() : scene.isCameraActive();
  try {
    await scene.setMediaDeviceActive({ [device]: !active });
  } catch (error) {
    showError(error);
  }
  showDevices();
}

function toggleMute() {
  // The seed's approach: mute the video element the Scene plays the persona in.
  const video = $("persona-video");
  video.muted = !video.muted;
  $("toggle-mute").textContent = video.muted ? "Persona muted" : "Persona sound on";
  $("toggle-mute").setAttribute("aria-pressed", String(video.muted));
}

async function send(event) {
  event.preventDefault();
  const text = $("chat-text").value.trim();
  if (!text || !page.persona) return;
  $("chat-text").value = "";
  addLine("user", text);
  try {
    await page.persona.conversationSend(text, {}, {});
  } catch (error) {
    addLine("system", `could not send: ${error && error.message ? error.message : error}`);
  }
}

const params = new URLSearchParams(window.location.search);

async function init() {
  for (const name of ["request-microphone", "request-camera", "require-microphone", "require-camera"]) {
    const value = params.get(name.replace("-", "_"));
    if (value !== null) $(name).checked = value === "1" || value === "true";
  }
  let apiKey = params.get("apiKey");
  let keyProblem = null;
  if (!apiKey) {
    try {
      const config = await (await fetch("/api/page-config")).json();
      apiKey = config.apiKey;
      if (!apiKey && config.error) keyProblem = String(config.error).slice(0, 500);
    } catch (_error) {
      apiKey = "";
    }
  }
  $("api-key").value = apiKey || "";
  $("connect").addEventListener("click", connect);
  $("cancel").addEventListener("click", cancel);
  $("disconnect").addEventListener("click", disconnect);
  $("toggle-microphone").addEventListener("click", () => toggle("microphone"));
  $("toggle-camera").addEventListener("click", () => toggle("camera"));
  $("toggle-mute").addEventListener("click", toggleMute);
  $("chat").addEventListener("submit", send);
  setPhase("idle");
  if (keyProblem) showError({ name: "noApiKey", message: keyProblem });
  if (window.dpkitSdkMissing) {
    // Said at once, not only when Connect is pressed: nothing here can work without the SDK.
    showError({ name: "notInstalled", message: String(window.dpkitSdkMissing).slice(0, 2000) });
  }
  document.body.dataset.ready = "true";
}

init();

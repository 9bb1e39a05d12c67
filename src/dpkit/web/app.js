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
};

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
  connectPromise: null,
};
window.dpkitPage = page;

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
  $("progress-bar").style.width = `${data.percentageLoaded}%`;
  document.body.dataset.state = data.name;
}

function showError(error) {
  page.error = error ? { name: error.name, message: error.message } : null;
  $("error-panel").hidden = !error;
  if (!error) return;
  $("error-name").textContent = error.name;
  $("error-message").textContent = error.message;
  const noDevices = !window.isSecureContext && !navigator.mediaDevices;
  const deviceError = ["noUserMedia", "notSupported", "TypeError"].includes(error.name);
  $("error-advice").textContent = noDevices && deviceError
    ? INSECURE
    : ADVICE[error.name] || "Something went wrong. Please try again.";
}

function showDevices() {
  const scene = page.scene;
  const connected = Boolean(scene && scene.isConnected());
  const mic = connected && scene.isMicrophoneActive();
  const cam = connected && scene.isCameraActive();
  $("microphone-state").textContent = mic ? "on" : "off";
  $("camera-state").textContent = cam ? "on" : "off";
  $("toggle-microphone").textContent = mic ? "Microphone on" : "Microphone off";
  $("toggle-camera").textContent = cam ? "Camera on" : "Camera off";
  $("toggle-microphone").setAttribute("aria-pressed", String(mic));
  $("toggle-camera").setAttribute("aria-pressed", String(cam));
}

function setConnectedUi(connected) {
  $("connect").disabled = connected;
  $("disconnect").disabled = !connected;
  $("toggle-microphone").disabled = !connected;
  $("toggle-camera").disabled = !connected;
  $("chat-text").disabled = !connected;
  $("chat-send").disabled = !connected;
  $("video-placeholder").hidden = connected;
  $("session-id").textContent = connected ? page.sessionId : "—";
  showDevices();
}

function addLine(who, text) {
  page.conversation.push({ who, text });
  const item = document.createElement("li");
  item.className = who;
  item.textContent = text;
  $("conversation").appendChild(item);
}

async function connect() {
  if (window.dpkitSdkMissing) {
    showError({ name: "notInstalled", message: window.dpkitSdkMissing });
    return;
  }
  showError(null);
  $("connect").disabled = true;
  const video = $("persona-video");
  const scene = new window.Scene({
    apiKey: $("api-key").value.trim(),
    videoElement: video,
    requestedMediaDevices: devices("request"),
    requiredMediaDevices: devices("require"),
  });
  page.scene = scene;
  page.states = [];
  scene.connectionState.onConnectionStateUpdated.addListener(showState);
  scene.onDisconnectedEvent.addListener((_scene, sessionId, reason) => {
    page.disconnects.push({ sessionId, reason });
    $("disconnect-reason").textContent = reason;
    setConnectedUi(false);
  });
  scene.onMicrophoneActive.addListener(showDevices);
  scene.onCameraActive.addListener(showDevices);
  const retryOptions = { maxRetries: Number(params.get("maxRetries")) || 50,
                         delayMs: Number(params.get("delayMs")) || 200 };
  page.connectPromise = scene.connect({ retryOptions });
  try {
    page.sessionId = await page.connectPromise;
    page.persona = new window.Persona(scene, scene.currentPersonaId || 1);
    page.persona.onConversationResultEvent.addListener((_persona, result) => {
      const text = result && result.output && result.output.text;
      if (text) addLine("persona", text);
    });
    setConnectedUi(true);
  } catch (error) {
    showError(error);
    $("connect").disabled = false;
  }
}

async function disconnect() {
  if (page.scene) page.scene.disconnect();
  setConnectedUi(false);
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
  if (!apiKey) {
    try {
      const config = await (await fetch("/api/page-config")).json();
      apiKey = config.apiKey;
    } catch (_error) {
      apiKey = "";
    }
  }
  $("api-key").value = apiKey || "";
  $("connect").addEventListener("click", connect);
  $("disconnect").addEventListener("click", disconnect);
  $("toggle-microphone").addEventListener("click", () => toggle("microphone"));
  $("toggle-camera").addEventListener("click", () => toggle("camera"));
  $("toggle-mute").addEventListener("click", toggleMute);
  $("chat").addEventListener("submit", send);
  document.body.dataset.ready = "true";
}

init();

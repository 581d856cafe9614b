// Cameras and microphones: opening them (with a voice-only fallback), the list for the device
// pickers, a microphone level meter, and what to tell people when it fails, per browser.
// Shared by the visitor's call and the staff console. No DOM of its own.

/** @typedef {"denied" | "denied-camera" | "no-camera" | "no-mic" | "busy" | "insecure" | "other"} DeviceProblem */

/**
 * @typedef {object} Opened
 * @property {MediaStream | null} stream
 * @property {boolean} video the stream has a camera track
 * @property {DeviceProblem | null} problem why we have less than asked for (or nothing)
 */

/**
 * Open the microphone, and the camera when `video`. When the camera is denied or missing but
 * the microphone works, return the microphone alone with the problem (a voice call is still
 * possible).
 * @param {{video: boolean, cameraId?: string, micId?: string}} want
 * @returns {Promise<Opened>}
 */
export async function open(want) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: null, video: false, problem: window.isSecureContext ? "other" : "insecure" };
  }
  /** @type {MediaTrackConstraints} */
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (want.micId) audio.deviceId = { exact: want.micId };
  /** @type {MediaTrackConstraints} */
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  if (want.cameraId) video.deviceId = { exact: want.cameraId };
  if (want.video) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
      return { stream, video: true, problem: null };
    } catch (e) {
      const first = classify(e);
      if (first === "busy" || first === "insecure") return { stream: null, video: false, problem: first };
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio });
        return { stream, video: false, problem: first === "denied" ? "denied-camera" : "no-camera" };
      } catch (e2) {
        return { stream: null, video: false, problem: classify(e2, true) };
      }
    }
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio });
    return { stream, video: false, problem: null };
  } catch (e) {
    return { stream: null, video: false, problem: classify(e, true) };
  }
}

/**
 * @param {unknown} e a getUserMedia error
 * @param {boolean} [audioOnly]
 * @returns {DeviceProblem}
 */
export function classify(e, audioOnly = false) {
  const name = e instanceof Error || (e && typeof e === "object" && "name" in e) ? /** @type {any} */ (e).name : "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") return "denied";
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return audioOnly ? "no-mic" : "no-camera";
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") return "busy";
  return "other";
}

/**
 * The catalogue key of the help text for the browser this runs in.
 * @param {string} [ua]
 * @returns {string}
 */
export function helpKey(ua = navigator.userAgent) {
  if (/Edg\//.test(ua)) return "call.perm_help_edge";
  if (/Firefox\//.test(ua)) return "call.perm_help_firefox";
  if (/(Chrome|Chromium|CriOS)\//.test(ua)) return "call.perm_help_chrome";
  if (/Safari\//.test(ua)) return "call.perm_help_safari";
  return "call.perm_help_other";
}

/**
 * The catalogue key explaining a problem.
 * @param {DeviceProblem} problem
 * @returns {string}
 */
export function problemKey(problem) {
  return {
    denied: "call.perm_denied",
    "denied-camera": "call.perm_denied_camera",
    "no-camera": "call.perm_missing_camera",
    "no-mic": "call.perm_missing_mic",
    busy: "call.perm_busy",
    insecure: "call.perm_insecure",
    other: "call.perm_denied",
  }[problem];
}

/**
 * Cameras and microphones for the pickers (labels are empty until permission is granted).
 * @returns {Promise<{cameras: MediaDeviceInfo[], mics: MediaDeviceInfo[]}>}
 */
export async function list() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], mics: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: all.filter((d) => d.kind === "videoinput" && d.deviceId),
    mics: all.filter((d) => d.kind === "audioinput" && d.deviceId),
  };
}

/**
 * Stop every track of a stream.
 * @param {MediaStream | null | undefined} stream
 */
export function stop(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

/** Whether this browser can share a screen at all (phones cannot). */
export function canShareScreen() {
  return Boolean(navigator.mediaDevices && "getDisplayMedia" in navigator.mediaDevices);
}

/**
 * A microphone level meter: calls `onLevel(0..1)` about ten times a second until stopped.
 * Uses its own AudioContext (allowed: it only analyses, it plays nothing).
 * @param {MediaStream} stream
 * @param {(level: number) => void} onLevel
 * @returns {() => void} stop
 */
export function meter(stream, onLevel) {
  const Ctx = window.AudioContext || /** @type {any} */ (window).webkitAudioContext;
  if (!Ctx || stream.getAudioTracks().length === 0) return () => {};
  const ctx = new Ctx();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getByteTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v - 128));
    onLevel(Math.min(1, peak / 96));
  }, 100);
  return () => {
    clearInterval(timer);
    source.disconnect();
    ctx.close().catch(() => {});
  };
}

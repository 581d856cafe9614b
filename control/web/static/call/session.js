// The visitor's side of one call, with every side effect: the devices, the click, the
// signalling socket, the peer connection, the relay check, ICE restarts (when ICE is lost, and
// when the device changes networks), hang up, callbacks,
// and sessionStorage (to resume after a reload; cleared when the call is over). It feeds
// what happens into the pure machine (machine.js) and tells its element through events:
//
// - `change` (detail: the machine's State) whenever the state changes;
// - `local` (detail: {stream, video, problem}) when the camera/microphone change;
// - `remote` (detail: {kind, track}) for the other side's audio, camera and screen tracks;
// - `remote-media` (detail: {camera, screen, mic}) what the other side says it sends;
// - `quality` (detail: {level, rttMs, lossPct}) every two seconds in a call.
//
// Nothing here touches the DOM.

import * as api from "./api.js";
import { check } from "./check.js";
import * as devices from "./devices.js";
import { initial, LIVE, OVER, saved, transition } from "./machine.js";
import { watch } from "./quality.js";
import { Peer, Signal } from "./rtc.js";

/** @typedef {import("./machine.js").State} State */
/** @typedef {import("./machine.js").CallEvent} CallEvent */
/** @typedef {import("./machine.js").CallMedia} CallMedia */

const STORE_PREFIX = "clickacall.call.";

export class CallSession extends EventTarget {
  /**
   * @param {{link: string, lang: string, media: CallMedia[]}} opts
   */
  constructor(opts) {
    super();
    this.link = opts.link;
    this.lang = opts.lang;
    this.allowed = opts.media.length ? opts.media : /** @type {CallMedia[]} */ (["voice"]);
    /** @type {State} */
    this.state = initial(this.allowed[0]);
    /** @type {{stream: MediaStream | null, video: boolean, problem: import("./devices.js").DeviceProblem | null}} */
    this.localMedia = { stream: null, video: false, problem: null };
    /** @type {MediaStreamTrack | null} */
    this.screen = null;
    this.muted = false;
    this.cameraOn = true;
    /** @type {{token: string, signal: string, iceServers: RTCIceServer[], relayOnly: boolean} | null} */
    this.creds = null;
    /** @type {Signal | null} */
    this.signal = null;
    /** @type {Peer | null} */
    this.peer = null;
    /** @type {(() => void) | null} */
    this.stopQuality = null;
    this.restarting = false;
  }

  /**
   * @param {string} type
   * @param {any} [detail]
   */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {import("./machine.js").StateName} name */
  isIn(name) {
    return this.state.name === name;
  }

  /** @param {CallEvent} e */
  dispatch(e) {
    const next = transition(this.state, e);
    if (next === this.state) return;
    const before = this.state;
    this.state = next;
    this.persist();
    if (before.name !== next.name) this.entered(before, next);
    this.emit("change", next);
  }

  /**
   * Side effects of entering a state.
   * @param {State} before
   * @param {State} next
   */
  entered(before, next) {
    if (next.name === "in-call" && !this.stopQuality && this.peer) {
      this.stopQuality = watch(this.peer.pc, (q) => this.emit("quality", q));
    }
    if (next.name === "in-call" && before.name === "reconnecting" && this.signal) {
      this.signal.send({ type: "reconnected" });
    }
    // over, or only a form left to fill in: the camera and microphone go off too
    if (OVER.has(next.name) || next.name === "callback") this.teardown(true);
  }

  // --- devices ---------------------------------------------------------------------------

  /**
   * Open (or reopen) the camera and microphone.
   * @param {{video?: boolean, cameraId?: string, micId?: string}} [want]
   */
  async openDevices(want = {}) {
    const video = want.video ?? this.allowed.includes("video");
    const old = this.localMedia.stream;
    const got = await devices.open({ video, cameraId: want.cameraId, micId: want.micId });
    devices.stop(old);
    this.localMedia = got;
    this.cameraOn = got.video;
    if (got.stream) for (const t of got.stream.getAudioTracks()) t.enabled = !this.muted;
    if (this.peer && got.stream) {
      await this.peer.setTrack("audio", got.stream.getAudioTracks()[0] || null);
      await this.peer.setTrack("camera", got.stream.getVideoTracks()[0] || null);
    }
    this.emit("local", got);
    return got;
  }

  closeDevices() {
    devices.stop(this.localMedia.stream);
    this.localMedia = { stream: null, video: false, problem: this.localMedia.problem };
    this.emit("local", this.localMedia);
  }

  // --- the call ----------------------------------------------------------------------------

  /** @param {CallMedia} media */
  async start(media) {
    if (this.state.name !== "idle") return;
    this.dispatch({ type: "start", media, at: Date.now() });
    if (media === "voice" && this.localMedia.video) {
      for (const t of this.localMedia.stream?.getVideoTracks() || []) t.stop();
      this.localMedia = { ...this.localMedia, video: false };
      this.cameraOn = false;
      this.emit("local", this.localMedia);
    }
    let res;
    try {
      res = await api.click(this.link, { media, lang: this.lang });
    } catch (e) {
      await this.refused(e);
      return;
    }
    if (!this.isIn("checking")) {
      api.hangup(res.call_id, res.token).catch(() => {}); // cancelled meanwhile
      return;
    }
    this.creds = { token: res.token, signal: res.signal, iceServers: res.iceServers, relayOnly: res.relay_only !== false };
    this.dispatch({ type: "rung", callId: res.call_id, callRef: res.call_ref || null, at: Date.now() });
    if (res.staff_name) this.dispatch({ type: "answered", staffName: res.staff_name, at: Date.now() });
    this.connect();
    this.runCheck(res.call_id, res.token, res.iceServers);
  }

  /** @param {unknown} e */
  async refused(e) {
    const err = e instanceof api.ApiError ? e : new api.ApiError(0, "network", String(e));
    const code = err.code;
    if (err.status === 409 && /closed/.test(code)) {
      let nextOpen = err.body?.error?.next_open ?? null;
      if (nextOpen === null) nextOpen = await api.linkStatus(this.link).then((s) => s.next_open, () => null);
      this.dispatch({ type: "refused", reason: "closed", nextOpen });
    } else if (err.status === 409 && /inactive/.test(code)) {
      this.dispatch({ type: "refused", reason: "inactive" });
    } else if (err.status === 409 || err.status === 503) {
      this.dispatch({ type: "refused", reason: "unavailable" });
    } else if (err.status === 429) {
      // the click limits (too many calls from here, on this link, or ringing at once)
      this.dispatch({ type: "fail", error: `busy:${err.retryAfter ?? 60}`, at: Date.now() });
    } else {
      this.dispatch({ type: "fail", error: err.status === 0 ? "network" : err.message, at: Date.now() });
    }
  }

  /** Signalling and the peer connection of the call in `this.creds`. */
  connect() {
    const creds = this.creds;
    if (!creds) return;
    const signal = new Signal(api.wsUrl(creds.signal), creds.token);
    this.signal = signal;
    signal.addEventListener("message", (e) => this.onSignal(/** @type {CustomEvent} */ (e).detail));
    signal.addEventListener("closed", (e) => {
      const { final, code } = /** @type {CustomEvent} */ (e).detail;
      if (final && LIVE.has(this.state.name)) this.overFromServer(code);
    });
    signal.connect();
    this.makePeer();
  }

  async makePeer() {
    const creds = this.creds;
    if (!creds || !this.signal) return;
    const signal = this.signal;
    const peer = new Peer({ iceServers: creds.iceServers, relayOnly: creds.relayOnly, polite: false, send: (m) => signal.send(m) });
    this.peer = peer;
    peer.addEventListener("track", (e) => this.emit("remote", /** @type {CustomEvent} */ (e).detail));
    peer.addEventListener("remote", (e) => this.emit("remote-media", /** @type {CustomEvent} */ (e).detail));
    peer.addEventListener("connected", () => this.dispatch({ type: "connected", at: Date.now() }));
    peer.addEventListener("ice-lost", () => this.iceLost());
    peer.addEventListener("network-change", () => this.networkChanged());
    const stream = this.localMedia.stream;
    await peer.setTrack("audio", stream?.getAudioTracks()[0] || null);
    const cam = stream?.getVideoTracks()[0] || null;
    if (cam) cam.enabled = this.cameraOn;
    await peer.setTrack("camera", this.state.media === "video" ? cam : null);
  }

  /** @param {Record<string, any>} msg */
  onSignal(msg) {
    const type = msg.type;
    if (type === "ready" || type === "call") {
      if (msg.staff_name) this.dispatch({ type: "answered", staffName: msg.staff_name, at: Date.now() });
      this.onStatus(msg.status, msg.staff_name || null);
    } else if (type === "reconnecting" || type === "reconnected") {
      this.dispatch({ type: "peer", reconnecting: type === "reconnecting" });
    } else if (type === "bye") {
      this.dispatch({ type: "hangup", by: "them", at: Date.now() });
    } else if (this.peer) {
      this.peer.handle(msg);
    }
  }

  /**
   * @param {string} status
   * @param {string | null} staffName
   */
  onStatus(status, staffName) {
    if (status === "answered") this.dispatch({ type: "answered", staffName, at: Date.now() });
    else if (status === "missed" || status === "rejected") this.dispatch({ type: "unanswered", reason: status });
    else if (status === "ended") this.dispatch({ type: "hangup", by: "them", at: Date.now() });
    else if (status === "abandoned") this.dispatch({ type: "cancel", at: Date.now() });
    else if (status === "failed") this.dispatch({ type: "fail", error: "failed", at: Date.now() });
  }

  /** @param {number} code */
  overFromServer(code) {
    if (this.state.name === "ringing") this.dispatch({ type: "unanswered", reason: "missed" });
    else if (code === 4401 || code === 4403 || code === 4404) this.dispatch({ type: "fail", error: "network", at: Date.now() });
    else this.dispatch({ type: "hangup", by: "them", at: Date.now() });
  }

  async iceLost() {
    if (!this.peer || !this.creds || !this.state.callId || this.restarting) return;
    this.dispatch({ type: "ice-lost" });
    this.signal?.send({ type: "reconnecting" });
    this.restarting = true;
    const callId = this.state.callId;
    const fetchServers = async () => {
      const creds = this.creds;
      if (!creds) throw new Error("the call is over");
      try {
        const fresh = await api.freshIce(callId, creds.token);
        this.creds = { ...creds, iceServers: fresh.iceServers };
        this.persist();
        return fresh.iceServers;
      } catch (e) {
        if (e instanceof api.ApiError && e.status === 409) throw e;
        if (e instanceof api.ApiError && e.status === 503) return null; // no usable relay yet
        return creds.iceServers; // the control plane is out of reach: try the ones we have
      }
    };
    try {
      await this.peer.recover(fetchServers);
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 409) this.dispatch({ type: "hangup", by: "them", at: Date.now() });
    } finally {
      this.restarting = false;
    }
  }

  /** The device changed networks in the call: one ICE restart with fresh credentials (if
   * the old path dies meanwhile, iceLost's recovery takes over). */
  async networkChanged() {
    const peer = this.peer;
    const creds = this.creds;
    const callId = this.state.callId;
    if (!peer || !creds || !callId || this.restarting || !LIVE.has(this.state.name)) return;
    let servers = creds.iceServers;
    try {
      servers = (await api.freshIce(callId, creds.token)).iceServers;
      if (this.creds) this.creds = { ...this.creds, iceServers: servers };
      this.persist();
    } catch {
      /* the ones we have */
    }
    if (this.peer === peer && !this.restarting) peer.restart(servers);
  }

  /**
   * @param {string} callId
   * @param {string} token
   * @param {RTCIceServer[]} servers
   */
  async runCheck(callId, token, servers) {
    const result = await check(servers);
    this.dispatch({ type: "checked", verdict: result.verdict });
    api.postCheck(callId, token, result).catch(() => {});
  }

  /** Cancel while it rings (the call is then abandoned) or before the click came back. */
  async cancel() {
    const { callId } = this.state;
    const token = this.creds?.token;
    this.dispatch({ type: "cancel", at: Date.now() });
    if (callId && token) await api.hangup(callId, token).catch(() => {});
  }

  async hangup() {
    const { callId } = this.state;
    const token = this.creds?.token;
    this.signal?.send({ type: "bye" });
    this.dispatch({ type: "hangup", by: "me", at: Date.now() });
    if (callId && token) await api.hangup(callId, token).catch(() => {});
  }

  /**
   * The callback form instead of a call: while it rings on a network that blocks calls (the
   * ringing stops), or before calling when the link is closed or nobody is available.
   * @param {string} [reason] "closed" | "unavailable" (from the pre-call screen)
   */
  async askCallback(reason) {
    const { callId } = this.state;
    const token = this.creds?.token;
    // the form first (entering it closes the signalling socket), then stop the ringing: in the
    // other order the server's "abandoned" on the socket ended the page before the form showed
    this.dispatch({ type: "ask-callback", reason: this.state.name === "idle" ? reason || "unavailable" : "blocked" });
    if (callId && token) await api.hangup(callId, token).catch(() => {});
  }

  /**
   * @param {{name: string, contact: string}} who
   * @returns {Promise<void>}
   */
  async sendCallback(who) {
    const { callId } = this.state;
    const token = this.creds?.token;
    let res = null;
    if (callId && token) {
      try {
        res = await api.callCallback(callId, token, who);
      } catch (e) {
        if (!(e instanceof api.ApiError) || e.status === 422) throw e;
      }
    }
    if (!res) res = await api.linkCallback(this.link, { ...who, lang: this.lang });
    this.creds = null;
    this.dispatch({ type: "callback-sent", callRef: res.call_ref, at: Date.now() });
  }

  reset() {
    this.dispatch({ type: "reset" });
  }

  // --- in the call -----------------------------------------------------------------------

  /** @param {boolean} muted */
  setMuted(muted) {
    this.muted = muted;
    for (const t of this.localMedia.stream?.getAudioTracks() || []) t.enabled = !muted;
    this.peer?.announce();
  }

  /** @param {boolean} on */
  async setCamera(on) {
    this.cameraOn = on;
    const cam = this.localMedia.stream?.getVideoTracks()[0] || null;
    if (cam) {
      cam.enabled = on;
      if (this.peer) await this.peer.setTrack("camera", on ? cam : null);
    } else if (on) {
      await this.openDevices({ video: true });
    }
    this.emit("local", this.localMedia);
  }

  /** @param {boolean} on @returns {Promise<boolean>} whether we share now */
  async setScreen(on) {
    if (!on) {
      this.screen?.stop();
      this.screen = null;
      await this.peer?.setTrack("screen", null);
      return false;
    }
    if (!devices.canShareScreen()) return false;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch {
      return false;
    }
    const track = stream.getVideoTracks()[0];
    if (!track) return false;
    track.contentHint = "detail";
    this.screen = track;
    track.addEventListener("ended", () => {
      if (this.screen === track) {
        this.screen = null;
        this.peer?.setTrack("screen", null);
        this.emit("screen-ended");
      }
    });
    await this.peer?.setTrack("screen", track);
    return true;
  }

  // --- teardown and storage ----------------------------------------------------------------

  /** @param {boolean} devicesToo */
  teardown(devicesToo) {
    this.stopQuality?.();
    this.stopQuality = null;
    this.peer?.close();
    this.peer = null;
    this.signal?.close();
    this.signal = null;
    this.screen?.stop();
    this.screen = null;
    if (devicesToo) this.closeDevices();
  }

  persist() {
    try {
      const keep = saved(this.state);
      if (keep && this.creds) sessionStorage.setItem(STORE_PREFIX + this.link, JSON.stringify({ keep, creds: this.creds }));
      else sessionStorage.removeItem(STORE_PREFIX + this.link);
    } catch {
      /* storage blocked (a third-party frame): no resuming, nothing else lost */
    }
  }

  /** After a reload: pick the call up again (true if there was one). */
  resume() {
    let stored = null;
    try {
      stored = JSON.parse(sessionStorage.getItem(STORE_PREFIX + this.link) || "null");
    } catch {
      stored = null;
    }
    if (!stored || !stored.keep || !stored.creds) return false;
    this.creds = stored.creds;
    this.dispatch({ type: "resume", saved: stored.keep, at: Date.now() });
    if (!LIVE.has(this.state.name) || !this.state.callId) return false;
    this.connect();
    return true;
  }
}

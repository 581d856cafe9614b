// The staff member's side of one answered call, without any DOM: their camera and
// microphone, the call's signalling socket (with the call token the answer returned), the
// polite side of the peer connection, ICE restarts with fresh credentials, and hang up.
//
// Events out: `change` (detail: {state, startedAt, peerReconnecting}), `local` (the own
// stream changed), `remote` ({kind, track}), `remote-media` ({camera, screen, mic}),
// `quality` ({level, rttMs, lossPct}), `ended` (detail: {by: "me" | "them"}).

import * as devices from "../call/devices.js";
import { watch } from "../call/quality.js";
import { Peer, Signal } from "../call/rtc.js";
import { ApiError, wsUrl } from "../call/api.js";
import * as staffapi from "./staffapi.js";

/** @typedef {"connecting" | "in-call" | "reconnecting" | "ended"} StaffCallState */

export class StaffCall extends EventTarget {
  /**
   * @param {{callId: string, token: string, signal: string, iceServers: RTCIceServer[], relayOnly?: boolean, video: boolean, linkName: string}} opts
   */
  constructor(opts) {
    super();
    this.opts = opts;
    /** @type {StaffCallState} */
    this.state = "connecting";
    /** @type {number | null} */
    this.startedAt = null;
    this.peerReconnecting = false;
    /** @type {MediaStream | null} */
    this.stream = null;
    this.video = false;
    this.muted = false;
    this.cameraOn = false;
    /** @type {MediaStreamTrack | null} */
    this.screen = null;
    /** @type {Signal | null} */
    this.signal = null;
    /** @type {Peer | null} */
    this.peer = null;
    /** @type {(() => void) | null} */
    this.stopQuality = null;
    this.restarting = false;
  }

  /** @param {string} type @param {any} [detail] */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {StaffCallState} state */
  set(state) {
    if (this.state === "ended") return;
    const before = this.state;
    this.state = state;
    if (state === "in-call" && this.startedAt === null) this.startedAt = Date.now();
    if (state === "in-call" && before === "reconnecting") this.signal?.send({ type: "reconnected" });
    if (state === "in-call" && !this.stopQuality && this.peer) this.stopQuality = watch(this.peer.pc, (q) => this.emit("quality", q));
    this.emit("change", { state, startedAt: this.startedAt, peerReconnecting: this.peerReconnecting });
  }

  async start() {
    const got = await devices.open({ video: this.opts.video });
    this.stream = got.stream;
    this.video = got.video;
    this.cameraOn = got.video;
    this.emit("local", got);
    const signal = new Signal(wsUrl(this.opts.signal), this.opts.token);
    this.signal = signal;
    signal.addEventListener("message", (e) => this.onSignal(/** @type {CustomEvent} */ (e).detail));
    signal.addEventListener("closed", (e) => {
      if (/** @type {CustomEvent} */ (e).detail.final) this.finish("them");
    });
    this.makePeer();
    signal.connect();
  }

  makePeer() {
    const signal = /** @type {Signal} */ (this.signal);
    const peer = new Peer({ iceServers: this.opts.iceServers, relayOnly: this.opts.relayOnly, polite: true, send: (m) => signal.send(m) });
    this.peer = peer;
    peer.addEventListener("track", (e) => this.emit("remote", /** @type {CustomEvent} */ (e).detail));
    peer.addEventListener("remote", (e) => this.emit("remote-media", /** @type {CustomEvent} */ (e).detail));
    peer.addEventListener("connected", () => this.set("in-call"));
    peer.addEventListener("ice-lost", () => this.iceLost());
    peer.addEventListener("network-change", () => this.networkChanged());
    peer.addEventListener("renew", (e) => {
      // the visitor reloaded: a new peer connection for its new session
      this.stopQuality?.();
      this.stopQuality = null;
      peer.close();
      this.makePeer();
      this.peer?.handle(/** @type {CustomEvent} */ (e).detail);
    });
    const audio = this.stream?.getAudioTracks()[0] || null;
    if (audio) audio.enabled = !this.muted;
    peer.local.audio = audio;
    peer.local.camera = this.cameraOn ? this.stream?.getVideoTracks()[0] || null : null;
    peer.local.screen = this.screen;
  }

  /** @param {Record<string, any>} msg */
  onSignal(msg) {
    if (msg.type === "call" || msg.type === "ready") {
      if (["ended", "abandoned", "missed", "failed", "rejected"].includes(msg.status)) this.finish("them");
    } else if (msg.type === "reconnecting" || msg.type === "reconnected") {
      this.peerReconnecting = msg.type === "reconnecting";
      this.emit("change", { state: this.state, startedAt: this.startedAt, peerReconnecting: this.peerReconnecting });
    } else if (msg.type === "bye") {
      this.finish("them");
    } else {
      this.peer?.handle(msg);
    }
  }

  async iceLost() {
    if (this.restarting || this.state === "ended") return;
    this.set("reconnecting");
    this.signal?.send({ type: "reconnecting" });
    this.restarting = true;
    const fetchServers = async () => {
      try {
        const fresh = await staffapi.freshIce(this.opts.callId, this.opts.token);
        this.opts.iceServers = fresh.iceServers;
        return fresh.iceServers;
      } catch (e) {
        if (e instanceof ApiError && e.status === 409) throw e;
        if (e instanceof ApiError && e.status === 503) return null; // no usable relay yet
        return this.opts.iceServers; // the control plane is out of reach: try the ones we have
      }
    };
    try {
      await this.peer?.recover(fetchServers);
    } catch {
      /* the call is over: its socket says so */
    } finally {
      this.restarting = false;
    }
  }

  /** This device changed networks in the call: one ICE restart with fresh credentials (if
   * the old path dies meanwhile, iceLost's recovery takes over). */
  async networkChanged() {
    const peer = this.peer;
    if (!peer || this.restarting || this.state === "ended") return;
    try {
      const fresh = await staffapi.freshIce(this.opts.callId, this.opts.token);
      this.opts.iceServers = fresh.iceServers;
    } catch {
      /* the ones we have */
    }
    if (this.peer === peer && !this.restarting) peer.restart(this.opts.iceServers);
  }

  /** @param {boolean} muted */
  setMuted(muted) {
    this.muted = muted;
    for (const t of this.stream?.getAudioTracks() || []) t.enabled = !muted;
    this.peer?.announce();
  }

  /** @param {boolean} on */
  async setCamera(on) {
    let cam = this.stream?.getVideoTracks()[0] || null;
    if (on && !cam) {
      const got = await devices.open({ video: true });
      if (!got.video || !got.stream) return false;
      devices.stop(this.stream);
      this.stream = got.stream;
      cam = got.stream.getVideoTracks()[0];
      this.video = true;
      await this.peer?.setTrack("audio", got.stream.getAudioTracks()[0] || null);
    }
    this.cameraOn = on && Boolean(cam);
    if (cam) cam.enabled = this.cameraOn;
    await this.peer?.setTrack("camera", this.cameraOn ? cam : null);
    this.emit("local", { stream: this.stream, video: this.video });
    return this.cameraOn;
  }

  /** @param {boolean} on */
  async setScreen(on) {
    if (!on || !devices.canShareScreen()) {
      this.screen?.stop();
      this.screen = null;
      await this.peer?.setTrack("screen", null);
      return false;
    }
    try {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      this.screen = s.getVideoTracks()[0] || null;
    } catch {
      return false;
    }
    const track = this.screen;
    if (!track) return false;
    track.addEventListener("ended", () => {
      if (this.screen === track) this.setScreen(false).then(() => this.emit("screen-ended"));
    });
    await this.peer?.setTrack("screen", track);
    return true;
  }

  async hangup() {
    this.signal?.send({ type: "bye" });
    await staffapi.hangup(this.opts.callId, this.opts.token).catch(() => {});
    this.finish("me");
  }

  /** @param {"me" | "them"} by */
  finish(by) {
    if (this.state === "ended") return;
    this.state = "ended";
    this.stopQuality?.();
    this.peer?.close();
    this.signal?.close();
    this.screen?.stop();
    devices.stop(this.stream);
    this.emit("ended", { by, duration: this.startedAt === null ? null : (Date.now() - this.startedAt) / 1000 });
  }
}

// The media side of a call, shared by the visitor's page and the staff console:
//
// - `Signal`: the call's signalling WebSocket (`/v1/calls/{id}/signal`, same origin). It
//   authenticates with its first message, resumes after a drop with `after: <last seq>`, pings
//   every 25 s and reconnects with backoff until the call is over (close 1000 or 4409) or the
//   token is refused (4401/4403/4404). Events: `message` (detail: the server's JSON),
//   `closed` (detail: {code, final}).
// - `Peer`: one RTCPeerConnection, relay-only unless the link allows direct paths. Perfect
//   negotiation (the staff member is the polite side), three fixed transceivers (audio,
//   camera, screen: sharing a screen is a `replaceTrack`, never a renegotiation), a negotiated
//   data channel for "my camera is off / I share my screen", and ICE restarts with fresh
//   credentials. Every message carries `session`, the visitor's peer connection's id, so a
//   visitor who reloads starts a new session and both sides ignore what belonged to the old
//   one. Events: `track` ({kind: "audio"|"camera"|"screen", track}), `state`
//   ({connection}), `connected`, `ice-lost` (failed, or disconnected for 3 s),
//   `network-change` (the device went online again or changed networks, once connected: an
//   ICE restart with fresh credentials finds the new path before the old one fails), `remote`
//   ({camera, screen, mic}: what the other side says it sends), `renew` (the polite side got
//   an offer of a new session: build a new Peer and hand it that message).
// - `Peer.recover(fetchServers)`: ICE restarts until connected again, each with fresh
//   credentials; while the control plane has none to give (no usable relay yet: 503), it
//   asks again with backoff (when the control plane is unreachable, the old ones are reused).

export const KINDS = /** @type {const} */ (["audio", "camera", "screen"]);
export const DISCONNECT_GRACE_MS = 3000;
/** how long one ICE restart may take before the next one, with credentials fetched again */
export const RESTART_WAIT_MS = 8000;
const REFETCH_MAX_MS = 5000;
const PING_MS = 25000;
const FINAL_CLOSES = new Set([1000, 4401, 4403, 4404, 4409]);

/** @typedef {"audio" | "camera" | "screen"} TrackKind */

export class Signal extends EventTarget {
  /**
   * @param {string} url ws(s):// URL of the call's signalling socket
   * @param {string} token the party's session token
   */
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    this.last = 0;
    this.stopped = false;
    this.retries = 0;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {string[]} */
    this.queue = [];
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.pinger = undefined;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token, after: this.last }));
      this.retries = 0;
      for (const text of this.queue.splice(0)) ws.send(text);
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.raw({ type: "ping" }), PING_MS);
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (typeof msg.seq === "number") this.last = Math.max(this.last, msg.seq);
      if (msg.type === "pong") return;
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    };
    ws.onclose = (e) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      const final = FINAL_CLOSES.has(e.code);
      if (final || this.stopped) {
        this.stopped = true;
        this.dispatchEvent(new CustomEvent("closed", { detail: { code: e.code, final: true } }));
        return;
      }
      this.dispatchEvent(new CustomEvent("closed", { detail: { code: e.code, final: false } }));
      const wait = Math.min(10000, 500 * 2 ** this.retries++);
      setTimeout(() => this.connect(), wait);
    };
  }

  /** @param {Record<string, any>} msg */
  send(msg) {
    this.raw(msg);
  }

  /** @param {Record<string, any>} msg */
  raw(msg) {
    const text = JSON.stringify(msg);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    else if (msg.type !== "ping") this.queue.push(text);
  }

  close() {
    this.stopped = true;
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }
}

/** @returns {string} */
function newSession() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The Network Information API's object (Chromium; it fires `change` when the device moves to
 * another network), or null.
 * @returns {EventTarget | null}
 */
function networkInformation() {
  const c = /** @type {any} */ (navigator).connection;
  return c && typeof c.addEventListener === "function" ? c : null;
}

export class Peer extends EventTarget {
  /**
   * @param {{iceServers: RTCIceServer[], relayOnly?: boolean, polite: boolean, send: (msg: Record<string, any>) => void}} opts
   */
  constructor(opts) {
    super();
    this.polite = opts.polite;
    this.sendSignal = opts.send;
    this.policy = /** @type {RTCIceTransportPolicy} */ (opts.relayOnly === false ? "all" : "relay");
    /** the visitor's session id: its own, or (polite side) the one of the offer it answers */
    this.session = this.polite ? null : newSession();
    this.pc = new RTCPeerConnection({ iceServers: opts.iceServers, iceTransportPolicy: this.policy, bundlePolicy: "max-bundle" });
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.answerPending = false;
    /** @type {Record<TrackKind, MediaStreamTrack | null>} */
    this.local = { audio: null, camera: null, screen: null };
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.graceTimer = undefined;
    this.closed = false;
    this.everConnected = false;
    this.channel = this.pc.createDataChannel("ctl", { negotiated: true, id: 0 });
    this.channel.onmessage = (e) => {
      try {
        this.emit("remote", JSON.parse(String(e.data)));
      } catch {
        /* not ours */
      }
    };
    this.channel.onopen = () => this.announce();
    if (!this.polite) {
      for (const kind of KINDS) this.pc.addTransceiver(kind === "audio" ? "audio" : "video", { direction: "sendrecv" });
    }
    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = (e) => {
      if (!this.session) return;
      if (e.candidate) {
        const c = e.candidate;
        this.sendSignal({ type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, session: this.session });
      } else {
        this.sendSignal({ type: "end-of-candidates", session: this.session });
      }
    };
    this.pc.ontrack = (e) => {
      const index = this.pc.getTransceivers().indexOf(e.transceiver);
      const kind = KINDS[index] || (e.track.kind === "audio" ? "audio" : "camera");
      this.emit("track", { kind, track: e.track });
    };
    this.pc.onconnectionstatechange = () => this.onState();
    this.pc.oniceconnectionstatechange = () => this.onState();
    this.onNetwork = () => {
      if (!this.closed && this.everConnected) this.emit("network-change");
    };
    window.addEventListener("online", this.onNetwork);
    networkInformation()?.addEventListener("change", this.onNetwork);
  }

  /**
   * @param {string} type
   * @param {any} [detail]
   */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  onState() {
    const ice = this.pc.iceConnectionState;
    const conn = this.pc.connectionState;
    this.emit("state", { connection: conn, ice });
    if (conn === "connected" || ice === "connected" || ice === "completed") {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
      if (conn === "connected") {
        this.everConnected = true;
        this.emit("connected");
      }
      return;
    }
    if (ice === "failed" || conn === "failed") {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
      this.emit("ice-lost");
    } else if (ice === "disconnected" && this.graceTimer === undefined) {
      this.graceTimer = setTimeout(() => {
        this.graceTimer = undefined;
        if (this.pc.iceConnectionState === "disconnected") this.emit("ice-lost");
      }, DISCONNECT_GRACE_MS);
    }
  }

  async negotiate() {
    if (this.closed || (this.polite && !this.session)) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const d = this.pc.localDescription;
      if (d) this.sendSignal({ type: d.type, sdp: d.sdp, session: this.session });
    } catch (e) {
      this.emit("error", e);
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * Set what we send: the microphone, the camera (null: camera off), a shared screen.
   * @param {TrackKind} kind
   * @param {MediaStreamTrack | null} track
   */
  async setTrack(kind, track) {
    this.local[kind] = track;
    const t = this.pc.getTransceivers()[KINDS.indexOf(kind)];
    if (t) await t.sender.replaceTrack(track);
    this.announce();
  }

  /** Tell the other side what we send (over the data channel, when it is open). */
  announce() {
    if (this.channel.readyState !== "open") return;
    const msg = {
      camera: Boolean(this.local.camera && this.local.camera.enabled),
      screen: Boolean(this.local.screen),
      mic: Boolean(this.local.audio && this.local.audio.enabled),
    };
    this.channel.send(JSON.stringify(msg));
  }

  /** The polite side answers with its own tracks on the transceivers the offer made. */
  async attach() {
    const all = this.pc.getTransceivers();
    for (let i = 0; i < all.length && i < KINDS.length; i++) {
      const t = all[i];
      if (t.receiver.track.kind !== (KINDS[i] === "audio" ? "audio" : "video")) continue;
      t.direction = "sendrecv";
      const track = this.local[KINDS[i]];
      if (t.sender.track !== track) await t.sender.replaceTrack(track);
    }
  }

  /**
   * A signalling message from the other party.
   * @param {Record<string, any>} msg
   */
  async handle(msg) {
    if (this.closed) return;
    const type = msg.type;
    if (type === "offer" || type === "answer") {
      if (this.polite && type === "offer") {
        if (this.session && msg.session && msg.session !== this.session) {
          this.emit("renew", msg);
          return;
        }
        this.session = msg.session || this.session || "none";
      } else if (msg.session && msg.session !== this.session) {
        return; // an answer to an offer of an earlier session (before a reload)
      }
      const ready = !this.makingOffer && (this.pc.signalingState === "stable" || this.answerPending);
      const collision = type === "offer" && !ready;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      try {
        this.answerPending = type === "answer";
        await this.pc.setRemoteDescription({ type, sdp: msg.sdp });
        this.answerPending = false;
        if (type === "offer") {
          await this.attach();
          await this.pc.setLocalDescription();
          const d = this.pc.localDescription;
          if (d) this.sendSignal({ type: d.type, sdp: d.sdp, session: this.session });
        }
      } catch (e) {
        this.answerPending = false;
        this.emit("error", e);
      }
    } else if (type === "candidate") {
      if (msg.session && this.session && msg.session !== this.session) return;
      try {
        await this.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
      } catch (e) {
        if (!this.ignoreOffer) this.emit("error", e);
      }
    }
  }

  /**
   * An ICE restart with fresh relay credentials.
   * @param {RTCIceServer[]} iceServers
   */
  restart(iceServers) {
    if (this.closed) return;
    try {
      this.pc.setConfiguration({ iceServers, iceTransportPolicy: this.policy, bundlePolicy: "max-bundle" });
    } catch {
      /* keep the old servers */
    }
    this.pc.restartIce();
  }

  /**
   * Restart ICE until the connection is back, fetching fresh ICE servers for each restart.
   * `fetchServers` returns null when the control plane has none to give now (no usable relay
   * yet): it is asked again after a pause, with no restart meanwhile; it throws when the
   * call is over (which ends the recovery with that error). Returns whether it connected.
   * @param {() => Promise<RTCIceServer[] | null>} fetchServers
   * @returns {Promise<boolean>}
   */
  async recover(fetchServers) {
    let pause = 1000;
    while (!this.closed && this.pc.connectionState !== "connected") {
      const servers = await fetchServers();
      if (this.closed) return false;
      if (servers) {
        this.restart(servers);
        if (await this.connectedWithin(RESTART_WAIT_MS)) return true;
        pause = 1000;
      } else {
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(REFETCH_MAX_MS, pause * 2);
      }
    }
    return !this.closed;
  }

  /**
   * @param {number} ms
   * @returns {Promise<boolean>} whether the connection is (or becomes) connected within `ms`
   */
  connectedWithin(ms) {
    return new Promise((resolve) => {
      if (this.pc.connectionState === "connected") return resolve(true);
      const done = (/** @type {boolean} */ ok) => {
        clearTimeout(timer);
        this.removeEventListener("connected", onConnected);
        resolve(ok);
      };
      const onConnected = () => done(true);
      const timer = setTimeout(() => done(this.pc.connectionState === "connected"), ms);
      this.addEventListener("connected", onConnected);
    });
  }

  close() {
    this.closed = true;
    window.removeEventListener("online", this.onNetwork);
    networkInformation()?.removeEventListener("change", this.onNetwork);
    clearTimeout(this.graceTimer);
    this.channel.close();
    this.pc.close();
  }
}

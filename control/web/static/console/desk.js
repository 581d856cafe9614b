// A signed-in staff member's desk, without any DOM: who they are (`/v1/me`), a console token
// minted under their cookie session and refreshed before it expires, the live events socket
// (`/v1/staff/events`: ringing calls, presence, callbacks), presence changes, the ringing
// list and the open callbacks. The same member in two tabs has two desks; the server rings
// both and tells both when a call stops ringing.
//
// Events out: `change` (anything the console shows changed), `gone` (detail: {callId,
// status}: a call stopped ringing here), `signed-out`.

import { ApiError, wsUrl } from "../call/api.js";
import * as staffapi from "./staffapi.js";

const PING_MS = 25000;
const REFRESH_BEFORE_S = 300;

/** @typedef {{call: Record<string, any>, link_name: string, media: string[], visitor_region?: string | null}} Ringing */
/** @typedef {{call: Record<string, any>, link_name: string, name_contact: string, requested_at: number}} Callback */

export class Desk extends EventTarget {
  constructor() {
    super();
    /** @type {"loading" | "ready" | "offline" | "signed-out"} */
    this.state = "loading";
    /** @type {import("./staffapi.js").Me | null} */
    this.me = null;
    this.token = "";
    this.tokenExpires = 0;
    /** @type {{status: "available" | "away", wrapup_until: number | null, reason: string | null}} */
    this.presence = { status: "available", wrapup_until: null, reason: null };
    /** @type {Map<string, Ringing>} */
    this.ringing = new Map();
    /** @type {Callback[]} */
    this.callbacks = [];
    /** @type {WebSocket | null} */
    this.ws = null;
    this.retries = 0;
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.refreshTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.pinger = undefined;
  }

  /** @param {string} type @param {any} [detail] */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  changed() {
    this.emit("change");
  }

  async start() {
    try {
      this.me = await staffapi.me();
      this.presence = { status: this.me.staff.presence || "available", wrapup_until: this.me.staff.wrapup_until ?? null, reason: null };
      await this.mint();
    } catch (e) {
      this.failed(e);
      return;
    }
    this.connect();
    this.loadCallbacks();
  }

  /** @param {unknown} e */
  failed(e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      this.signOut();
    } else {
      this.state = "offline";
      this.changed();
      setTimeout(() => this.stopped || this.start(), Math.min(15000, 1000 * 2 ** this.retries++));
    }
  }

  signOut() {
    this.state = "signed-out";
    this.stop();
    this.emit("signed-out");
    this.changed();
  }

  async mint() {
    if (!this.me) throw new ApiError(401, "unauthorized", "no session");
    const got = await staffapi.mintToken(this.me.csrf);
    this.token = got.token;
    this.tokenExpires = got.expires_at;
    // the live socket goes on under the new token (the server closes it, 4401, when the
    // token it holds expires); "renewed" answers
    this.send({ type: "auth", token: got.token });
    clearTimeout(this.refreshTimer);
    const inMs = Math.max(10, got.expires_at - Date.now() / 1000 - REFRESH_BEFORE_S) * 1000;
    this.refreshTimer = setTimeout(() => this.mint().catch((e) => this.failed(e)), inMs);
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(wsUrl("/v1/staff/events"));
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
      clearInterval(this.pinger);
      this.pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('{"type":"ping"}'), PING_MS);
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(String(e.data));
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = async (e) => {
      clearInterval(this.pinger);
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      this.state = "offline";
      this.changed();
      if (e.code === 4401 || e.code === 4403) {
        // token revoked or expired, or the member deactivated: a session that still lives
        // mints a new one; one that is over (401/403) shows "signed out"
        try {
          this.me = await staffapi.me();
          await this.mint();
        } catch (err) {
          this.failed(err);
          return;
        }
      }
      setTimeout(() => this.connect(), Math.min(10000, 500 * 2 ** this.retries++));
    };
  }

  /** @param {Record<string, any>} msg */
  onMessage(msg) {
    switch (msg.type) {
      case "ringing":
        this.retries = 0;
        this.state = "ready";
        this.ringing = new Map(msg.calls.map((/** @type {Ringing} */ r) => [r.call.id, r]));
        break;
      case "ring":
        this.ringing.set(msg.call.id, { call: msg.call, link_name: msg.link_name, media: msg.media, visitor_region: msg.visitor_region });
        break;
      case "call":
        if (this.ringing.delete(msg.call_id)) this.emit("gone", { callId: msg.call_id, status: msg.status });
        break;
      case "presence":
        this.presence = { status: msg.status, wrapup_until: msg.wrapup_until ?? null, reason: msg.reason ?? null };
        break;
      case "callbacks":
        this.loadCallbacks();
        return;
      default:
        return;
    }
    this.changed();
  }

  /** @param {Record<string, any>} msg */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** @param {"available" | "away"} status */
  setPresence(status) {
    this.presence = { ...this.presence, status, reason: "manual" };
    this.send({ type: "presence", status });
    this.changed();
  }

  /** End the wrap-up now. */
  ready() {
    this.presence = { ...this.presence, wrapup_until: null };
    this.send({ type: "ready" });
    this.changed();
  }

  async loadCallbacks() {
    if (!this.token) return;
    try {
      this.callbacks = await staffapi.callbacks(this.token);
    } catch {
      this.callbacks = []; // not offered by this server, or not now
    }
    this.changed();
  }

  /** @param {string} callId */
  async markDone(callId) {
    await staffapi.callbackDone(callId, this.token);
    this.callbacks = this.callbacks.filter((c) => c.call.id !== callId);
    this.changed();
  }

  /** @param {string} callId */
  async answer(callId) {
    const got = await staffapi.answer(callId, this.token);
    this.ringing.delete(callId);
    this.changed();
    return got;
  }

  /** @param {string} callId */
  async decline(callId) {
    try {
      await staffapi.decline(callId, this.token);
    } finally {
      this.ringing.delete(callId);
      this.changed();
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }
}

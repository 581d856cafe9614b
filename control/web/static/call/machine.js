// The visitor's call as a pure state machine, like the TURN core: `transition(state, event)`
// returns the next state and never touches the DOM, the network or the clock (times come in
// with the events). `<clickacall-call>` feeds it what happens and renders whatever it returns.
//
//   idle ──start──▶ checking ──rung──▶ ringing ──answered──▶ connecting ──connected──▶ in-call
//     ▲               │ refused            │ unanswered / ask-callback        ice-lost │ ▲ connected
//     │               ▼                    ▼                                          ▼ │
//     │            callback ◀──────────────┘                                    reconnecting
//     │               │ callback-sent                                                 │
//     └──reset── ended ◀──────── cancel (checking, ringing) · hangup (connecting, in-call,
//                failed ◀──────── fail (from any state that is not over)   reconnecting)
//
// An event that does not apply to the current state returns the state unchanged (the same
// object), so callers can tell "nothing happened" with `===`.

/** @typedef {"idle" | "checking" | "ringing" | "connecting" | "in-call" | "reconnecting" | "ended" | "callback" | "failed"} StateName */
/** @typedef {"video" | "voice"} CallMedia */
/** @typedef {"running" | "ok" | "partial" | "blocked"} CheckState */

/**
 * @typedef {object} State
 * @property {StateName} name
 * @property {CallMedia} media what the visitor chose
 * @property {string | null} callId
 * @property {string | null} callRef the short reference shown at the end ("K7Q2-M9XD")
 * @property {number | null} ringingAt when the click was accepted (ms)
 * @property {number | null} connectedAt when media first flowed (ms): the call timer's zero
 * @property {number | null} endedAt (ms)
 * @property {string | null} staffName the answering member's name
 * @property {CheckState | null} check the relay connection check while ringing
 * @property {boolean} peerReconnecting the other side said it is reconnecting
 * @property {string | null} reason why the call ended, failed or offers a callback
 * @property {number | null} nextOpen when a closed link opens next (epoch seconds)
 * @property {string | null} error a message for the failed screen
 */

/**
 * @typedef {{type: "start", media: CallMedia, at: number}
 *   | {type: "rung", callId: string, callRef?: string | null, at: number}
 *   | {type: "refused", reason: "closed" | "unavailable" | "inactive", nextOpen?: number | null}
 *   | {type: "checked", verdict: CheckState}
 *   | {type: "answered", staffName?: string | null, at: number}
 *   | {type: "unanswered", reason: "missed" | "rejected" | "abandoned"}
 *   | {type: "ask-callback", reason?: string}
 *   | {type: "cancel", at: number}
 *   | {type: "connected", at: number}
 *   | {type: "ice-lost"}
 *   | {type: "peer", reconnecting: boolean}
 *   | {type: "hangup", by: "me" | "them", at: number}
 *   | {type: "callback-sent", callRef?: string | null, at: number}
 *   | {type: "fail", error: string, at: number}
 *   | {type: "reset"}
 *   | {type: "resume", saved: Saved, at: number}} CallEvent
 */

/**
 * What sessionStorage keeps to resume a call after a reload (cleared when it ends).
 * @typedef {object} Saved
 * @property {string} callId
 * @property {string | null} callRef
 * @property {CallMedia} media
 * @property {number | null} ringingAt
 * @property {number | null} connectedAt
 * @property {string | null} staffName
 */

/** @type {readonly StateName[]} */
export const STATES = [
  "idle", "checking", "ringing", "connecting", "in-call", "reconnecting", "ended", "callback", "failed",
];

/** States in which a call exists on the server and has not ended for us. */
export const LIVE = new Set(["ringing", "connecting", "in-call", "reconnecting"]);

/** States with nothing more to do but read, call again or close. */
export const OVER = new Set(["ended", "failed"]);

/**
 * @param {CallMedia} [media]
 * @returns {State}
 */
export function initial(media = "video") {
  return {
    name: "idle",
    media,
    callId: null,
    callRef: null,
    ringingAt: null,
    connectedAt: null,
    endedAt: null,
    staffName: null,
    check: null,
    peerReconnecting: false,
    reason: null,
    nextOpen: null,
    error: null,
  };
}

/**
 * @param {State} s
 * @param {Partial<State>} changes
 * @returns {State}
 */
function to(s, changes) {
  return { ...s, ...changes };
}

/**
 * The next state. Pure: same inputs, same output.
 * @param {State} s
 * @param {CallEvent} e
 * @returns {State}
 */
export function transition(s, e) {
  if (e.type === "fail") {
    return OVER.has(s.name) ? s : to(s, { name: "failed", error: e.error, endedAt: e.at, peerReconnecting: false });
  }
  switch (s.name) {
    case "idle":
      if (e.type === "start") return to(initial(e.media), { name: "checking" });
      if (e.type === "ask-callback") return to(s, { name: "callback", reason: e.reason || "unavailable" });
      if (e.type === "resume") return resume(s, e.saved);
      return s;
    case "checking":
      if (e.type === "rung") {
        return to(s, { name: "ringing", callId: e.callId, callRef: e.callRef ?? null, ringingAt: e.at, check: "running" });
      }
      if (e.type === "refused") {
        if (e.reason === "inactive") return to(s, { name: "failed", reason: "inactive", error: null });
        return to(s, { name: "callback", reason: e.reason, nextOpen: e.nextOpen ?? null });
      }
      if (e.type === "cancel") return to(s, { name: "idle" });
      return s;
    case "ringing":
      if (e.type === "checked") return to(s, { check: e.verdict });
      if (e.type === "answered") return to(s, { name: "connecting", staffName: e.staffName ?? s.staffName });
      if (e.type === "unanswered") return to(s, { name: "callback", reason: e.reason === "abandoned" ? "cancelled" : "noanswer" });
      if (e.type === "ask-callback") return to(s, { name: "callback", reason: e.reason || "blocked" });
      if (e.type === "cancel") return to(s, { name: "ended", reason: "cancelled", endedAt: e.at });
      if (e.type === "hangup") return to(s, { name: "ended", reason: e.by === "me" ? "cancelled" : "noanswer", endedAt: e.at });
      return s;
    case "connecting":
    case "reconnecting":
      if (e.type === "connected") {
        return to(s, { name: "in-call", connectedAt: s.connectedAt ?? e.at, peerReconnecting: false });
      }
      if (e.type === "answered" && e.staffName) return to(s, { staffName: e.staffName });
      if (e.type === "checked") return to(s, { check: e.verdict });
      if (e.type === "peer") return to(s, { peerReconnecting: e.reconnecting });
      if (e.type === "hangup") return hangup(s, e.by, e.at);
      return s;
    case "in-call":
      if (e.type === "ice-lost") return to(s, { name: "reconnecting" });
      if (e.type === "peer") return to(s, { peerReconnecting: e.reconnecting });
      if (e.type === "answered" && e.staffName) return to(s, { staffName: e.staffName });
      if (e.type === "hangup") return hangup(s, e.by, e.at);
      return s;
    case "callback":
      if (e.type === "callback-sent") {
        return to(s, { name: "ended", reason: "callback", callRef: e.callRef ?? s.callRef, endedAt: e.at });
      }
      if (e.type === "reset") return to(initial(s.media), {});
      return s;
    case "ended":
    case "failed":
      if (e.type === "reset") return initial(s.media);
      return s;
  }
  return s;
}

/**
 * @param {State} s
 * @param {"me" | "them"} by
 * @param {number} at
 * @returns {State}
 */
function hangup(s, by, at) {
  return to(s, { name: "ended", reason: by === "me" ? "hangup" : "remote", endedAt: at, peerReconnecting: false });
}

/**
 * After a reload: back to ringing if nobody had answered, else to reconnecting.
 * @param {State} s
 * @param {Saved} saved
 * @returns {State}
 */
function resume(s, saved) {
  if (!saved || typeof saved.callId !== "string") return s;
  const answered = saved.staffName !== null || saved.connectedAt !== null;
  return to(initial(saved.media), {
    name: answered ? "reconnecting" : "ringing",
    callId: saved.callId,
    callRef: saved.callRef,
    ringingAt: saved.ringingAt,
    connectedAt: saved.connectedAt,
    staffName: saved.staffName,
    check: answered ? null : "running",
  });
}

/**
 * What to keep in sessionStorage for this state (null: keep nothing, the call is not live).
 * @param {State} s
 * @returns {Saved | null}
 */
export function saved(s) {
  if (!LIVE.has(s.name) || !s.callId) return null;
  return {
    callId: s.callId,
    callRef: s.callRef,
    media: s.media,
    ringingAt: s.ringingAt,
    connectedAt: s.connectedAt,
    staffName: s.staffName,
  };
}

/**
 * Seconds the call has lasted (from media flowing to the end, or to `now` while it goes on);
 * null when it never connected.
 * @param {State} s
 * @param {number} now ms
 * @returns {number | null}
 */
export function duration(s, now) {
  if (s.connectedAt === null) return null;
  const end = s.endedAt ?? now;
  return Math.max(0, (end - s.connectedAt) / 1000);
}

/**
 * The call reference for people: "K7Q2M9XD" → "K7Q2-M9XD" (already dashed ones unchanged).
 * @param {string | null} ref
 * @returns {string | null}
 */
export function formatRef(ref) {
  if (!ref) return null;
  const plain = ref.replace(/[^0-9A-Za-z]/g, "").toUpperCase();
  return plain.length === 8 ? `${plain.slice(0, 4)}-${plain.slice(4)}` : ref;
}

// The control plane's HTTP API as the visitor's call page uses it (same origin: the call page
// is served by the control plane, framed or not). Every request is JSON without cookies; the
// visitor's calls carry its session token as a Bearer header. Errors become `ApiError` with
// the server's `{"error": {"code", "message"}}`.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the network failed)
   * @param {string} code
   * @param {string} message
   * @param {any} [body]
   * @param {number | null} [retryAfter] seconds, from a 429's or 503's Retry-After
   */
  constructor(status, code, message, body, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/**
 * @param {string} path
 * @param {{method?: string, token?: string | null, body?: any, headers?: Record<string, string>, credentials?: RequestCredentials, keepalive?: boolean}} [opts]
 * @returns {Promise<any>}
 */
export async function request(path, opts = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  /** @type {RequestInit} */
  const init = {
    method: opts.method || "GET",
    headers,
    credentials: opts.credentials || "omit",
    cache: "no-store",
    keepalive: opts.keepalive || false,
  };
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", e instanceof Error ? e.message : String(e));
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: "http_" + res.status, message: res.statusText };
    const wait = Number.parseInt(res.headers.get("Retry-After") || "", 10);
    throw new ApiError(res.status, err.code, err.message, data, Number.isFinite(wait) ? wait : null);
  }
  return data;
}

/**
 * @typedef {object} LinkStatus
 * @property {string} link
 * @property {string} name
 * @property {string} business
 * @property {("video" | "voice")[]} media
 * @property {"open" | "closed" | "unavailable" | "inactive"} state
 * @property {number | null} next_open
 * @property {string} [timezone]
 * @property {boolean} [relay_only]
 */

/**
 * @param {string} link public id
 * @returns {Promise<LinkStatus>}
 */
export function linkStatus(link) {
  return request(`/v1/links/${encodeURIComponent(link)}/status`);
}

/**
 * The click: a ringing call with its visitor token and ICE servers.
 * @param {string} link
 * @param {{media: string, lang: string}} body
 * @returns {Promise<{call_id: string, token: string, token_id: string, signal: string, iceServers: RTCIceServer[], expires_at: number, call_ref?: string, relay_only?: boolean, ring_timeout?: number, media?: string, staff_name?: string | null}>}
 */
export function click(link, body) {
  return request(`/v1/links/${encodeURIComponent(link)}/calls`, { method: "POST", body });
}

/**
 * @param {string} callId
 * @param {string} token
 * @param {{verdict: string, transports: Record<string, string>, ms: number}} verdict
 */
export function postCheck(callId, token, verdict) {
  return request(`/v1/calls/${callId}/check`, { method: "POST", token, body: verdict });
}

/**
 * Fresh ICE servers for an ICE restart.
 * @param {string} callId
 * @param {string} token
 * @returns {Promise<{iceServers: RTCIceServer[], expires_at: number}>}
 */
export function freshIce(callId, token) {
  return request(`/v1/calls/${callId}/ice`, { method: "POST", token });
}

/**
 * @param {string} callId
 * @param {string} token
 * @param {{keepalive?: boolean}} [opts]
 */
export function hangup(callId, token, opts = {}) {
  return request(`/v1/calls/${callId}/hangup`, { method: "POST", token, keepalive: opts.keepalive });
}

/**
 * A callback on a call that ended unanswered.
 * @param {string} callId
 * @param {string} token
 * @param {{name: string, contact: string}} body
 * @returns {Promise<{call_ref: string}>}
 */
export function callCallback(callId, token, body) {
  return request(`/v1/calls/${callId}/callback`, { method: "POST", token, body });
}

/**
 * A callback when no call could start (closed, nobody available).
 * @param {string} link
 * @param {{name: string, contact: string, lang?: string}} body
 * @returns {Promise<{call_ref: string}>}
 */
export function linkCallback(link, body) {
  return request(`/v1/links/${encodeURIComponent(link)}/callbacks`, { method: "POST", body });
}

/**
 * A WebSocket URL on our own origin for a path the API gave.
 * @param {string} path
 * @returns {string}
 */
export function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

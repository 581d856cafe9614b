// The API as the staff console uses it. The cookie session (same origin, HttpOnly) reaches
// only `/v1/me` and `/v1/me/token` (the latter with the session's CSRF token); everything else
// uses the console token minted there, as a Bearer header, exactly like API users' console
// tokens.

import { request } from "../call/api.js";

/**
 * @typedef {object} Me
 * @property {{id: string, name: string, email: string | null, presence: "available" | "away", wrapup_until: number | null}} staff
 * @property {{id: string, name: string}} tenant
 * @property {string} csrf
 */

/** @returns {Promise<Me>} */
export function me() {
  return request("/v1/me", { credentials: "same-origin" });
}

/**
 * @param {string} csrf
 * @returns {Promise<{token: string, token_id: string, expires_at: number}>}
 */
export function mintToken(csrf) {
  return request("/v1/me/token", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
}

/**
 * @param {string} callId
 * @param {string} token the console token
 * @returns {Promise<{call: any, token: string, token_id: string, signal: string, iceServers: RTCIceServer[], expires_at: number}>}
 */
export function answer(callId, token) {
  return request(`/v1/calls/${callId}/answer`, { method: "POST", token });
}

/**
 * @param {string} callId
 * @param {string} token
 */
export function decline(callId, token) {
  return request(`/v1/calls/${callId}/reject`, { method: "POST", token });
}

/**
 * @param {string} callId
 * @param {string} token the call token the answer returned
 */
export function hangup(callId, token) {
  return request(`/v1/calls/${callId}/hangup`, { method: "POST", token });
}

/**
 * @param {string} callId
 * @param {string} token the call token
 * @returns {Promise<{iceServers: RTCIceServer[], expires_at: number}>}
 */
export function freshIce(callId, token) {
  return request(`/v1/calls/${callId}/ice`, { method: "POST", token });
}

/**
 * @param {string} token
 * @returns {Promise<{call: any, link_name: string, name_contact: string, requested_at: number}[]>}
 */
export function callbacks(token) {
  return request("/v1/callbacks", { token });
}

/**
 * @param {string} callId
 * @param {string} token
 */
export function callbackDone(callId, token) {
  return request(`/v1/callbacks/${callId}/done`, { method: "POST", token });
}

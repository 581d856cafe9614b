// The dashboard's JSON requests: same origin, the session cookie, and on anything that changes
// state the session's CSRF token (read from the page's sign-out form, where the server put it).
// Errors come back as ApiFail: the HTTP status, the API's code and message, and the form field
// the error is about: the body's `field` when it has one, else the one the message names
// ("email: must be an email address ..." -> "email"; "body.hours.timezone: ..." ->
// "hours.timezone"). The body's `reason` and `params` pick a text from the catalogue
// (`err.<reason>`, see `localize`), so the message beside the field is in the page's language.

/** @typedef {Record<string, string | number>} Params */
/** @typedef {{field?: unknown, reason?: unknown, params?: unknown}} Detail */

export class ApiFail extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Detail} [detail] the error body's machine-readable part
   */
  constructor(status, code, message, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    const m = /^(?:body\.)?([a-z_][a-z_0-9]*(?:\.[a-z_0-9]+)*)\s*:/.exec(message);
    /** @type {string | null} the field the error is about, if any ("hours.timezone") */
    this.field = typeof detail.field === "string" && detail.field ? detail.field : m ? m[1] : null;
    /** the message without its field prefix (nor pydantic's "Value error, "), for beside the field */
    this.text = m ? message.slice(m[0].length).trim().replace(/^Value error, /, "") : message;
    /** @type {string | null} a stable key for the catalogue: `err.<reason>` */
    this.reason = typeof detail.reason === "string" && detail.reason ? detail.reason : null;
    /** @type {Params} what the catalogue's text needs */
    this.params = {};
    if (detail.params && typeof detail.params === "object") {
      for (const [k, v] of Object.entries(detail.params)) {
        if (typeof v === "string" || typeof v === "number") this.params[k] = v;
        else if (typeof v === "boolean" || v === null) this.params[k] = String(v);
      }
    }
  }
}

/**
 * The text of a failure for beside its field, in the page's language: the catalogue's
 * `err.<reason>` with the failure's params when there is one, else the server's text.
 * @param {ApiFail} fail
 * @param {(key: string, vars?: Params) => string} t
 * @returns {string}
 */
export function localize(fail, t) {
  if (fail.reason) {
    const key = `err.${fail.reason}`;
    const text = t(key, fail.params);
    if (text !== key) return text;
  }
  return fail.text;
}

/** @returns {string} */
export function csrf() {
  const input = /** @type {HTMLInputElement | null} */ (document.querySelector("form.signout input[name=csrf]"));
  return input ? input.value : "";
}

/**
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function request(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiFail(0, "network", String(e));
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "error", message: response.statusText };
    const fail = new ApiFail(response.status, String(error.code), String(error.message), error);
    if (response.status === 401) document.dispatchEvent(new CustomEvent("clickacall-signed-out"));
    throw fail;
  }
  return data;
}

export const get = (/** @type {string} */ path) => request("GET", path);
/**
 * @param {string} path
 * @param {unknown} [body]
 */
export const post = (path, body) => request("POST", path, body);
export const del = (/** @type {string} */ path) => request("DELETE", path);

// The dashboard's JSON requests: same origin, the session cookie, and on anything that changes
// state the session's CSRF token (read from the page's sign-out form, where the server put it).
// Errors come back as ApiFail: the HTTP status, the API's code and message, and the form field
// the message names ("email: must be an email address ..." -> "email"; "body.hours.timezone:
// ..." -> "hours.timezone").

export class ApiFail extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
    const m = /^(?:body\.)?([a-z_][a-z_0-9]*(?:\.[a-z_0-9]+)*)\s*:/.exec(message);
    /** @type {string | null} the field the message is about, if it names one ("hours.timezone") */
    this.field = m ? m[1] : null;
    /** the message without its field prefix (nor pydantic's "Value error, "), for beside the field */
    this.text = m ? message.slice(m[0].length).trim().replace(/^Value error, /, "") : message;
  }
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
    const fail = new ApiFail(response.status, String(error.code), String(error.message));
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

// The Webhooks section's "Last answer" of a delivery, with no DOM: the catalogue's sentence for
// why its last attempt failed (`dash.hooks.error.<code>`, the codes of control.models.HOOK_ERRORS)
// in the page's language with its params (an HTTP status, the seconds waited), and apart from it
// the technical detail (an exception's text, in English; for a refused address, the catalogue's
// `err.<reason>` when it knows the reason). A delivery stored before the codes existed, or with a
// code this page does not know, shows the server's English text; a success, its HTTP status.
// Unit-tested with `node --test` (hookanswer.test.js).

/**
 * @typedef {{last_status: number | null, last_error: string | null, last_error_code?: string | null,
 *   last_error_params?: Record<string, string | number> | null}} Answered
 * @typedef {(key: string, vars?: Record<string, string | number>) => string} Translate
 */

/**
 * @param {Answered} d
 * @param {Translate} t
 * @param {string} lang the page's language (for numbers)
 * @returns {{text: string, detail: string | null}}
 */
export function lastAnswer(d, t, lang) {
  const code = d.last_error_code;
  if (code) {
    const params = d.last_error_params || {};
    const vars = { ...params };
    if (typeof params.seconds === "number") vars.seconds = new Intl.NumberFormat(lang).format(params.seconds);
    const key = `dash.hooks.error.${code}`;
    const text = t(key, vars);
    if (text !== key) {
      const detail = code === "refused" ? refusal(params, t) : params.detail;
      return { text, detail: detail ? String(detail) : null };
    }
  }
  if (d.last_error) return { text: d.last_error, detail: null };
  return { text: d.last_status ? `HTTP ${d.last_status}` : "", detail: null };
}

/**
 * Why an address was refused: the catalogue's text for the check's reason (as beside the URL
 * field when registering), else the server's.
 * @param {Record<string, string | number>} params
 * @param {Translate} t
 */
function refusal(params, t) {
  if (typeof params.reason === "string") {
    const key = `err.${params.reason}`;
    const text = t(key, params);
    if (text !== key) return text;
  }
  return params.detail;
}

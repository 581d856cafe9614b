// Small DOM helpers shared by the call UI and the console: `h()` builds elements (attributes
// through setAttribute, never a `style` attribute: the CSP forbids inline style), `icon()`
// builds the few SVG icons (always aria-hidden: the button's text is its name), `announce()`
// writes to an aria-live region so screen readers hear state changes.

const SVG = "http://www.w3.org/2000/svg";

/** Icon paths on a 24×24 grid (stroke icons, drawn with currentColor). */
const ICONS = {
  video: "M3 7h12v10H3z M15 10l6-3v10l-6-3",
  "video-off": "M3 7h12v10H3z M15 10l6-3v10l-6-3 M2 3l20 18",
  mic: "M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3z M5 11a7 7 0 0 0 14 0 M12 18v3",
  "mic-off": "M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3z M5 11a7 7 0 0 0 14 0 M12 18v3 M3 3l18 18",
  screen: "M3 4h18v12H3z M8 20h8 M12 16v4",
  phone: "M6 3h3l2 5-2.5 1.5a11 11 0 0 0 6 6L16 13l5 2v3a2 2 0 0 1-2 2A16 16 0 0 1 4 5a2 2 0 0 1 2-2",
  hangup: "M3 14c5-5 13-5 18 0l-2 3-4-1.5v-2.5a10 10 0 0 0-6 0v2.5L5 17z",
  close: "M5 5l14 14 M19 5L5 19",
  check: "M4 12l5 5L20 6",
  alert: "M12 3l10 18H2z M12 10v5 M12 18v.5",
};

/** @typedef {keyof typeof ICONS} IconName */

/**
 * @param {IconName} name
 * @param {string} [cls]
 * @returns {SVGSVGElement}
 */
export function icon(name, cls = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", cls);
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string | boolean | number | null | undefined>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "style") throw new Error("no inline style: use a class");
    if (name === "text") el.textContent = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

/**
 * Say something to screen-reader users through a live region (cleared first so the same
 * words twice are still read).
 * @param {HTMLElement} region
 * @param {string} text
 */
export function announce(region, text) {
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/**
 * Show exactly one of several elements.
 * @param {Iterable<HTMLElement>} all
 * @param {HTMLElement | null} shown
 */
export function showOnly(all, shown) {
  for (const el of all) el.hidden = el !== shown;
}

/**
 * A toggle button's pressed state (aria-pressed), and its icon.
 * @param {HTMLButtonElement} button
 * @param {boolean} pressed
 */
export function setPressed(button, pressed) {
  button.setAttribute("aria-pressed", pressed ? "true" : "false");
}

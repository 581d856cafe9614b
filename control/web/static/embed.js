// <clickacall-button>: the embed loader, what a business pastes into its site:
//
//   <script async src="https://PLATFORM/embed.js"></script>
//   <clickacall-button link="PUBLIC_ID"></clickacall-button>
//
// A classic async script (no module, no build) that defines one element. It sets no cookie,
// uses no storage and talks to no origin but the platform's (the origin of its own src): one
// small status request (credentials omitted), then, on click, the call page in an iframe.
// The call UI itself loads only then, inside that frame.
//
// Attributes in:
//   link      the link's public id (required)
//   label     the button's text (default "Video call" or "Voice call", as the link allows)
//   color     the button's colour (sets --clickacall-color)
//   position  "inline" (default) | "bottom-right" | "bottom-left" (a floating corner button)
//   lang      "en" | "de" (default: the page's language, then the browser's)
//   mode      "overlay" (default) | "tab" (always open the call in a new tab)
// CSS custom properties: --clickacall-color, --clickacall-text, --clickacall-radius.
// Shadow parts: button, status.
// Attribute out: data-state = loading | open | closed | unavailable | inactive | unknown.
// DOM events out: clickacall-status (detail: the status), clickacall-open (detail:
// {mode: "overlay" | "tab"}), clickacall-close.
//
// The overlay is a dialog with the platform's call page (`/c/ID?embed=1`) in an iframe that
// may use the camera, microphone, screen capture, autoplay and full screen; it fills the
// screen on phones. Escape or the close button close it (hanging up first), and focus returns
// to the button. Where the site's policy blocks the frame (a securitypolicyviolation naming
// our origin), the call opens in a new tab instead.
//
// What a site's Content-Security-Policy must allow (nothing else, no 'unsafe-inline': the
// styles are constructed stylesheets, which CSP does not restrict):
//   script-src https://PLATFORM; connect-src https://PLATFORM; frame-src https://PLATFORM
// (without frame-src the button still works, in a new tab).
(() => {
  "use strict";
  const NAME = "clickacall-button";
  if (window.customElements === undefined || customElements.get(NAME)) return;

  const script = /** @type {HTMLScriptElement | null} */ (document.currentScript);
  const ORIGIN = new URL(script && script.src ? script.src : location.href).origin;
  /** @type {Record<string, Record<string, string>>} */
  /** @type {any} the server puts the catalogue's button.* strings here (control/web/assets.py) */
  const INJECTED = /*MESSAGES*/null;
  /** @type {Record<string, Record<string, string>>} */
  const MESSAGES = INJECTED || { en: {} };
  const ALLOW = "camera; microphone; display-capture; autoplay; fullscreen";
  const REFRESH_MS = 60000;
  const ID = /^[A-Za-z0-9_-]{1,64}$/;

  const CSS = `
:host{display:inline-block;font:inherit;--cc-c:var(--clickacall-color,#1352c7);--cc-t:var(--clickacall-text,#fff);--cc-r:var(--clickacall-radius,999px)}
:host([position=bottom-right]),:host([position=bottom-left]){position:fixed;bottom:16px;z-index:2147483000}
:host([position=bottom-right]){right:16px}:host([position=bottom-left]){left:16px}
.w{display:inline-flex;flex-direction:column;align-items:flex-start;gap:4px;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
:host([position=bottom-right]) .w{align-items:flex-end}
.cc-open{all:unset;box-sizing:border-box;display:inline-flex;align-items:center;gap:8px;min-height:48px;padding:10px 20px;border-radius:var(--cc-r);background:var(--cc-c);color:var(--cc-t);font:600 16px/1.2 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;cursor:pointer;box-shadow:0 2px 8px rgba(0,0,0,.25)}
.cc-open:focus-visible,.cc-x:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.cc-open[aria-disabled=true]{opacity:.75}
svg{width:20px;height:20px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}
.cc-status{font-size:13px;line-height:1.3;color:#1f2328;background:rgba(255,255,255,.92);padding:2px 8px;border-radius:8px}
.cc-status:empty{display:none}
.cc-status::before{content:"● ";color:#1b6b35}
:host([data-state=closed]) .cc-status::before,:host([data-state=unavailable]) .cc-status::before,:host([data-state=inactive]) .cc-status::before{content:"○ ";color:#545b66}
.cc-bg{position:fixed;inset:0;background:rgba(10,12,16,.6);z-index:2147483001}
.cc-d{position:fixed;z-index:2147483002;inset:0;margin:auto;width:min(440px,calc(100vw - 32px));height:min(760px,calc(100vh - 32px));background:#fff;border-radius:16px;overflow:hidden;box-shadow:0 12px 48px rgba(0,0,0,.4);display:flex;flex-direction:column}
@media (max-width:600px),(max-height:560px){.cc-d{width:100vw;height:100vh;height:100dvh;border-radius:0}}
.cc-d iframe{flex:1;width:100%;border:0;display:block;background:#f6f7f9}
.cc-x{all:unset;position:absolute;top:8px;right:8px;z-index:1;width:40px;height:40px;border-radius:50%;display:flex;align-items:center;justify-content:center;background:rgba(0,0,0,.55);color:#fff;cursor:pointer}
.cc-tab{margin:24px;font:16px system-ui,sans-serif}
[hidden]{display:none!important}`;

  let sheet = null;
  /** @param {ShadowRoot} root */
  function style(root) {
    try {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
      }
      root.adoptedStyleSheets = [sheet];
    } catch {
      const el = document.createElement("style"); // old browsers: needs style-src for us
      el.textContent = CSS;
      root.append(el);
    }
  }

  /** @param {string} tag @param {Record<string, string>} [attrs] @param {string} [text] */
  function el(tag, attrs = {}, text = "") {
    const e = document.createElement(tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }

  /** @param {string} d */
  function svg(d) {
    const ns = "http://www.w3.org/2000/svg";
    const s = document.createElementNS(ns, "svg");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("aria-hidden", "true");
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d);
    s.append(p);
    return s;
  }
  const VIDEO = "M3 7h12v10H3z M15 10l6-3v10l-6-3";
  const PHONE = "M6 3h3l2 5-2.5 1.5a11 11 0 0 0 6 6L16 13l5 2v3a2 2 0 0 1-2 2A16 16 0 0 1 4 5a2 2 0 0 1 2-2";
  const CLOSE = "M5 5l14 14 M19 5L5 19";

  /** @param {Element} host */
  function langOf(host) {
    const tags = [host.closest("[lang]")?.getAttribute("lang"), ...(navigator.languages || [navigator.language])];
    for (const tag of tags) {
      const base = String(tag || "").toLowerCase().split("-")[0];
      if (base in MESSAGES) return base;
    }
    return "en";
  }

  /** "today at 09:00" / "Monday at 09:00" in the visitor's own time zone. */
  function when(lang, epoch) {
    const at = new Date(epoch * 1000);
    const time = at.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
    const word = lang === "de" ? "um" : "at";
    if (at.toDateString() === new Date().toDateString()) return `${lang === "de" ? "heute" : "today"} ${word} ${time}`;
    const opts = epoch * 1000 - Date.now() < 6 * 864e5 ? { weekday: "long" } : { day: "numeric", month: "long" };
    return `${at.toLocaleDateString(lang, /** @type {Intl.DateTimeFormatOptions} */ (opts))} ${word} ${time}`;
  }

  class ClickacallButton extends HTMLElement {
    static get observedAttributes() {
      return ["label", "color", "lang", "link"];
    }

    constructor() {
      super();
      this.root = this.attachShadow({ mode: "open" });
      style(this.root);
      this.status = null;
      this.timer = 0;
      this.dialog = null;
      this.onKey = (/** @type {KeyboardEvent} */ e) => {
        if (e.key === "Escape" && this.dialog) this.close();
      };
      this.onMessage = (/** @type {MessageEvent} */ e) => {
        const frame = this.dialog && this.dialog.querySelector("iframe");
        if (e.origin !== ORIGIN || !frame || e.source !== frame.contentWindow) return;
        if (e.data && e.data.type === "clickacall:close") this.close(true);
      };
      this.onCsp = (/** @type {SecurityPolicyViolationEvent} */ e) => {
        if (this.dialog && String(e.blockedURI).startsWith(ORIGIN) && /^(frame|child|default)-src/.test(e.violatedDirective)) {
          this.close(true, true);
          this.openTab();
        }
      };
      this.onVisible = () => {
        if (!document.hidden && this.status && Date.now() - this.fetched > REFRESH_MS) this.refresh();
      };
      this.fetched = 0;
      /** @type {HTMLButtonElement | null} */
      this.button = null;
      /** @type {HTMLElement | null} */
      this.line = null;
    }

    connectedCallback() {
      if (!this.button) this.build();
      this.render();
      this.refresh();
      clearInterval(this.timer);
      this.timer = window.setInterval(() => document.hidden || this.refresh(), REFRESH_MS);
      document.addEventListener("visibilitychange", this.onVisible);
    }

    disconnectedCallback() {
      clearInterval(this.timer);
      document.removeEventListener("visibilitychange", this.onVisible);
      this.close(true);
    }

    attributeChangedCallback(name) {
      if (name === "color") {
        const c = this.getAttribute("color");
        if (c) this.style.setProperty("--clickacall-color", c);
        else this.style.removeProperty("--clickacall-color");
      }
      if (name === "link" && this.button) this.refresh();
      if (this.button) this.render();
    }

    /** @param {string} key @param {Record<string, string>} [vars] */
    t(key, vars) {
      const lang = langOf(this);
      let s = (MESSAGES[lang] || {})[key] || MESSAGES.en[key] || key;
      const v = vars || {};
      for (const k in v) s = s.replace(`{${k}}`, v[k]);
      return s;
    }

    build() {
      const button = /** @type {HTMLButtonElement} */ (el("button", { type: "button", class: "cc-open", part: "button" }));
      button.addEventListener("click", () => this.open());
      this.button = button;
      this.line = el("span", { class: "cc-status", part: "status", role: "status" });
      const wrap = el("div", { class: "w" });
      wrap.append(button, this.line);
      this.root.append(wrap);
      if (!this.hasAttribute("data-state")) this.setAttribute("data-state", "loading");
    }

    get link() {
      const id = this.getAttribute("link") || "";
      return ID.test(id) ? id : "";
    }

    async refresh() {
      if (!this.link) return;
      this.fetched = Date.now();
      try {
        const res = await fetch(`${ORIGIN}/v1/links/${this.link}/status`, { credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" });
        if (!res.ok) throw new Error(String(res.status));
        this.status = await res.json();
      } catch {
        this.status = null;
      }
      this.render();
      this.dispatchEvent(new CustomEvent("clickacall-status", { detail: this.status, bubbles: true }));
    }

    render() {
      if (!this.button || !this.line) return;
      const st = this.status;
      const video = !st || !st.media || st.media.includes("video");
      const label = this.getAttribute("label") || this.t(video ? "button.video" : "button.voice");
      this.button.replaceChildren(svg(video ? VIDEO : PHONE), document.createTextNode(label));
      const state = st ? st.state : this.getAttribute("data-state") === "loading" && !this.fetched ? "loading" : "unknown";
      this.setAttribute("data-state", state);
      let line = "";
      if (state === "open") line = this.t("button.open");
      else if (state === "closed") line = st.next_open ? this.t("button.closed", { when: when(langOf(this), st.next_open) }) : this.t("button.closed_unknown");
      else if (state === "unavailable") line = this.t("button.unavailable");
      else if (state === "inactive") line = this.t("button.inactive");
      this.line.textContent = line;
    }

    url() {
      const lang = this.getAttribute("lang") || langOf(this);
      return `${ORIGIN}/c/${this.link}?embed=1&lang=${encodeURIComponent(lang)}`;
    }

    open() {
      if (!this.link || this.dialog) return;
      if (this.getAttribute("mode") === "tab") {
        this.openTab();
        return;
      }
      const business = (this.status && this.status.business) || "";
      const bg = el("div", { class: "cc-bg" });
      const d = el("div", { class: "cc-d", role: "dialog", "aria-modal": "true", "aria-label": this.t("button.frame_title", { business }) });
      const x = el("button", { type: "button", class: "cc-x", "aria-label": this.t("button.close") });
      x.append(svg(CLOSE));
      x.addEventListener("click", () => this.close());
      const frame = el("iframe", { src: this.url(), allow: ALLOW, title: this.t("button.frame_title", { business }), referrerpolicy: "no-referrer" });
      frame.setAttribute("allowfullscreen", "");
      d.append(x, frame);
      bg.addEventListener("click", () => this.close());
      this.dialog = d;
      this.backdrop = bg;
      document.addEventListener("securitypolicyviolation", this.onCsp);
      window.addEventListener("message", this.onMessage);
      document.addEventListener("keydown", this.onKey);
      this.root.append(bg, d);
      frame.focus();
      this.dispatchEvent(new CustomEvent("clickacall-open", { detail: { mode: "overlay" }, bubbles: true }));
    }

    openTab() {
      const w = window.open(this.url().replace("embed=1&", ""), "_blank");
      if (w) w.opener = null;
      else {
        // a popup blocker: one more click on a real link opens it
        const d = el("div", { class: "cc-d", role: "dialog", "aria-modal": "true" });
        const a = el("a", { href: this.url().replace("embed=1&", ""), target: "_blank", rel: "noopener", class: "cc-tab" }, this.t("button.frame_title", { business: (this.status && this.status.business) || "" }));
        const x = el("button", { type: "button", class: "cc-x", "aria-label": this.t("button.close") });
        x.append(svg(CLOSE));
        x.addEventListener("click", () => this.close(true));
        d.append(x, a);
        this.dialog = d;
        document.addEventListener("keydown", this.onKey);
        this.root.append(d);
        a.focus();
      }
      this.dispatchEvent(new CustomEvent("clickacall-open", { detail: { mode: "tab" }, bubbles: true }));
    }

    /**
     * Close the overlay. Unless `now`, first ask the call page to hang up (it answers with
     * clickacall:close), and close anyway after a second.
     * @param {boolean} [now]
     * @param {boolean} [quiet]
     */
    close(now = false, quiet = false) {
      const d = this.dialog;
      if (!d) return;
      const frame = d.querySelector("iframe");
      if (!now && frame && frame.contentWindow) {
        frame.contentWindow.postMessage({ type: "clickacall:close-request" }, ORIGIN);
        clearTimeout(this.closing);
        this.closing = window.setTimeout(() => this.close(true), 1000);
        return;
      }
      clearTimeout(this.closing);
      document.removeEventListener("securitypolicyviolation", this.onCsp);
      window.removeEventListener("message", this.onMessage);
      document.removeEventListener("keydown", this.onKey);
      d.remove();
      if (this.backdrop) this.backdrop.remove();
      this.dialog = this.backdrop = null;
      if (!quiet && this.button) this.button.focus();
      this.dispatchEvent(new CustomEvent("clickacall-close", { bubbles: true }));
      this.refresh();
    }
  }

  customElements.define(NAME, ClickacallButton);
})();

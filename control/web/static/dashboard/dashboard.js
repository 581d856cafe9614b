// <clickacall-dashboard>: the business's dashboard, on `/dashboard` and `/dashboard/{section}`
// for a signed-in admin. The server renders the shell: the nav as plain links (they work
// without this script), the section's heading and an empty `.dash-view`. This element draws
// the section into the view and moves between sections without reloading: a nav click pushes
// the URL, marks the link `aria-current="page"`, sets the title, moves focus to the heading
// and announces the section; Back and Forward do the same.
//
// Attributes in:
//   section  home | links | staff | calls | analytics | privacy | keys | settings | webhooks
//   lang     "en" | "de" (else the page's or the browser's language)
//   name     the signed-in member's name (the overview's welcome)
//   call     on /dashboard/calls/{id}: the call whose detail the Calls section shows
//
// DOM events out (bubbling):
//   clickacall-dashboard-section  detail: {section}, once a section is drawn
//
// Each section is an element of its own (links.js, staff.js, keys.js, settings.js, home.js,
// privacy.js); sections not
// built yet say so.

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import "./analytics.js";
import "./calldetail.js";
import "./calls.js";
import "./home.js";
import "./keys.js";
import "./links.js";
import "./privacy.js";
import "./settings.js";
import "./staff.js";
import "./webhooks.js";

const ELEMENTS = {
  home: "clickacall-dash-home",
  links: "clickacall-dash-links",
  calls: "clickacall-dash-calls",
  staff: "clickacall-dash-staff",
  keys: "clickacall-dash-keys",
  settings: "clickacall-dash-settings",
  privacy: "clickacall-dash-privacy",
  analytics: "clickacall-dash-analytics",
  webhooks: "clickacall-dash-webhooks",
};
const KNOWN = ["home", "links", "staff", "calls", "analytics", "privacy", "keys", "settings", "webhooks"];

/** @param {string} path */
function sectionOf(path) {
  const m = /^\/dashboard(?:\/([a-z]+))?\/?$/.exec(path);
  const name = m ? m[1] || "home" : null;
  return name && KNOWN.includes(name) ? name : null;
}

export class ClickacallDashboard extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.section = "home";
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    this.append(this.live);
    this.section = this.getAttribute("section") || "home";
    this.addEventListener("click", (e) => this.follow(e));
    window.addEventListener("popstate", () => {
      const s = sectionOf(location.pathname);
      if (s) this.show(s, true);
    });
    document.addEventListener("clickacall-signed-out", () => {
      announce(this.live, this.t("dash.signed_out"));
      location.reload();
    });
    this.draw(false);
  }

  /** @param {MouseEvent} e */
  follow(e) {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = /** @type {HTMLElement} */ (e.target).closest("a[data-section]");
    if (!a || !(a instanceof HTMLAnchorElement)) return;
    if (this.hasAttribute("call")) return; // a call's detail page: the nav loads the section
    const s = sectionOf(new URL(a.href).pathname);
    if (!s) return;
    e.preventDefault();
    if (s === this.section) return;
    history.pushState({ section: s }, "", a.href);
    this.show(s, true);
  }

  /**
   * @param {string} section
   * @param {boolean} moved the person moved here (focus and announce)
   */
  show(section, moved) {
    this.section = section;
    this.setAttribute("section", section);
    this.draw(moved);
  }

  /** @param {boolean} moved */
  draw(moved) {
    const t = this.t;
    const name = t(`dash.section.${this.section}`);
    for (const link of this.querySelectorAll(".dash-nav a[data-section]")) {
      if (link.getAttribute("data-section") === this.section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${name} · ${t("dash.title")}`;
    const heading = /** @type {HTMLElement} */ (this.querySelector(".dash-heading"));
    heading.textContent = name;
    const view = /** @type {HTMLElement} */ (this.querySelector(".dash-view"));
    const tag = /** @type {Record<string, string>} */ (ELEMENTS)[this.section];
    const call = this.section === "calls" ? this.getAttribute("call") : null;
    if (call) {
      const el = document.createElement("clickacall-dash-call");
      el.setAttribute("lang", this.language);
      el.setAttribute("call", call);
      view.replaceChildren(el);
    } else if (tag) {
      const el = document.createElement(tag);
      el.setAttribute("lang", this.language);
      if (this.section === "home") el.setAttribute("name", this.getAttribute("name") || "");
      view.replaceChildren(el);
    } else {
      view.replaceChildren(h("p", { class: "dash-card dash-coming", text: t("dash.coming") }));
    }
    if (moved) {
      heading.focus();
      announce(this.live, t("dash.shown", { section: name }));
    }
    this.dispatchEvent(new CustomEvent("clickacall-dashboard-section", { bubbles: true, detail: { section: this.section } }));
  }
}

customElements.define("clickacall-dashboard", ClickacallDashboard);

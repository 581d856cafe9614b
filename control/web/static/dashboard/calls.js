// <clickacall-dash-calls>: the Calls section. The business's calls, newest first, with the
// API's filters (dates, link, who answered, outcome, MOS below), paged by the API's cursor,
// each call a link to its detail page (/dashboard/calls/{id}), and "Download CSV": the API's
// CSV of exactly the filters of the list on screen.
//
// The filters live in the page's URL (?from=YYYY-MM-DD&to=...&link=&staff=&outcome=&mos_below=),
// so a filtered list can be bookmarked, reloaded and reached again with Back. Dates are whole
// days in the browser's time zone. Bad input (the end before the start, a MOS that is no
// number from 1 to 5) comes back from the server naming its field and is shown beside it.
//
// Attributes in: lang. DOM events out: none.
// Requests: /v1/dashboard/calls, /v1/dashboard/calls/choices, /v1/dashboard/calls.csv (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get } from "./api.js";
import { clearErrors, field, form, showError, table, when } from "./ui.js";

export const PAGE_SIZE = 25;
const OUTCOMES = ["ended", "answered", "missed", "rejected", "abandoned", "failed", "ringing"];
const FIELDS = { since: "calls-from", until: "calls-to", link: "calls-link", staff: "calls-staff", outcome: "calls-outcome", mos_below: "calls-mos" };

/**
 * @typedef {{loss_pct: number | null, jitter_ms: number | null, mos: number | null}} Leg
 * @typedef {{id: string, created_at: number, answered_at: number | null, ended_at: number | null,
 *   duration: number | null, outcome: string, link_id: string, link_name: string | null,
 *   staff_id: string | null, staff_name: string | null, media: string[], relay_region: string | null,
 *   bytes: number, from_visitor: Leg, to_visitor: Leg, mos: number | null}} Entry
 * @typedef {{id: string, name: string, active: boolean}} Choice
 */

/**
 * Epoch seconds of local midnight at the start of `date` (YYYY-MM-DD), `days` later.
 * @param {string} date
 * @param {number} days
 */
function midnight(date, days) {
  const [y, m, d] = date.split("-").map(Number);
  return String(new Date(y, m - 1, d + days).getTime() / 1000);
}

/**
 * The API's query for the page's filters (as in the URL).
 * @param {URLSearchParams} filters
 */
export function apiQuery(filters) {
  const q = new URLSearchParams();
  const from = filters.get("from") || "";
  const to = filters.get("to") || "";
  if (/^\d{4}-\d{2}-\d{2}$/.test(from)) q.set("since", midnight(from, 0));
  if (/^\d{4}-\d{2}-\d{2}$/.test(to)) q.set("until", midnight(to, 1));
  for (const name of ["link", "staff", "outcome", "mos_below"]) {
    const v = (filters.get(name) || "").trim();
    if (v) q.set(name, v);
  }
  return q;
}

/**
 * A duration for people: "4:05", "1:02:03".
 * @param {number | null} seconds
 */
export function length(seconds) {
  if (seconds === null) return "—";
  const s = Math.round(seconds);
  const two = (/** @type {number} */ n) => String(n).padStart(2, "0");
  const hours = Math.floor(s / 3600);
  return hours ? `${hours}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}` : `${Math.floor(s / 60)}:${two(s % 60)}`;
}

/**
 * MOS with a word, so the figure does not rest on colour: "4.3 good".
 * @param {number | null} mos
 * @param {(key: string) => string} t
 */
export function mosCell(mos, t) {
  if (mos === null) return h("span", { class: "dash-muted", text: t("dash.calls.no_mos") });
  const grade = mos >= 4 ? "good" : mos >= 3.6 ? "fair" : "poor";
  return h("span", { class: `dash-mos dash-mos-${grade}` }, `${mos.toFixed(1)} `, h("span", { class: "dash-mos-word", text: t(`dash.calls.mos.${grade}`) }));
}

export class DashCalls extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.list = h("section", { class: "dash-card", "aria-labelledby": "calls-list-title" });
    /** @type {string[]} cursors of the pages before this one ("" is the first page) */
    this.earlier = [];
    this.cursor = "";
    /** @type {HTMLFormElement | null} */
    this.filters = null;
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    const t = this.t;
    const now = new URLSearchParams(location.search);
    const from = field("calls-from", t("dash.calls.from"), { type: "date", name: "from", value: now.get("from") || "" });
    const to = field("calls-to", t("dash.calls.to"), { type: "date", name: "to", value: now.get("to") || "" });
    const link = this.select("calls-link", "link", t("dash.calls.link"), t("dash.calls.any_link"));
    const staff = this.select("calls-staff", "staff", t("dash.calls.staff"), t("dash.calls.anyone"));
    const outcome = this.select("calls-outcome", "outcome", t("dash.calls.outcome"), t("dash.calls.any_outcome"));
    for (const o of OUTCOMES) outcome.input.append(h("option", { value: o, text: t(`dash.calls.outcome.${o}`) }));
    outcome.input.value = now.get("outcome") || "";
    const mos = field("calls-mos", t("dash.calls.mos_below"), { type: "text", name: "mos_below", inputmode: "decimal", autocomplete: "off", size: 6, value: now.get("mos_below") || "" }, t("dash.calls.mos_hint"));
    const clear = h("button", { type: "button", text: t("dash.calls.clear") });
    const filters = form(
      "calls-filters",
      h("div", { class: "dash-filter-grid" }, from.wrap, to.wrap, link.wrap, staff.wrap, outcome.wrap, mos.wrap),
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.calls.apply") }), clear),
    );
    this.filters = filters;
    filters.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [name, value] of new FormData(filters)) if (String(value).trim()) q.set(name, String(value).trim());
      const url = `${location.pathname}${q.size ? `?${q}` : ""}`;
      if (url !== location.pathname + location.search) history.pushState({ section: "calls" }, "", url);
      this.first();
    });
    clear.addEventListener("click", () => {
      for (const el of filters.querySelectorAll("input, select")) /** @type {HTMLInputElement} */ (el).value = "";
      clearErrors(filters);
      if (location.search) history.pushState({ section: "calls" }, "", location.pathname);
      this.first();
    });
    this.replaceChildren(
      this.live,
      h("section", { class: "dash-card", "aria-labelledby": "calls-filter-title" }, h("h2", { id: "calls-filter-title", text: t("dash.calls.filter_title") }), filters),
      this.list,
    );
    this.choices(link.input, staff.input, now);
    this.first();
  }

  /**
   * A labelled select whose first option is "any"; errors sit beside it as for inputs.
   * @param {string} id
   * @param {string} name
   * @param {string} label
   * @param {string} any
   */
  select(id, name, label, any) {
    const input = h("select", { id, name }, h("option", { value: "", text: any }));
    const error = h("p", { class: "error", id: `${id}-error`, hidden: true });
    return { wrap: h("div", { class: "dash-field" }, h("label", { for: id, text: label }), input, error), input };
  }

  /**
   * Fill the link and staff choices (the list does not wait for them).
   * @param {HTMLSelectElement} link
   * @param {HTMLSelectElement} staff
   * @param {URLSearchParams} now
   */
  async choices(link, staff, now) {
    try {
      const got = /** @type {{links: Choice[], staff: Choice[]}} */ (await get("/v1/dashboard/calls/choices"));
      const off = this.t("dash.calls.inactive");
      for (const [select, items, key] of /** @type {const} */ ([[link, got.links, "link"], [staff, got.staff, "staff"]])) {
        for (const c of items) select.append(h("option", { value: c.id, text: c.active ? c.name : `${c.name} (${off})` }));
        select.value = now.get(key) || "";
      }
    } catch {
      // the list still works; the choices stay "any"
    }
  }

  first() {
    this.earlier = [];
    this.cursor = "";
    this.load(false);
  }

  /** @param {boolean} moved focus the list's heading (paging) */
  async load(moved) {
    const t = this.t;
    const filters = /** @type {HTMLFormElement} */ (this.filters);
    clearErrors(filters);
    const wanted = apiQuery(new URLSearchParams(location.search));
    const q = new URLSearchParams(wanted);
    q.set("limit", String(PAGE_SIZE));
    if (this.cursor) q.set("cursor", this.cursor);
    this.list.setAttribute("aria-busy", "true");
    let page;
    try {
      page = /** @type {{calls: Entry[], next_cursor: string | null}} */ (await get(`/v1/dashboard/calls?${q}`));
    } catch (err) {
      this.list.removeAttribute("aria-busy");
      if (err instanceof ApiFail && err.status === 422) {
        showError(filters, err, FIELDS);
        this.list.replaceChildren(h("h2", { id: "calls-list-title", text: t("dash.calls.list") }), h("p", { text: t("dash.calls.fix_filters") }));
        return;
      }
      this.list.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    this.list.removeAttribute("aria-busy");
    const rows = page.calls.map((c) => [
      h("a", { href: `/dashboard/calls/${c.id}`, class: "dash-call-link", text: when(this.language, c.created_at) }),
      h("span", { class: `dash-outcome dash-outcome-${c.outcome}`, text: t(`dash.calls.outcome.${c.outcome}`) }),
      c.link_name || t("dash.calls.deleted_link"),
      c.staff_name || "—",
      length(c.duration),
      c.media.length ? c.media.map((m) => t(`dash.calls.kind.${m}`)).join(", ") : "—",
      mosCell(c.mos, t),
      c.relay_region || "—",
    ]);
    const csv = h("a", { class: "dash-button", href: `/v1/dashboard/calls.csv${wanted.size ? `?${wanted}` : ""}`, download: "calllogs.csv", text: t("dash.calls.csv") });
    const pager = h("nav", { class: "dash-pager", "aria-label": t("dash.calls.pages") });
    if (this.earlier.length) {
      const newer = h("button", { type: "button", text: t("dash.calls.newer") });
      newer.addEventListener("click", () => {
        this.cursor = /** @type {string} */ (this.earlier.pop());
        this.load(true);
      });
      pager.append(newer);
    }
    pager.append(h("span", { class: "dash-muted", text: t("dash.calls.page", { n: this.earlier.length + 1 }) }));
    if (page.next_cursor) {
      const next = /** @type {string} */ (page.next_cursor);
      const older = h("button", { type: "button", text: t("dash.calls.older") });
      older.addEventListener("click", () => {
        this.earlier.push(this.cursor);
        this.cursor = next;
        this.load(true);
      });
      pager.append(older);
    }
    const cols = ["col_started", "col_outcome", "col_link", "col_staff", "col_duration", "col_media", "col_mos", "col_region"];
    this.list.replaceChildren(
      h("div", { class: "dash-list-head" }, h("h2", { id: "calls-list-title", tabindex: -1, text: t("dash.calls.list") }), csv),
      rows.length ? table(t("dash.calls.list"), cols.map((c) => t(`dash.calls.${c}`)), rows) : h("p", { class: "dash-empty", text: t("dash.calls.empty") }),
    );
    if (rows.length && (this.earlier.length || page.next_cursor)) this.list.append(pager);
    announce(this.live, t("dash.calls.shown", { n: rows.length }));
    if (moved) /** @type {HTMLElement} */ (this.list.querySelector("#calls-list-title")).focus();
  }
}

customElements.define("clickacall-dash-calls", DashCalls);

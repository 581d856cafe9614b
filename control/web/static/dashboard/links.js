// <clickacall-dash-links>: the Links section (the buttons and shareable links visitors click).
// An admin creates a link and edits it: its name, what it offers (video, voice or both), whom
// it rings (ticked staff), when it is open (always, or weekly hours in a time zone), how long
// it rings, and whether media must go through our relay (no address learnt by either side) or
// may go directly. Each link shows the snippet for a website with a Copy button and a live
// preview (the real <clickacall-button> from /embed.js, same origin), its share URL with Copy,
// and its QR code for print, downloadable as SVG and PNG (drawn by our server).
//
// Bad input: the server's message beside the field it names (api.js/ui.js), nothing stored.
//
// Attributes in: lang. DOM events out: none.
// Requests: /v1/dashboard/links, /v1/dashboard/staff, /dashboard/links/{id}/qr.{svg,png}.

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get, post, request } from "./api.js";
import { checkbox, clearErrors, copyBox, field, form, showError } from "./ui.js";

/**
 * @typedef {{timezone: string, windows: Array<[number, number, number]>}} Hours
 * @typedef {{id: string, public_id: string, url: string, name: string, media: string[],
 *   ring_staff: string[], hours: Hours | null, ring_timeout: number, active: boolean,
 *   relay_only: boolean}} Link
 * @typedef {{id: string, name: string, roles: string[], active: boolean}} Member
 */

/** API field -> the id of what shows its error */
const FIELDS = {
  name: "link-name",
  media: "link-media",
  ring_staff: "link-staff",
  "hours.timezone": "link-tz",
  hours: "link-hours",
  ring_timeout: "link-timeout",
  relay_only: "link-relay",
};

/** @param {number} minutes */
function hhmm(minutes) {
  const m = minutes % 1440;
  return `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;
}

/** @param {string} value "HH:MM" */
function minutesOf(value) {
  const m = /^(\d{2}):(\d{2})/.exec(value);
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

/** @param {string} lang */
function weekdays(lang) {
  const fmt = new Intl.DateTimeFormat(lang, { weekday: "long", timeZone: "UTC" });
  // 1 January 2024 was a Monday: weekday 0 in the API
  return [0, 1, 2, 3, 4, 5, 6].map((d) => fmt.format(new Date(Date.UTC(2024, 0, 1 + d))));
}

function timeZones() {
  const intl = /** @type {any} */ (Intl);
  /** @type {string[]} */
  const zones = typeof intl.supportedValuesOf === "function" ? intl.supportedValuesOf("timeZone") : [];
  return zones.includes("UTC") ? zones : ["UTC", ...zones];
}

function loadEmbed() {
  if (customElements.get("clickacall-button") || document.querySelector("script[data-clickacall-embed]")) return;
  document.head.append(h("script", { src: "/embed.js", async: true, "data-clickacall-embed": "" }));
}

/** @param {string} origin @param {string} publicId */
export function snippet(origin, publicId) {
  return `<script async src="${origin}/embed.js"></script><clickacall-button link="${publicId}"></clickacall-button>`;
}

export class DashLinks extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.top = h("section", { class: "dash-card", "aria-labelledby": "links-new-title" });
    this.list = h("div", { class: "dash-links" });
    this.origin = location.origin;
    this.defaultTimeout = 30;
    /** @type {Member[]} */
    this.staff = [];
    /** @type {Link[]} */
    this.links = [];
    /** @type {Promise<void>} the first load (links and staff) */
    this.ready = Promise.resolve();
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    loadEmbed();
    this.replaceChildren(this.live, this.top, this.list);
    this.showNewButton();
    this.ready = this.load();
  }

  showNewButton() {
    const t = this.t;
    const open = h("button", { type: "button", class: "primary", text: t("dash.links.new") });
    open.addEventListener("click", async () => {
      await this.ready; // the editor lists the staff: not before they are here
      this.closeEditors();
      this.top.replaceChildren(h("h2", { id: "links-new-title", text: t("dash.links.new_title") }), this.editor(null));
      /** @type {HTMLInputElement | null} */ (this.top.querySelector("#link-name"))?.focus();
    });
    this.top.replaceChildren(h("h2", { id: "links-new-title", text: t("dash.links.new_title") }), h("p", { text: t("dash.links.intro") }), h("div", { class: "dash-actions" }, open));
  }

  /** Only one form at a time (their fields share ids): close the others. */
  closeEditors() {
    if (this.top.querySelector("form")) this.showNewButton();
    for (const card of this.list.querySelectorAll("article[data-editing]")) {
      const link = this.links.find((k) => k.id === card.getAttribute("data-link"));
      if (link) card.replaceWith(this.card(link));
    }
  }

  async load(focusId = "") {
    const t = this.t;
    let page;
    try {
      [page, this.staff] = await Promise.all([get("/v1/dashboard/links"), get("/v1/dashboard/staff")]);
    } catch (err) {
      this.list.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    this.origin = page.origin;
    this.defaultTimeout = page.default_ring_timeout;
    this.links = page.links;
    this.list.replaceChildren(
      h("h2", { id: "links-list-title", class: "visually-hidden", tabindex: -1, text: t("dash.links.list") }),
      ...(this.links.length ? this.links.map((k) => this.card(k)) : [h("p", { class: "dash-card", text: t("dash.links.empty") })]),
    );
    if (focusId) /** @type {HTMLElement | null} */ (this.list.querySelector(`#link-title-${focusId}`))?.focus();
  }

  /** @param {string} id */
  nameOf(id) {
    const m = this.staff.find((s) => s.id === id);
    return m ? m.name : id;
  }

  /** @param {Hours | null} hours */
  hoursText(hours) {
    const t = this.t;
    if (!hours) return t("dash.links.always_open");
    if (!hours.windows.length) return t("dash.links.never_open", { zone: hours.timezone });
    const days = weekdays(this.language);
    const parts = hours.windows.map(([d, s, e]) => `${days[d]} ${hhmm(s)}–${e === 1440 ? "24:00" : hhmm(e)}`);
    return `${parts.join(", ")} (${hours.timezone})`;
  }

  /** @param {Link} k */
  card(k) {
    const t = this.t;
    const titleId = `link-title-${k.id}`;
    const edit = h("button", { type: "button", text: t("dash.links.edit"), "aria-label": t("dash.links.edit_named", { name: k.name }) });
    const article = h("article", { class: "dash-card dash-link", "data-link": k.id, "aria-labelledby": titleId });
    edit.addEventListener("click", () => {
      this.closeEditors();
      const fresh = /** @type {HTMLElement} */ (this.list.querySelector(`article[data-link="${k.id}"]`));
      fresh.setAttribute("data-editing", "");
      fresh.replaceChildren(h("h2", { id: titleId, tabindex: -1, text: t("dash.links.edit_title", { name: k.name }) }), this.editor(k));
      /** @type {HTMLInputElement | null} */ (fresh.querySelector("#link-name"))?.focus();
    });
    const media = k.media.map((m) => t(`dash.links.media.${m}`)).join(", ");
    const rings = k.ring_staff.length ? k.ring_staff.map((id) => this.nameOf(id)).join(", ") : t("dash.links.rings_nobody");
    /** @type {Array<[string, string]>} */
    const facts = [
      ["dash.links.f_media", media],
      ["dash.links.f_rings", rings],
      ["dash.links.f_hours", this.hoursText(k.hours)],
      ["dash.links.f_timeout", t("dash.links.seconds", { n: k.ring_timeout })],
      ["dash.links.f_path", t(k.relay_only ? "dash.links.relay_only" : "dash.links.direct")],
      ["dash.links.f_state", t(k.active ? "dash.links.active" : "dash.links.inactive")],
    ];
    const share = `${this.origin}${k.url}`;
    const button = document.createElement("clickacall-button");
    button.setAttribute("link", k.public_id);
    button.setAttribute("lang", this.language);
    const qr = `/dashboard/links/${k.id}/qr`;
    article.append(
      h("div", { class: "dash-link-head" }, h("h2", { id: titleId, tabindex: -1, text: k.name }), edit),
      h("dl", { class: "dash-link-facts" }, ...facts.flatMap(([key, value]) => [h("dt", { text: t(key) }), h("dd", { text: value })])),
      h(
        "div",
        { class: "dash-link-body" },
        h(
          "div",
          { class: "dash-link-use" },
          h("h3", { text: t("dash.links.website") }),
          this.copyArea(`link-snippet-${k.id}`, t("dash.links.snippet", { name: k.name }), snippet(this.origin, k.public_id)),
          h("p", { class: "dash-hint", id: `link-preview-${k.id}-label`, text: t("dash.links.preview") }),
          h("div", { class: "dash-preview", role: "group", "aria-labelledby": `link-preview-${k.id}-label` }, button),
          h("h3", { text: t("dash.links.share") }),
          copyBox(`link-share-${k.id}`, t("dash.links.share_label", { name: k.name }), share, t, this.live),
        ),
        h(
          "div",
          { class: "dash-link-qr" },
          h("h3", { text: t("dash.links.qr") }),
          h("img", { class: "dash-qr", src: `${qr}.svg`, alt: t("dash.links.qr_alt", { url: share }), width: 200, height: 200 }),
          h(
            "p",
            { class: "dash-actions" },
            h("a", { href: `${qr}.svg`, download: `clickacall-${k.public_id}.svg`, class: "dash-download", text: t("dash.links.qr_svg") }),
            h("a", { href: `${qr}.png`, download: `clickacall-${k.public_id}.png`, class: "dash-download", text: t("dash.links.qr_png") }),
          ),
        ),
      ),
    );
    return article;
  }

  /**
   * A read-only text area and a Copy button (the snippet is too long for one line).
   * @param {string} id
   * @param {string} label
   * @param {string} value
   */
  copyArea(id, label, value) {
    const t = this.t;
    const area = h("textarea", { id, readonly: true, rows: 3, class: "dash-secret dash-snippet", spellcheck: "false" });
    area.value = value;
    const button = h("button", { type: "button", class: "primary", text: t("dash.copy"), "aria-describedby": id });
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(value);
        announce(this.live, t("dash.copied"));
      } catch {
        area.select();
        announce(this.live, t("dash.copy_failed"));
      }
    });
    return h("div", { class: "dash-copy" }, h("label", { for: id, text: label }), h("div", { class: "dash-copy-row" }, area, button));
  }

  /**
   * The form for a new link (`k` null) or for editing `k`.
   * @param {Link | null} k
   */
  editor(k) {
    const t = this.t;
    const name = field("link-name", t("dash.links.name"), { type: "text", required: true, maxlength: 200, autocomplete: "off" }, t("dash.links.name_hint"));
    if (k) name.input.value = k.name;
    // media
    const video = checkbox("link-video", t("dash.links.media.video"), k ? k.media.includes("video") : true);
    const voice = checkbox("link-voice", t("dash.links.media.voice"), k ? k.media.includes("voice") : true);
    const media = this.group("link-media", t("dash.links.f_media"), t("dash.links.media_hint"), video.wrap, voice.wrap);
    // who it rings
    const ringing = new Set(k ? k.ring_staff : []);
    const people = this.staff.filter((m) => (m.active && m.roles.includes("staff")) || ringing.has(m.id));
    const boxes = people.map((m) => ({ id: m.id, box: checkbox(`link-staff-${m.id}`, m.name, k ? ringing.has(m.id) : people.length === 1) }));
    const staff = this.group(
      "link-staff",
      t("dash.links.f_rings"),
      t("dash.links.rings_hint"),
      ...(boxes.length ? boxes.map((b) => b.box.wrap) : [h("p", { text: t("dash.links.no_staff") })]),
    );
    // opening hours
    const hours = this.hoursEditor(k ? k.hours : null);
    // ring timeout, path, active
    const timeout = field("link-timeout", t("dash.links.timeout"), { type: "number", min: 5, max: 600, step: 1, required: true, inputmode: "numeric" }, t("dash.links.timeout_hint"));
    timeout.input.value = String(k ? k.ring_timeout : this.defaultTimeout);
    const relay = checkbox("link-relay", t("dash.links.relay_label"), k ? k.relay_only : true);
    const path = this.group("link-relay-group", t("dash.links.f_path"), t("dash.links.relay_hint"), relay.wrap);
    const active = checkbox("link-active", t("dash.links.active_label"), k ? k.active : true);
    const cancel = h("button", { type: "button", text: t("dash.cancel") });
    const f = form(
      "link-form",
      name.wrap,
      media,
      staff,
      hours.wrap,
      timeout.wrap,
      path,
      active.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t(k ? "dash.links.save" : "dash.links.create") }), cancel),
    );
    cancel.addEventListener("click", () => {
      this.closeEditors();
      const back = k ? this.list.querySelector(`#link-title-${k.id}`) : this.top.querySelector("button");
      /** @type {HTMLElement | null} */ (back)?.focus();
    });
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(f);
      const chosen = [video.input.checked ? "video" : "", voice.input.checked ? "voice" : ""].filter(Boolean);
      if (!chosen.length) {
        showError(f, new ApiFail(422, "invalid", `media: ${t("dash.links.media_missing")}`), FIELDS);
        return;
      }
      const windows = hours.windows();
      if (windows === null) {
        showError(f, new ApiFail(422, "invalid", `hours: ${t("dash.links.times_missing")}`), FIELDS);
        return;
      }
      /** @type {Record<string, unknown>} */
      const body = {
        name: name.input.value,
        media: chosen,
        ring_staff: boxes.filter((b) => b.box.input.checked).map((b) => b.id),
        ring_timeout: timeout.input.value === "" ? null : Number(timeout.input.value),
        relay_only: relay.input.checked,
        active: active.input.checked,
      };
      if (hours.always()) {
        if (k) body.always_open = true;
      } else {
        body.hours = { timezone: hours.zone(), windows };
      }
      try {
        const saved = k ? await request("PATCH", `/v1/dashboard/links/${k.id}`, body) : await post("/v1/dashboard/links", body);
        announce(this.live, t(k ? "dash.links.saved" : "dash.links.created", { name: saved.name }));
        this.showNewButton();
        await this.load(saved.id);
      } catch (err) {
        showError(f, err, FIELDS);
      }
    });
    return f;
  }

  /**
   * A fieldset whose error line sits inside it, tied with aria-describedby.
   * @param {string} id
   * @param {string} legend
   * @param {string} hint
   * @param {...Node} children
   */
  group(id, legend, hint, ...children) {
    return h(
      "fieldset",
      { class: "dash-roles", id, "aria-describedby": `${id}-hint` },
      h("legend", { text: legend }),
      h("p", { class: "dash-hint", id: `${id}-hint`, text: hint }),
      ...children,
      h("p", { class: "error", id: `${id}-error`, hidden: true }),
    );
  }

  /**
   * Opening hours: always open, or weekly windows (a weekday, from, to) in a time zone.
   * @param {Hours | null} hours
   */
  hoursEditor(hours) {
    const t = this.t;
    const days = weekdays(this.language);
    const always = h("input", { type: "radio", name: "link-open", id: "link-open-always", value: "always", checked: !hours });
    const set = h("input", { type: "radio", name: "link-open", id: "link-open-set", value: "set", checked: !!hours });
    const zones = timeZones();
    const current = hours ? hours.timezone : Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    if (!zones.includes(current)) zones.unshift(current);
    const tz = h("select", { id: "link-tz", name: "link-tz" }, ...zones.map((z) => h("option", { value: z, text: z, selected: z === current })));
    const tzWrap = h("div", { class: "dash-field" }, h("label", { for: "link-tz", text: t("dash.links.timezone") }), tz, h("p", { class: "error", id: "link-tz-error", hidden: true }));
    const rows = h("ol", { class: "dash-windows" });
    let n = 0;
    /** @param {[number, number, number]} w */
    const addRow = (w) => {
      const i = n++;
      const day = h("select", { id: `link-day-${i}`, class: "link-day" }, ...days.map((d, j) => h("option", { value: j, text: d, selected: j === w[0] })));
      const from = h("input", { type: "time", id: `link-from-${i}`, class: "link-from", value: hhmm(w[1]), required: true });
      const to = h("input", { type: "time", id: `link-to-${i}`, class: "link-to", value: hhmm(w[2]), required: true });
      const remove = h("button", { type: "button", class: "quiet", text: t("dash.links.remove"), "aria-label": t("dash.links.remove_row", { n: i + 1 }) });
      const row = h(
        "li",
        { class: "dash-window" },
        h("label", { for: day.id, class: "visually-hidden", text: t("dash.links.day", { n: i + 1 }) }),
        day,
        h("label", { for: from.id, text: t("dash.links.from") }),
        from,
        h("label", { for: to.id, text: t("dash.links.to") }),
        to,
        remove,
      );
      remove.addEventListener("click", () => {
        row.remove();
        add.focus();
      });
      rows.append(row);
      return day;
    };
    const add = h("button", { type: "button", text: t("dash.links.add_hours") });
    add.addEventListener("click", () => {
      const last = rows.lastElementChild;
      const prev = last ? Number(/** @type {HTMLSelectElement} */ (last.querySelector(".link-day")).value) : -1;
      addRow([(prev + 1) % 7, 540, 1020]).focus();
    });
    for (const w of hours ? hours.windows : []) addRow(w);
    if (!hours) for (let d = 0; d < 5; d++) addRow([d, 540, 1020]);
    const detail = h(
      "div",
      { class: "dash-hours", hidden: !hours },
      tzWrap,
      h("p", { class: "dash-hint", id: "link-hours-hint", text: t("dash.links.hours_hint") }),
      rows,
      h("div", { class: "dash-actions" }, add),
    );
    const sync = () => {
      detail.hidden = always.checked;
    };
    always.addEventListener("change", sync);
    set.addEventListener("change", sync);
    const wrap = h(
      "fieldset",
      { class: "dash-roles", id: "link-hours", "aria-describedby": "link-hours-hint" },
      h("legend", { text: t("dash.links.f_hours") }),
      h("div", { class: "dash-check" }, always, h("label", { for: always.id, text: t("dash.links.always_open") })),
      h("div", { class: "dash-check" }, set, h("label", { for: set.id, text: t("dash.links.set_hours") })),
      detail,
      h("p", { class: "error", id: "link-hours-error", hidden: true }),
    );
    return {
      wrap,
      always: () => always.checked,
      zone: () => tz.value,
      /** @returns {Array<[number, number, number]> | null} null when a time is missing */
      windows: () => {
        /** @type {Array<[number, number, number]>} */
        const out = [];
        for (const row of rows.children) {
          const d = Number(/** @type {HTMLSelectElement} */ (row.querySelector(".link-day")).value);
          const s = minutesOf(/** @type {HTMLInputElement} */ (row.querySelector(".link-from")).value);
          const e = minutesOf(/** @type {HTMLInputElement} */ (row.querySelector(".link-to")).value);
          if (s === null || e === null) return null;
          out.push([d, s, e === 0 ? 1440 : e]); // "to 00:00" is midnight, the day's end
        }
        return out;
      },
    };
  }
}

customElements.define("clickacall-dash-links", DashLinks);

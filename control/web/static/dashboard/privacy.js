// <clickacall-dash-privacy>: the Privacy section. Find a visitor's calls by the call reference
// they were shown (K7Q2-M9XD, typed however: the server reads it leniently), the reference the
// business captured (an email, a phone number), a call id or the day's visitor key; see the
// calls; download the export (the API's JSON, as a file); correct the visitor fields (errors
// beside the field); erase, after a <dialog> that names exactly what will go; and read the
// audit log, newest first, paged, with subjects as the server keeps them (a keyed hash).
//
// The identifier searched for stays in the page: it is never put in the URL or the history.
//
// Attributes in: lang. DOM events out: none.
// Requests: /v1/dashboard/subjects (GET, PATCH, DELETE), /v1/dashboard/subjects/export,
// /v1/dashboard/audit (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get, request } from "./api.js";
import { checkbox, clearErrors, confirmDialog, field, form, showError, table, when } from "./ui.js";

export const AUDIT_PAGE = 20;
const KINDS = ["call_ref", "ref", "call_id", "key"];
const VISITOR_FIELDS = ["visitor_ref", "visitor_prefix", "visitor_browser", "visitor_os"];

/**
 * @typedef {{id: string, call_ref: string | null, status: string, created_at: number,
 *   relay_region: string | null, visitor_ref: string | null, visitor_prefix: string | null,
 *   visitor_browser: string | null, visitor_os: string | null, visitor_key: string | null}} SubjectCall
 * @typedef {{subject: string | null, calls: SubjectCall[], truncated: boolean}} Subject
 * @typedef {{seq: number, at: number, actor: string, action: string, subject: string | null,
 *   details: Record<string, any>}} AuditEntry
 */

/**
 * A keyed hash as people can read it in a table: its first 16 hex digits.
 * @param {string | null} hash
 */
export function shortHash(hash) {
  return hash ? `${hash.slice(0, 16)}…` : "—";
}

/**
 * What an audit entry says, in words.
 * @param {AuditEntry} e
 * @param {(key: string, vars?: Record<string, string | number>) => string} t
 * @param {string} lang
 */
export function auditDetails(e, t, lang) {
  const d = e.details || {};
  /** @param {unknown} v */
  const show = (v) => (Array.isArray(v) ? v.join(", ") : v === null || v === undefined ? "—" : String(v));
  if (e.action === "settings") {
    const changes = /** @type {Record<string, {from: unknown, to: unknown}>} */ (d.changes || {});
    return Object.entries(changes)
      .map(([name, c]) => t("dash.privacy.audit.change", { field: t(`dash.privacy.audit.field.${name}`), from: show(c.from), to: show(c.to) }))
      .join("; ");
  }
  if (e.action === "purge") {
    return t("dash.privacy.audit.purged", { n: Number(d.calls || 0), before: when(lang, Number(d.cutoff || 0)) });
  }
  if (e.action === "set_ref") return t("dash.privacy.audit.one_call", { id: String(d.call_id || "").slice(0, 8) });
  // what an admin did to the team, the API keys, their own sign-in (control/api/dashboard.py)
  /** @param {unknown} roles */
  const roles = (roles) => (Array.isArray(roles) ? roles.map((r) => t(`dash.staff.role.${r}`)).join(" + ") : "—");
  const name = show(d.name ?? d.staff_id ?? d.key_id);
  if (e.action === "staff_invite") return d.again ? t("dash.privacy.audit.new_link", { name }) : `${name}: ${roles(d.roles)}`;
  if (e.action === "staff_roles") return t("dash.privacy.audit.change", { field: name, from: roles(d.previous), to: roles(d.roles) });
  if (e.action === "staff_deactivate" || e.action === "key_create" || e.action === "key_revoke") return name;
  if (e.action === "totp_on" || e.action === "totp_off") return "";
  const parts = [t("dash.privacy.audit.calls", { n: Array.isArray(d.calls) ? d.calls.length : 0, by: t(`dash.privacy.kind.${d.by}`) })];
  if (Array.isArray(d.fields) && d.fields.length && e.action === "correct") {
    parts.push(d.fields.map((f) => t(`dash.privacy.field.${f}`)).join(", "));
  }
  if (d.new_subject) parts.push(t("dash.privacy.audit.new_subject", { hash: shortHash(String(d.new_subject)) }));
  return parts.join(" · ");
}

export class DashPrivacy extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.result = h("section", { class: "dash-card", "aria-labelledby": "privacy-result-title", hidden: true });
    this.audit = h("section", { class: "dash-card", "aria-labelledby": "audit-title" });
    /** @type {number[]} `before` of the audit pages before this one (0: the newest) */
    this.earlier = [];
    this.auditBefore = 0;
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    const t = this.t;
    const kind = h("select", { id: "privacy-kind", name: "by" }, ...KINDS.map((k) => h("option", { value: k, text: t(`dash.privacy.kind.${k}`) })));
    const value = field("privacy-value", t("dash.privacy.value"), { type: "text", required: true, maxlength: 256, autocomplete: "off", spellcheck: "false" }, t("dash.privacy.hint.call_ref"));
    kind.addEventListener("change", () => {
      const hint = this.querySelector("#privacy-value-hint");
      if (hint) hint.textContent = t(`dash.privacy.hint.${kind.value}`);
    });
    const search = form(
      "privacy-search",
      h("div", { class: "dash-field" }, h("label", { for: "privacy-kind", text: t("dash.privacy.by") }), kind),
      value.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.privacy.find") })),
    );
    search.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(search);
      const q = new URLSearchParams({ [kind.value]: value.input.value.trim() });
      try {
        await this.find(q);
      } catch (err) {
        this.result.hidden = true;
        showError(search, err, { query: "privacy-value", ref: "privacy-value", call_id: "privacy-value", call_ref: "privacy-value", key: "privacy-value" });
      }
    });
    this.replaceChildren(
      this.live,
      h(
        "section",
        { class: "dash-card", "aria-labelledby": "privacy-find-title" },
        h("h2", { id: "privacy-find-title", text: t("dash.privacy.find_title") }),
        h("p", { class: "dash-hint", text: t("dash.privacy.find_text") }),
        search,
      ),
      this.result,
      this.audit,
    );
    this.loadAudit(false);
  }

  /**
   * Look the visitor up (the server's export: an `access` entry in the audit log) and show it.
   * @param {URLSearchParams} q
   * @param {string} [note] a message to show above the result (what was just done)
   */
  async find(q, note) {
    const found = /** @type {Subject} */ (await get(`/v1/dashboard/subjects?${q}`));
    this.earlier = [];
    this.auditBefore = 0;
    this.show(found, q, note);
    this.loadAudit(false);
  }

  /**
   * @param {Subject} found
   * @param {URLSearchParams} q
   * @param {string} [note]
   */
  show(found, q, note) {
    const t = this.t;
    const [by, value] = /** @type {[string, string]} */ ([...q.entries()][0]);
    const n = found.calls.length;
    const title = h("h2", { id: "privacy-result-title", tabindex: -1, text: t("dash.privacy.found", { n }) });
    // the outcome of what was just done (an empty status line otherwise)
    const done = h("p", { class: "dash-ok", role: "status", hidden: !note, text: note || "" });
    const what = h("p", { class: "dash-summary" }, t("dash.privacy.searched", { by: t(`dash.privacy.kind.${by}`), value }));
    if (!n) {
      this.result.replaceChildren(title, done, what, h("p", { class: "dash-empty", text: t("dash.privacy.none") }));
      this.result.hidden = false;
      announce(this.live, t("dash.privacy.found", { n }));
      title.focus();
      return;
    }
    const rows = found.calls.map((c) => [
      h("a", { href: `/dashboard/calls/${c.id}`, class: "dash-call-link", text: c.call_ref || t("dash.privacy.no_call_ref") }),
      when(this.language, c.created_at),
      t(`dash.calls.outcome.${c.status}`),
      c.visitor_ref || "—",
      c.visitor_prefix || "—",
      [c.visitor_browser, c.visitor_os].filter(Boolean).join(", ") || "—",
      c.relay_region || "—",
    ]);
    const cols = ["col_call", "col_started", "col_status", "col_ref", "col_network", "col_device", "col_region"];
    const download = h("a", { class: "dash-button privacy-export", href: `/v1/dashboard/subjects/export?${q}`, download: "", text: t("dash.privacy.export") });
    const erase = h("button", { type: "button", class: "danger privacy-erase", text: t("dash.privacy.erase") });
    const deleting = checkbox("privacy-delete", t("dash.privacy.delete_calls"), false);
    erase.addEventListener("click", () => this.erase(found, q, deleting.input.checked));
    this.result.replaceChildren(
      h("div", { class: "dash-list-head" }, title, download),
      done,
      what,
      ...(found.subject ? [h("p", { class: "dash-summary" }, `${t("dash.privacy.subject")}: `, h("code", { class: "dash-hash", text: found.subject }))] : []),
      ...(found.truncated ? [h("p", { class: "dash-hint", text: t("dash.privacy.truncated") })] : []),
      table(t("dash.privacy.calls"), cols.map((c) => t(`dash.privacy.${c}`)), rows),
      this.correctForm(found, q),
      h(
        "div",
        { class: "dash-erase" },
        h("h3", { text: t("dash.privacy.erase_title") }),
        h("p", { class: "dash-hint", text: t("dash.privacy.erase_text") }),
        deleting.wrap,
        h("div", { class: "dash-actions" }, erase),
      ),
    );
    this.result.hidden = false;
    announce(this.live, t("dash.privacy.found", { n }));
    title.focus();
  }

  /**
   * Correct the visitor fields of the calls found: each field starts with the value all of
   * them share; only fields changed are sent, an emptied one is removed.
   * @param {Subject} found
   * @param {URLSearchParams} q
   */
  correctForm(found, q) {
    const t = this.t;
    /** @type {Record<string, string>} */
    const shared = {};
    /** @type {Record<string, HTMLInputElement>} */
    const inputs = {};
    /** @type {Record<string, string>} */
    const ids = {};
    const wraps = VISITOR_FIELDS.map((name) => {
      const values = new Set(found.calls.map((c) => String(c[/** @type {keyof SubjectCall} */ (name)] || "")));
      shared[name] = values.size === 1 ? [...values][0] : "";
      const id = `privacy-${name.replace("_", "-")}`;
      ids[name] = id;
      const f = field(id, t(`dash.privacy.field.${name}`), { type: "text", name, value: shared[name], maxlength: 256, autocomplete: "off", spellcheck: "false" }, values.size > 1 ? t("dash.privacy.differs") : undefined);
      inputs[name] = f.input;
      return f.wrap;
    });
    const fix = form("privacy-correct", ...wraps, h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.privacy.correct") })));
    fix.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(fix);
      /** @type {Record<string, string | null>} */
      const body = {};
      for (const name of VISITOR_FIELDS) {
        const v = inputs[name].value.trim();
        if (v !== shared[name]) body[name] = v === "" ? null : v;
      }
      try {
        const out = await request("PATCH", `/v1/dashboard/subjects?${q}`, body);
        // a new reference: look the visitor up by it from now on
        const next = q.has("ref") && body.visitor_ref ? new URLSearchParams({ ref: body.visitor_ref }) : q;
        await this.find(next, t("dash.privacy.corrected", { n: out.calls.length }));
      } catch (err) {
        showError(fix, err, ids);
      }
    });
    return h("div", { class: "dash-correct" }, h("h3", { text: t("dash.privacy.correct_title") }), fix);
  }

  /**
   * Ask, naming what will go, then erase (or delete) and search again.
   * @param {Subject} found
   * @param {URLSearchParams} q
   * @param {boolean} deleting
   */
  async erase(found, q, deleting) {
    const t = this.t;
    const [by, value] = /** @type {[string, string]} */ ([...q.entries()][0]);
    const n = found.calls.length;
    const refs = found.calls.map((c) => c.call_ref || c.id.slice(0, 8)).join(", ");
    const vars = { n, by: t(`dash.privacy.kind.${by}`), value, refs };
    const yes = await confirmDialog(this, {
      title: t(deleting ? "dash.privacy.confirm_delete_title" : "dash.privacy.confirm_erase_title", { n }),
      text: t(deleting ? "dash.privacy.confirm_delete" : "dash.privacy.confirm_erase", vars),
      ok: t(deleting ? "dash.privacy.confirm_delete_ok" : "dash.privacy.confirm_erase_ok", { n }),
      cancel: t("dash.cancel"),
    });
    if (!yes) return;
    const mode = deleting ? "delete" : "fields";
    let out;
    try {
      out = await request("DELETE", `/v1/dashboard/subjects?${q}&mode=${mode}`);
    } catch (err) {
      const fail = err instanceof ApiFail ? err.message : String(err);
      announce(this.live, fail);
      this.result.append(h("p", { class: "error", role: "alert", text: fail }));
      return;
    }
    const note = t(deleting ? "dash.privacy.deleted" : "dash.privacy.erased", { n: out.calls.length });
    try {
      await this.find(q, note);
    } catch {
      // found by call id and deleted: nothing left to find
      this.show({ subject: null, calls: [], truncated: false }, q, note);
      this.earlier = [];
      this.auditBefore = 0;
      this.loadAudit(false);
    }
  }

  /** @param {boolean} moved focus the audit log's heading (paging) */
  async loadAudit(moved) {
    const t = this.t;
    const title = h("h2", { id: "audit-title", tabindex: -1, text: t("dash.privacy.audit_title") });
    const q = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (this.auditBefore) q.set("before", String(this.auditBefore));
    let page;
    try {
      page = /** @type {{entries: AuditEntry[], next_before: number | null, actors: Record<string, string>}} */ (await get(`/v1/dashboard/audit?${q}`));
    } catch (err) {
      this.audit.replaceChildren(title, h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    /** @param {string} actor */
    const who = (actor) => {
      if (actor === "operator" || actor === "retention") return t(`dash.privacy.actor.${actor}`);
      const name = page.actors[actor];
      if (actor.startsWith("staff:")) return name || t("dash.privacy.actor.former");
      return t("dash.privacy.actor.key", { name: name || actor });
    };
    const rows = page.entries.map((e) => [
      when(this.language, e.at),
      who(e.actor),
      h("span", { class: `dash-audit-action dash-audit-${e.action}`, text: t(`dash.privacy.action.${e.action}`) }),
      e.subject ? h("code", { class: "dash-hash", title: e.subject, text: shortHash(e.subject) }) : "—",
      auditDetails(e, t, this.language),
    ]);
    const pager = h("nav", { class: "dash-pager", "aria-label": t("dash.privacy.audit_pages") });
    if (this.earlier.length) {
      const newer = h("button", { type: "button", text: t("dash.privacy.audit_newer") });
      newer.addEventListener("click", () => {
        this.auditBefore = /** @type {number} */ (this.earlier.pop());
        this.loadAudit(true);
      });
      pager.append(newer);
    }
    pager.append(h("span", { class: "dash-muted", text: t("dash.calls.page", { n: this.earlier.length + 1 }) }));
    if (page.next_before) {
      const next = page.next_before;
      const older = h("button", { type: "button", text: t("dash.privacy.audit_older") });
      older.addEventListener("click", () => {
        this.earlier.push(this.auditBefore);
        this.auditBefore = next;
        this.loadAudit(true);
      });
      pager.append(older);
    }
    const cols = ["col_when", "col_who", "col_what", "col_subject", "col_details"];
    this.audit.replaceChildren(
      title,
      h("p", { class: "dash-hint", text: t("dash.privacy.audit_text") }),
      rows.length ? table(t("dash.privacy.audit_title"), cols.map((c) => t(`dash.privacy.audit.${c}`)), rows) : h("p", { class: "dash-empty", text: t("dash.privacy.audit_empty") }),
    );
    if (this.earlier.length || page.next_before) this.audit.append(pager);
    if (moved) title.focus();
  }
}

customElements.define("clickacall-dash-privacy", DashPrivacy);

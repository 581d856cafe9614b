// <clickacall-dash-webhooks>: the Webhooks section. An admin adds an HTTPS endpoint for call
// events (URL, the events it hears, whether payloads carry visitor details), sees its signing
// secret once (with Copy), edits, switches off or deletes an endpoint, makes a new secret (the
// old one keeps signing for a day), and reads the delivery log (newest first, paged) where a
// delivery can be sent again with the same idempotency id. Errors sit beside the field they
// name (the server's, e.g. "url: ... private address"); why a delivery failed is said in the
// page's language (hookanswer.js).
//
// Attributes in: lang. DOM events out: none. Requests: /v1/dashboard/webhooks (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, del, get, post, request } from "./api.js";
import { lastAnswer } from "./hookanswer.js";
import { checkbox, clearErrors, confirmDialog, copyBox, field, form, showError, table, when } from "./ui.js";

const EVENTS = ["ringing", "answered", "missed", "ended", "callback_requested"];

/**
 * @typedef {{id: string, url: string, events: string[], include_visitor: boolean, active: boolean,
 *   created_at: number, previous_secret_until: number | null, secret: string | null}} Hook
 * @typedef {{id: string, endpoint_id: string, event: string, call_id: string | null, state: string,
 *   attempts: number, next_attempt_at: number | null, last_status: number | null,
 *   last_error: string | null, last_error_code: string | null,
 *   last_error_params: Record<string, string | number>, created_at: number, done_at: number | null}} Delivery
 */

export class DashWebhooks extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.result = h("div", { class: "dash-result" });
    this.editorCard = h("section", { class: "dash-card", "aria-labelledby": "hooks-edit-title" });
    this.list = h("section", { class: "dash-card", "aria-labelledby": "hooks-list-title" });
    this.log = h("section", { class: "dash-card", "aria-labelledby": "hooks-log-title" });
    /** @type {Hook[]} */
    this.hooks = [];
    /** @type {Array<string | null>} cursors of the log pages shown so far (null: the newest) */
    this.pages = [null];
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    this.editor(null);
    this.replaceChildren(this.live, this.editorCard, this.list, this.log);
    this.load();
  }

  /**
   * The form: a new endpoint (null) or one being edited.
   * @param {Hook | null} hook
   */
  editor(hook) {
    const t = this.t;
    const url = field(
      "hook-url",
      t("dash.hooks.url"),
      { type: "url", required: true, maxlength: 2000, autocomplete: "off", spellcheck: "false", value: hook ? hook.url : "", placeholder: "https://" },
      t("dash.hooks.url_hint"),
    );
    const boxes = EVENTS.map((e) => checkbox(`hook-ev-${e}`, t(`dash.hooks.ev.${e}`), hook ? hook.events.includes(e) : true));
    const events = h(
      "fieldset",
      { class: "dash-roles", id: "hook-events", "aria-describedby": "hook-events-hint" },
      h("legend", { text: t("dash.hooks.events") }),
      h("p", { class: "dash-hint", id: "hook-events-hint", text: t("dash.hooks.events_hint") }),
      ...boxes.map((b) => b.wrap),
      h("p", { class: "error", id: "hook-events-error", hidden: true }),
    );
    const visitor = checkbox("hook-visitor", t("dash.hooks.include_visitor"), hook ? hook.include_visitor : false);
    const visitorHint = h("p", { class: "dash-hint", id: "hook-visitor-hint", text: t("dash.hooks.include_visitor_hint") });
    visitor.input.setAttribute("aria-describedby", visitorHint.id);
    const active = hook ? checkbox("hook-active", t("dash.hooks.active"), hook.active) : null;
    const buttons = h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t(hook ? "dash.hooks.save" : "dash.hooks.create") }));
    if (hook) {
      const cancel = h("button", { type: "button", text: t("dash.cancel") });
      cancel.addEventListener("click", () => {
        this.editor(null);
        /** @type {HTMLElement | null} */ (this.querySelector("#hooks-edit-title"))?.focus();
      });
      buttons.append(cancel);
    }
    const f = form("hooks-form", url.wrap, events, h("div", {}, visitor.wrap, visitorHint), active ? active.wrap : null, buttons);
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(f);
      this.result.replaceChildren();
      const chosen = EVENTS.filter((_, i) => boxes[i].input.checked);
      if (!chosen.length) {
        showError(f, new ApiFail(422, "invalid", `events: ${t("dash.hooks.no_events")}`), { events: "hook-events" });
        return;
      }
      const body = { url: url.input.value.trim(), events: chosen, include_visitor: visitor.input.checked };
      try {
        if (hook) {
          await request("PATCH", `/v1/dashboard/webhooks/${hook.id}`, { ...body, active: active ? active.input.checked : true });
          announce(this.live, t("dash.hooks.saved"));
          this.editor(null);
        } else {
          const made = /** @type {Hook} */ (await post("/v1/dashboard/webhooks", body));
          f.reset();
          this.showSecret(made, "dash.hooks.created");
        }
        await this.load();
      } catch (err) {
        showError(f, err, { url: "hook-url", events: "hook-events" });
      }
    });
    this.editorCard.replaceChildren(
      h("h2", { id: "hooks-edit-title", tabindex: -1, text: t(hook ? "dash.hooks.edit_title" : "dash.hooks.create_title") }),
      ...(hook ? [] : [h("p", { class: "dash-hint dash-hooks-intro", text: t("dash.hooks.intro") })]),
      f,
      this.result,
    );
    if (hook) url.input.focus();
  }

  /**
   * A secret, shown this once.
   * @param {Hook} hook
   * @param {string} key what to say above it
   */
  showSecret(hook, key) {
    const t = this.t;
    this.result.replaceChildren(
      h("p", { class: "dash-ok", role: "status", text: t(key) }),
      copyBox("hook-secret", t("dash.hooks.secret_label", { url: hook.url }), hook.secret || "", t, this.live),
    );
    /** @type {HTMLInputElement | null} */ (this.result.querySelector("input"))?.focus();
  }

  async load() {
    await Promise.all([this.loadHooks(), this.loadLog()]);
  }

  async loadHooks() {
    const t = this.t;
    try {
      this.hooks = /** @type {Hook[]} */ (await get("/v1/dashboard/webhooks"));
    } catch (err) {
      this.list.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const rows = this.hooks.map((k) => [
      h("code", { class: "dash-hook-url", text: k.url }),
      k.events.map((e) => t(`dash.hooks.ev.${e}`)).join(", "),
      k.include_visitor ? t("dash.hooks.visitor_yes") : t("dash.hooks.visitor_no"),
      k.active
        ? h("span", { class: "dash-status dash-status-available" }, h("span", { class: "dash-dot", "aria-hidden": "true" }), t("dash.hooks.on"))
        : h("span", { class: "dash-status dash-status-inactive", text: t("dash.hooks.off") }),
      this.actions(k),
    ]);
    this.list.replaceChildren(
      h("h2", { id: "hooks-list-title", tabindex: -1, text: t("dash.hooks.list") }),
      this.hooks.length
        ? table(t("dash.hooks.list"), ["col_url", "col_events", "col_visitor", "col_status", "col_actions"].map((c) => t(`dash.hooks.${c}`)), rows)
        : h("p", { text: t("dash.hooks.empty") }),
    );
  }

  /** @param {Hook} k */
  actions(k) {
    const t = this.t;
    const edit = h("button", { type: "button", text: t("dash.hooks.edit"), "aria-label": t("dash.hooks.edit_named", { url: k.url }) });
    edit.addEventListener("click", () => {
      this.result.replaceChildren();
      this.editor(k);
    });
    const rotate = h("button", { type: "button", text: t("dash.hooks.rotate"), "aria-label": t("dash.hooks.rotate_named", { url: k.url }) });
    rotate.addEventListener("click", async () => {
      const ok = await confirmDialog(this, { title: t("dash.hooks.rotate_title"), text: t("dash.hooks.rotate_text"), ok: t("dash.hooks.rotate"), cancel: t("dash.cancel") });
      if (!ok) return;
      try {
        const made = /** @type {Hook} */ (await post(`/v1/dashboard/webhooks/${k.id}/rotate`));
        this.editor(null);
        this.showSecret(made, "dash.hooks.rotated");
      } catch (err) {
        announce(this.live, String(err instanceof Error ? err.message : err));
      }
    });
    const remove = h("button", { type: "button", class: "danger", text: t("dash.hooks.delete"), "aria-label": t("dash.hooks.delete_named", { url: k.url }) });
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog(this, { title: t("dash.hooks.delete_title", { url: k.url }), text: t("dash.hooks.delete_text"), ok: t("dash.hooks.delete"), cancel: t("dash.cancel") });
      if (!ok) return;
      try {
        await del(`/v1/dashboard/webhooks/${k.id}`);
        announce(this.live, t("dash.hooks.deleted"));
        this.editor(null);
        await this.load();
        /** @type {HTMLElement | null} */ (this.querySelector("#hooks-list-title"))?.focus();
      } catch (err) {
        announce(this.live, String(err instanceof Error ? err.message : err));
      }
    });
    return h("div", { class: "dash-actions" }, edit, rotate, remove);
  }

  /** @param {string} [focus] the id of what to focus once drawn (the new list's heading or button) */
  async loadLog(focus) {
    const t = this.t;
    const cursor = this.pages[this.pages.length - 1];
    let page;
    try {
      const q = new URLSearchParams({ limit: "20" });
      if (cursor) q.set("cursor", cursor);
      page = /** @type {{deliveries: Delivery[], next_cursor: string | null}} */ (await get(`/v1/dashboard/webhooks/deliveries?${q}`));
    } catch (err) {
      this.log.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const urls = new Map(this.hooks.map((k) => [k.id, k.url]));
    const rows = page.deliveries.map((d) => [
      when(this.language, d.created_at),
      t(`dash.hooks.ev.${d.event}`),
      h("code", { class: "dash-hook-url", text: urls.get(d.endpoint_id) || d.endpoint_id }),
      h("span", { class: `dash-status dash-delivery-${d.state}`, text: t(`dash.hooks.state.${d.state}`, { n: String(d.attempts) }) }),
      this.answer(d),
      h("code", { class: "dash-hook-id", text: d.id }),
      this.again(d),
    ]);
    const refresh = h("button", { type: "button", id: "hooks-refresh", text: t("dash.hooks.refresh") });
    refresh.addEventListener("click", () => this.loadLog("hooks-refresh"));
    const paging = h("div", { class: "dash-actions" });
    if (this.pages.length > 1) {
      const newer = h("button", { type: "button", text: t("dash.hooks.newer") });
      newer.addEventListener("click", () => {
        this.pages.pop();
        this.loadLog("hooks-log-title");
      });
      paging.append(newer);
    }
    if (page.next_cursor) {
      const next = page.next_cursor;
      const older = h("button", { type: "button", text: t("dash.hooks.older") });
      older.addEventListener("click", () => {
        this.pages.push(next);
        this.loadLog("hooks-log-title");
      });
      paging.append(older);
    }
    this.log.replaceChildren(
      h("div", { class: "dash-list-head" }, h("h2", { id: "hooks-log-title", tabindex: -1, text: t("dash.hooks.log") }), refresh),
      h("p", { class: "dash-hint", text: t("dash.hooks.log_hint") }),
      rows.length
        ? table(t("dash.hooks.log"), ["col_when", "col_event", "col_url", "col_state", "col_answer", "col_id", "col_actions"].map((c) => t(`dash.hooks.${c}`)), rows)
        : h("p", { text: t("dash.hooks.log_empty") }),
      paging,
    );
    if (focus) /** @type {HTMLElement | null} */ (this.querySelector(`#${focus}`))?.focus();
  }

  /**
   * Why the last attempt failed, in the page's language, the technical detail below it.
   * @param {Delivery} d
   */
  answer(d) {
    const { text, detail } = lastAnswer(d, this.t, this.language);
    return detail ? h("span", {}, text, h("span", { class: "dash-hook-detail", text: detail })) : text;
  }

  /** @param {Delivery} d */
  again(d) {
    const t = this.t;
    const button = h("button", { type: "button", text: t("dash.hooks.again"), "aria-label": t("dash.hooks.again_named", { id: d.id }) });
    button.addEventListener("click", async () => {
      try {
        await post(`/v1/dashboard/webhooks/deliveries/${d.id}/retry`);
        announce(this.live, t("dash.hooks.again_done"));
        await this.loadLog("hooks-log-title");
      } catch (err) {
        announce(this.live, String(err instanceof Error ? err.message : err));
      }
    });
    return button;
  }
}

customElements.define("clickacall-dash-webhooks", DashWebhooks);
